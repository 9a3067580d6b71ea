"""moto's S3 server on a free loopback port (a real HTTP S3 API, no network, no AWS)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@functools.cache
def _session() -> Any:
    from aiobotocore.session import get_session

    return get_session()  # one per test session: loading the S3 description is slow


def s3_options(endpoint: str) -> dict[str, Any]:
    """What an `S3Repository` needs to talk to the test server."""
    return {"endpoint_url": endpoint, "region_name": "us-east-1", **CREDENTIALS}


def client_options(endpoint: str) -> dict[str, Any]:
    """`s3_options` plus the shared session."""
    return {**s3_options(endpoint), "session": _session()}


async def new_bucket(endpoint: str) -> str:
    """Create a bucket of its own for one test; returns its name."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    async with _session().create_client("s3", **s3_options(endpoint)) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's server (threaded, in this process) on 127.0.0.1:<free port>."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
