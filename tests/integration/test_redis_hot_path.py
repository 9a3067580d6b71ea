"""The Redis store's hot path: channels a producer does not need are not subscribed, and a
waiter gets the finished record in the completion message instead of reading it again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from taskloom.run import TaskRun, TaskState
from taskloom.store.base import dt
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
async def stores() -> AsyncIterator[tuple[RedisStore, RedisStore, aioredis.Redis]]:
    url = redis_url()
    if not url:
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
        raise AssertionError
    prefix = f"hot{uuid.uuid4().hex[:10]}:"
    sep = "&" if "?" in url else "?"
    a, b = RedisStore(f"{url}{sep}prefix={prefix}"), RedisStore(f"{url}{sep}prefix={prefix}")
    await a.connect()
    await b.connect()
    raw = aioredis.Redis.from_url(url)
    try:
        yield a, b, raw
    finally:
        await a.drop()
        await a.close()
        await b.close()
        await raw.aclose()


async def _subscribers(raw: aioredis.Redis, channel: str) -> int:
    [(_name, count)] = await raw.pubsub_numsub(channel)
    return int(count)


async def test_queue_channel_is_subscribed_only_while_a_consumer_watches(
    stores: tuple[RedisStore, RedisStore, aioredis.Redis],
) -> None:
    a, b, raw = stores
    channel = f"{a.prefix}events:queue"
    assert await _subscribers(raw, channel) == 0  # two connected producers: no queue events
    with b.notifier.watch("queue") as woke:
        await b.notifier.settle()
        assert await _subscribers(raw, channel) == 1
        await a.enqueue([TaskRun(task="t", state=TaskState.queued, queued=dt(T0))])
        await woke.wait()  # the other store's consumer hears of the new run
    await b.notifier.settle()
    assert await _subscribers(raw, f"{a.prefix}events:run:x") == 0


async def test_a_watch_made_while_the_listener_starts_is_subscribed(
    stores: tuple[RedisStore, RedisStore, aioredis.Redis],
) -> None:
    a, _b, raw = stores
    fresh = RedisStore(f"{a.url}")
    await fresh.connect()
    await asyncio.sleep(0)  # the listener starts its first subscribe; the watch comes meanwhile
    try:
        with fresh.notifier.watch("queue"):
            await fresh.notifier.settle()
            assert await _subscribers(raw, f"{a.prefix}events:queue") == 1
    finally:
        await fresh.close()


async def test_a_waiter_gets_the_finished_record_in_the_message(
    stores: tuple[RedisStore, RedisStore, aioredis.Redis],
) -> None:
    worker, waiter, _raw = stores
    run = TaskRun(task="t", state=TaskState.queued, queued=dt(T0))
    await worker.enqueue([run])
    with waiter.notifier.watch(f"run:{run.id}") as changed:
        await waiter.notifier.settle()
        [lease] = await worker.claim("w", None, 1, 30.0, T0)
        done = lease.run.model_copy(
            update={"state": TaskState.success, "result": {"x": [1, 2.5, "é"]}, "end": dt(T0 + 1)}
        )
        assert await worker.finish([(lease, done)]) == [True]
        await changed.wait()
        assert f"run:{run.id}" in waiter._pushed  # carried by the message, not read back
        got = await waiter.get(run.id)
    assert got is not None and got.state is TaskState.success
    assert got.result == {"x": [1, 2.5, "é"]}
    assert waiter._pushed == {}
    again = await waiter.get(run.id)  # nobody waits any more: read from the server
    assert again == got


async def test_a_finished_run_is_stored_compactly(
    stores: tuple[RedisStore, RedisStore, aioredis.Redis],
) -> None:
    """What keeps a finished run under 1 KB here: a hash in Redis's listpack encoding without
    the id (the key names it) or a ready-queue score, and no `ended` entry for a run whose
    id is time-ordered (purge finds it through its state's index); a hand-made id keeps one."""
    a, _b, raw = stores
    runs = [
        TaskRun(task="t", state=TaskState.queued, queued=dt(T0)),
        TaskRun(id="by-hand", task="t", state=TaskState.queued, queued=dt(T0)),
    ]
    await a.enqueue(runs)
    for lease in await a.claim("w", None, 2, 30, T0):
        done = lease.run.record()
        done.state, done.end, done.result = TaskState.success, dt(T0 + 1), 1
        assert await a.finish([(lease, done)]) == [True]
    made = f"{a.prefix}run:{runs[0].id}"
    assert await raw.object("encoding", made) == b"listpack"
    fields = set(await raw.hkeys(made))
    assert b"id" not in fields and b"_score" not in fields and b"_end" in fields
    assert await raw.zrange(f"{a.prefix}ended", 0, -1) == [b"by-hand"]
    got = await a.get(runs[0].id)
    assert got is not None and got.id == runs[0].id and got.result == 1
    assert await a.purge(T0 + 2) == 2


async def test_a_claim_that_dropped_stale_entries_says_to_claim_again(
    stores: tuple[RedisStore, RedisStore, aioredis.Redis],
) -> None:
    """Entries of the ready queue whose records are gone are dropped by the claim; it took
    fewer runs than it was asked for though more may be due, so it says to claim again now
    (a consumer claims again only after a claim that filled its slots, or when told to)."""
    store, _other, raw = stores
    runs = [TaskRun(task="t", state=TaskState.queued, queued=dt(T0 + i)) for i in range(3)]
    await store.enqueue(runs)
    for gone in runs[:2]:  # deleted behind the store's back
        await raw.delete(f"{store.prefix}run:{gone.id}")
    first = await store.claim("w", None, 2, 30.0, T0 + 10)
    assert list(first) == [] and first.retry_at == T0 + 10
    [lease] = await store.claim("w", None, 2, 30.0, T0 + 10)
    assert lease.run.id == runs[2].id
