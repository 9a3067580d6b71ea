"""The Redis store's script lane: one dedicated connection for script calls, which must stay
in step with its replies whatever happens to a call on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from taskloom import TaskConsumer, TaskManager
from taskloom.run import TaskRun, TaskState
from taskloom.store.base import RunQuery, dt
from tests.conftest import IN_CI, redis_url, unavailable

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # the redis extra is missing: a failure in CI
    if IN_CI:
        raise
    pytest.skip(f"redis extra missing: {exc}", allow_module_level=True)

from taskloom.store.redis import RedisStore

T0 = 1_800_000_000.0


@pytest.fixture
async def store() -> AsyncIterator[tuple[RedisStore, aioredis.Redis]]:
    url = redis_url()
    if not url:
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
        raise AssertionError
    sep = "&" if "?" in url else "?"
    s = RedisStore(f"{url}{sep}prefix=lane{uuid.uuid4().hex[:10]}:")
    await s.connect()
    raw = aioredis.Redis.from_url(url)
    try:
        yield s, raw
    finally:
        await s.drop()
        await s.close()
        await raw.aclose()


def queued(i: int = 0) -> TaskRun:
    return TaskRun(task="t", state=TaskState.queued, queued=dt(T0), params={"i": i})


async def _lane_client_id(raw: aioredis.Redis, name: str) -> int | None:
    for client in await raw.client_list():
        if client.get("name") == name:
            return int(client["id"])
    return None


def _pool_connections(s: RedisStore) -> int:
    pool = s._redis.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_a_call_cancelled_mid_flight_leaves_the_others_in_step(
    store: tuple[RedisStore, aioredis.Redis],
) -> None:
    s, raw = store
    await s.enqueue([queued(0)])  # the lane is connected and the script loaded
    lane = s._lane
    assert lane is not None and lane._proto is not None
    await raw.client_pause(300)  # the server holds every reply for 300 ms
    first = asyncio.ensure_future(s.enqueue([queued(1)]))
    second = asyncio.ensure_future(s.enqueue([queued(2)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(lane._proto._waiting) == 2  # both sent on the lane, waiting for replies
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    [run] = await second  # the first's reply is read and dropped; the second gets its own
    assert run.params == {"i": 2}
    [third] = await s.enqueue([queued(3)])
    got = await s.get(third.id)
    assert got is not None and got.params == {"i": 3}
    assert not lane._proto.lost  # one connection throughout


async def test_a_flushed_script_cache_and_a_killed_connection_are_survived(
    store: tuple[RedisStore, aioredis.Redis],
) -> None:
    s, raw = store
    await s.enqueue([queued(0)])
    await raw.script_flush()
    await s.enqueue([queued(1)])  # NOSCRIPT on the lane: loaded there and called again
    lane = s._lane
    assert lane is not None
    assert await lane.command("CLIENT", "SETNAME", "taskloom-lane-test") == b"OK"
    client_id = await _lane_client_id(raw, "taskloom-lane-test")
    assert client_id is not None
    await raw.client_kill_filter(_id=client_id)
    await s.enqueue([queued(2)])  # the lane's connection is gone: the pool takes the call
    assert len(await s.query(RunQuery())) == 3
    await s.enqueue([queued(3)])  # and the lane reconnects for the next
    assert len(await s.query(RunQuery())) == 4
    assert lane._proto is not None and not lane._proto.lost


async def test_a_stalled_server_sends_the_waiting_calls_through_the_pool(
    store: tuple[RedisStore, aioredis.Redis],
) -> None:
    s, raw = store
    lane = s._lane
    assert lane is not None
    await lane.close()
    lane._kw["socket_timeout"] = 0.2  # the stall watch gives up after 0.2-0.4 s
    await s.enqueue([queued(0)])
    stalled = lane._proto
    await raw.client_pause(1000, all=False)  # replies held for a second
    [run] = await s.enqueue([queued(1)])  # waits, the lane gives up, the pool's call lands
    assert stalled is not None and stalled.lost
    got = await s.get(run.id)
    assert got is not None and got.params == {"i": 1}
    assert len(await s.query(RunQuery())) == 2


async def test_concurrent_calls_share_the_lane(
    store: tuple[RedisStore, aioredis.Redis],
) -> None:
    s, _ = store
    await s.enqueue([queued(-1)])
    before = _pool_connections(s)
    runs = [queued(i) for i in range(200)]
    stored = await asyncio.gather(*(s.enqueue([run]) for run in runs))
    assert [r.id for [r] in stored] == [r.id for r in runs]
    assert sum((await s.queue_length(None)).values()) == 201
    leases = await asyncio.gather(*(s.claim("w", None, 10, 30, T0) for _ in range(21)))
    assert len({lease.run.id for batch in leases for lease in batch}) == 201
    assert _pool_connections(s) == before  # pipelined on the lane: no pool connection opened


async def test_a_call_larger_than_the_socket_buffer_is_sent_whole(
    store: tuple[RedisStore, aioredis.Redis],
) -> None:
    s, _ = store
    runs = [
        TaskRun(
            task="t", state=TaskState.queued, queued=dt(T0), params={"blob": "x" * 2000, "i": i}
        )
        for i in range(1000)
    ]  # about 2 MB in one script call: the lane waits for the transport to drain
    stored = await s.enqueue(runs)
    assert [r.id for r in stored] == [r.id for r in runs]
    got = await s.get(runs[-1].id)
    assert got is not None and got.params == {"blob": "x" * 2000, "i": 999}


def test_lane_and_waits_work_on_uvloop() -> None:
    """uvloop (uvicorn's loop when installed) hands protocols transports that do not subclass
    asyncio.Transport: the lane, its listener and a waiter must work there too."""
    import uvloop

    url = redis_url()
    if not url:
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
        raise AssertionError

    async def main() -> None:
        sep = "&" if "?" in url else "?"
        manager = TaskManager(f"{url}{sep}prefix=uv{uuid.uuid4().hex[:10]}:")

        @manager.task()
        async def double(x: int) -> int:
            return 2 * x

        async with manager:
            assert manager.store._lane is not None
            try:
                async with TaskConsumer(manager):
                    done = await manager.queue_and_wait("double", x=21, timeout=30)
                assert done.state is TaskState.success and done.result == 42
            finally:
                await manager.store.drop()

    uvloop.run(main())
