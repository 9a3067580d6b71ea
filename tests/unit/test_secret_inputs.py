"""SecretStr inputs through the queue: sealed at rest, opened where the function runs, keyed
into the cache only as an HMAC, and never shown in records, logs, errors or API responses."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from taskloom import ConfigError, TaskConsumer, TaskManager, TaskRun, TaskState, task
from taskloom.errors import SecretKeyError
from taskloom.secret_inputs import KEY_ENV, SecretBox, generate_key, redact
from tests.apps import secret_app
from tests.apps.workers import spawn_worker, worker_errors

SECRET = "correct-horse-battery-staple"
TASKS = [secret_app.login, secret_app.fetch, secret_app.in_child, secret_app.fails]


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    async with TaskManager(f"sqlite:///{tmp_path}/s.db", tasks=TASKS) as m:
        yield m


def store_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))


# -- the box ----------------------------------------------------------------------------------------
def test_seal_open_rotate_and_wrong_keys() -> None:
    old, new = generate_key(), generate_key()
    sealed = SecretBox(old).seal(SECRET)
    assert SECRET not in str(sealed) and SecretBox(old).open(sealed) == SECRET
    rotated = SecretBox(new, old_keys=[old])
    assert rotated.open(sealed) == SECRET  # an old key still opens what it sealed
    fresh = rotated.rotate(sealed)
    assert SecretBox(new).open(fresh) == SECRET
    with pytest.raises(SecretKeyError, match=KEY_ENV) as info:
        SecretBox(new).open(sealed, task="t", field="password")
    assert isinstance(info.value, ConfigError) and SECRET not in str(info.value)
    # any passphrase works as a key too (derived); a Fernet key is used as given
    assert SecretBox("a passphrase").open(SecretBox("a passphrase").seal([1, "x"])) == [1, "x"]


def test_ephemeral_keys_are_per_manager_and_say_so() -> None:
    mine, theirs = SecretBox(), SecretBox()
    assert mine.ephemeral and theirs.ephemeral
    sealed = mine.seal(SECRET)
    assert sealed["ephemeral"] is True and mine.open(sealed) == SECRET
    with pytest.raises(SecretKeyError, match=f"{KEY_ENV} was not set there"):
        theirs.open(sealed)


def test_digest_is_keyed_and_never_the_value() -> None:
    a, b = SecretBox("k1"), SecretBox("k2")
    assert a.digest({"t": "one"}) == a.digest({"t": "one"}) != a.digest({"t": "two"})
    assert a.digest({"t": "one"}) != b.digest({"t": "one"})  # keyed: not a plain hash
    assert "one" not in a.digest({"t": "one"})


# -- through the queue -------------------------------------------------------------------------------
async def test_secret_params_through_the_queue(manager: TaskManager, tmp_path: Path) -> None:
    """aio-fluid's test_secret_params: a queued SecretStr reaches the task."""
    run = await manager.queue("login", user="ann", password=SecretStr(SECRET))
    assert run.state is TaskState.queued
    stored = (await manager.get_run(run.id)).params
    assert stored["user"] == "ann" and set(stored["password"]) == {"$sealed", "ephemeral"}
    assert redact(stored)["password"] == "**********"
    await TaskConsumer(manager).run(burst=True)
    done = await manager.get_run(run.id)
    assert done.state is TaskState.success, done.error
    assert done.result == f"ann:{len(SECRET)}:{SECRET[::-1]}"
    assert SECRET.encode() not in store_bytes(tmp_path)
    plain = await manager.queue("login", user="bob", password=SECRET)  # a str is accepted too
    await TaskConsumer(manager).run(burst=True)
    assert (await manager.get_run(plain.id)).state is TaskState.success


async def test_retry_reseals_and_logs_errors_and_api_never_show_it(
    manager: TaskManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failed = await manager.queue("fails", password=SECRET)
    login = await manager.queue("login", user="ann", password=SECRET)
    await TaskConsumer(manager).run(burst=True)
    failed = await manager.get_run(failed.id)
    assert failed.state is TaskState.failure and SECRET not in str(failed.error)
    again = await manager.retry(failed.id)
    assert again.params["password"] != failed.params["password"]  # sealed afresh
    await TaskConsumer(manager).run(burst=True)
    assert (await manager.get_run(again.id)).error is not None
    assert SECRET not in caplog.text
    pytest.importorskip("fastapi")
    import httpx

    from taskloom.api import create_app

    transport = httpx.ASGITransport(app=create_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in (f"/api/runs/{login.id}", f"/api/runs/{failed.id}", "/api/runs"):
            body = (await client.get(path)).text
            assert SECRET not in body and "$sealed" not in body, path
        queued = await client.post("/api/tasks/login/runs",
                                   json={"params": {"user": "cy", "password": SECRET}})  # fmt: skip
    assert queued.status_code == 201 and SECRET not in queued.text


async def test_cpu_bound_secret_goes_over_the_pipe(manager: TaskManager) -> None:
    run = await manager.queue("in_child", password=SECRET)
    await TaskConsumer(manager).run(burst=True)
    done = await manager.get_run(run.id)
    assert done.state is TaskState.success, done.error
    assert done.result is not None and done.result["pid"] != os.getpid()
    assert done.result["length"] == len(SECRET)
    assert done.result["in_argv"] is False and done.result["in_environ"] is False


async def test_ray_refuses_secret_inputs() -> None:
    from taskloom.executors.ray import _submit

    @task
    def needs(token: SecretStr) -> None: ...

    with pytest.raises(ConfigError, match="do not travel to Ray"):
        _submit(None, needs, TaskRun(task="needs"), {"token": SecretStr("x")})


# -- the cache (issue: a call with another secret returned the first caller's result) ---------------
async def test_cache_key_includes_a_keyed_hash_of_secret_inputs(manager: TaskManager) -> None:
    secret_app.CALLS.clear()
    first = await manager.execute("fetch", account="acme", token=SecretStr("tok-AAAA"))
    other = await manager.execute("fetch", account="acme", token=SecretStr("tok-BBBB"))
    same = await manager.execute("fetch", account="acme", token=SecretStr("tok-AAAA"))
    assert (first.cache_hit, other.cache_hit, same.cache_hit) == (False, False, True)
    assert other.result == "acme seen by tok-" and secret_app.CALLS == ["acme", "acme"]
    queued = await manager.queue("fetch", account="acme", token="tok-BBBB")
    await TaskConsumer(manager).run(burst=True)
    assert (await manager.get_run(queued.id)).cache_hit  # the queue path keys it the same way
    keys = [k async for k in _kv_keys(manager)]
    assert keys and not any("tok-" in k for k in keys)


async def _kv_keys(manager: TaskManager) -> AsyncIterator[str]:
    import sqlite3

    path = manager.store.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            cols = [r[1] for r in db.execute(f"pragma table_info({table})")]
            if "key" in cols:
                for (key,) in db.execute(f"select key from {table}"):
                    yield str(key)


# -- real worker processes ---------------------------------------------------------------------------
def _worker_env(tmp_path: Path, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env["TASKLOOM_STORE"] = f"sqlite:///{tmp_path}/s.db"
    if key is not None:
        env[KEY_ENV] = key
    return env


async def _run_in_worker(tmp_path: Path, queue_key: str | None, worker_key: str | None) -> Any:
    async with TaskManager(f"sqlite:///{tmp_path}/s.db", tasks=TASKS, secret_key=queue_key) as m:
        run = await m.queue("login", user="ann", password=SECRET)
        worker = spawn_worker("tests.apps.secret_app:make", _worker_env(tmp_path, worker_key))
        try:
            done = await m.wait(run.id, timeout=60)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert SECRET not in worker_errors(worker)
        return done


async def test_a_worker_in_another_process_with_the_key_runs_it(tmp_path: Path) -> None:
    key = generate_key()
    done = await _run_in_worker(tmp_path, key, key)
    assert done.state is TaskState.success, done.error
    assert done.result == f"ann:{len(SECRET)}:{SECRET[::-1]}"


async def test_a_worker_in_another_process_without_the_key_fails_the_run(tmp_path: Path) -> None:
    done = await _run_in_worker(tmp_path, None, None)  # ephemeral key in the queueing process
    assert done.state is TaskState.failure and done.error is not None
    assert done.error["type"] == "SecretKeyError" and KEY_ENV in done.error["message"]
    assert len(done.attempts) == 1  # a key problem is not retried
    assert SECRET not in str(done.error)


if sys.platform != "linux":  # /proc is read by in_child
    pytestmark = pytest.mark.skip("needs /proc")
