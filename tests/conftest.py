"""Shared fixtures: stores for every backend, servers from the environment."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from taskloom.errors import ConfigError
from taskloom.store import Store, open_store

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally; in CI a missing backend is a failure, never a silent pass."""
    if IN_CI:
        pytest.fail(f"backend required in CI: {reason}")
    pytest.skip(reason)


def redis_url() -> str | None:
    return os.environ.get("TASKLOOM_TEST_REDIS_URL")


def postgres_url() -> str | None:
    return os.environ.get("TASKLOOM_TEST_POSTGRES_URL")


def redis_cluster_url() -> str | None:
    """TASKLOOM_TEST_REDIS_CLUSTER_URL, else a session cluster started from the redis-server
    binary on PATH (None when there is none)."""
    url = os.environ.get("TASKLOOM_TEST_REDIS_CLUSTER_URL")
    if url:
        return url
    from tests.redis_cluster import shared_cluster_url

    try:
        return shared_cluster_url()
    except FileNotFoundError:
        return None


def _with_param(url: str, key: str, value: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{key}={value}"


def store_url(kind: str, tmp_path: os.PathLike[str]) -> str:
    """A fresh, isolated store URL of the given kind (own file, key prefix or schema)."""
    tag = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{os.fspath(tmp_path)}/{tag}.db"
    if kind == "redis":
        url = redis_url()
        if not url:
            unavailable("TASKLOOM_TEST_REDIS_URL not set")
            raise AssertionError
        return _with_param(url, "prefix", f"{tag}:")
    if kind == "redis-cluster":
        url = redis_cluster_url()
        if not url:
            unavailable("no TASKLOOM_TEST_REDIS_CLUSTER_URL and no redis-server binary on PATH")
            raise AssertionError
        return _with_param(url, "prefix", f"{tag}:")
    if kind == "redis-shards":  # one app's queues over 4 slots of the cluster
        url = redis_cluster_url()
        if not url:
            unavailable("no TASKLOOM_TEST_REDIS_CLUSTER_URL and no redis-server binary on PATH")
            raise AssertionError
        return _with_param(_with_param(url, "prefix", f"{tag}:"), "shards", "4")
    if kind == "postgres":
        url = postgres_url()
        if not url:
            unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
            raise AssertionError
        return _with_param(url, "schema", tag)
    raise ValueError(kind)


STORE_KINDS = ["memory", "sqlite", "redis", "redis-cluster", "redis-shards", "postgres"]


# the stores that keep records as bytes (the memory store keeps live objects)
PERSISTENT_KINDS = ["sqlite", "redis", "redis-cluster", "redis-shards", "postgres"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> AsyncIterator[Store]:
    """A connected, empty store of each kind; dropped afterwards."""
    async for s in _connected(request.param, tmp_path):
        yield s


@pytest.fixture(params=PERSISTENT_KINDS)
async def persistent_store(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[Store]:
    """A connected, empty store of each kind that writes records as bytes; dropped afterwards."""
    async for s in _connected(request.param, tmp_path):
        yield s


async def _connected(kind: str, tmp_path: os.PathLike[str]) -> AsyncIterator[Store]:
    url = store_url(kind, tmp_path)
    try:
        s = open_store(url)
    except (ImportError, ConfigError) as exc:  # extra not installed
        unavailable(f"{kind} extra missing: {exc}")
        raise
    await s.connect()
    try:
        yield s
    finally:
        drop = getattr(s, "drop", None)
        if drop is not None:
            await drop()
        await s.close()
