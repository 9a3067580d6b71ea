"""The API checks the token, then the body size, before it reads a request body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskloom import TaskManager, task

pytest.importorskip("fastapi")

from taskloom.api import create_app
from taskloom.api.auth import TOKEN_ENV
from taskloom.api.body_guard import DEFAULT_MAX_BODY_BYTES

CHUNK = 64 * 1024
AUTH = {"Authorization": "Bearer s3cret"}


@task
def add(x: int, y: int = 0) -> int:
    """Add two numbers."""
    return x + y


class Upload:
    """A streamed request body of `chunks` chunks that counts how many the server pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b" " * CHUNK


@pytest.fixture
async def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TaskManager]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TaskManager(f"sqlite:///{tmp_path}/api.db", tasks=[add]) as m:
        yield m


def client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://taskloom")


async def test_an_unauthenticated_upload_is_refused_unread(manager: TaskManager) -> None:
    upload = Upload(chunks=2400)  # 150 MiB if it were read
    async with client(create_app(manager, token="s3cret")) as c:
        resp = await c.post("/api/tasks/add/runs", content=upload.__aiter__())
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert upload.pulled <= 1  # httpx may hand over its first chunk eagerly; nothing more


async def test_a_declared_length_over_the_limit_is_refused_unread(manager: TaskManager) -> None:
    upload = Upload(chunks=2400)
    headers = {**AUTH, "Content-Length": str(2400 * CHUNK)}
    async with client(create_app(manager, token="s3cret")) as c:
        resp = await c.post("/api/tasks/add/runs", content=upload.__aiter__(), headers=headers)
    assert resp.status_code == 413 and str(DEFAULT_MAX_BODY_BYTES) in resp.json()["detail"]
    assert upload.pulled <= 1


async def test_a_streamed_body_is_cut_off_at_the_limit(manager: TaskManager) -> None:
    upload = Upload(chunks=2400)  # chunked: no Content-Length
    async with client(create_app(manager, token="s3cret")) as c:
        resp = await c.post("/api/tasks/add/runs", content=upload.__aiter__(), headers=AUTH)
    assert resp.status_code == 413
    assert upload.pulled <= DEFAULT_MAX_BODY_BYTES // CHUNK + 2


async def test_the_limit_is_configurable_and_small_bodies_pass(manager: TaskManager) -> None:
    body = {"params": {"x": 1}, "queue": "q" * 50}
    async with client(create_app(manager, max_body_bytes=64)) as c:
        assert (await c.post("/api/tasks/add/runs", json=body)).status_code == 413
    async with client(create_app(manager)) as c:
        assert (await c.post("/api/tasks/add/runs", json=body)).status_code == 201
    async with client(create_app(manager, token="s3cret")) as c:
        ok = await c.post("/api/tasks/add/runs", json={"params": {"x": 1}}, headers=AUTH)
        assert ok.status_code == 201
