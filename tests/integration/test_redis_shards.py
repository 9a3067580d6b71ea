"""One app's queues over several Redis Cluster slots (`shards=`): what crosses slices.

The conformance suite runs on this store too (kind `redis-shards`); these cases put queues in
different slices on purpose, and read through a second store that has seen none of the runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest

from taskloom import TaskConsumer, TaskManager, TaskState, task
from taskloom.errors import ConfigError
from taskloom.run import TaskPriority, TaskRun
from taskloom.store import Beat, RunQuery, open_store
from taskloom.store.base import dt
from taskloom.store.redis_shards import RedisShardedStore, shard_of, slice_tag, split_shards
from tests.conftest import store_url

pytest.importorskip("redis")
from redis.crc import key_slot

T0 = 1_800_000_000.0
SHARDS = 4


def queues_in_distinct_slices(n: int) -> list[str]:
    """`n` queue names, each in a slice of its own."""
    found: dict[int, str] = {}
    for i in count():
        found.setdefault(shard_of(f"q{i}", SHARDS), f"q{i}")
        if len(found) == n:
            return list(found.values())
    raise AssertionError


def queued(queue: str, **kw: object) -> TaskRun:
    kw.setdefault("queued", dt(T0))
    return TaskRun(task="t", queue=queue, state=TaskState.queued, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def url(tmp_path: Path) -> str:
    return store_url("redis-shards", tmp_path)


@pytest.fixture
async def stores(url: str) -> AsyncIterator[tuple[RedisShardedStore, RedisShardedStore]]:
    """Two stores on one sharded app: the second has seen none of the first's runs."""
    one, two = open_store(url), open_store(url)
    assert isinstance(one, RedisShardedStore) and isinstance(two, RedisShardedStore)
    await one.connect()
    await two.connect()
    try:
        yield one, two
    finally:
        await one.drop()
        await one.close()
        await two.close()


async def test_each_queue_lives_in_its_own_slot(
    stores: tuple[RedisShardedStore, RedisShardedStore],
) -> None:
    store, _ = stores
    a, b = queues_in_distinct_slices(2)
    await store.enqueue([queued(a), queued(b)])
    slots = {key_slot(s.prefix.encode()) for s in store._slices}
    assert len(slots) == SHARDS  # every slice its own hash slot
    for q in (a, b):
        home = store._slices[shard_of(q, SHARDS)]
        assert await home._redis.exists(f"{home.prefix}ready:{q}") == 1
        others = [s for s in store._slices if s is not home]
        assert not any([await s._redis.exists(f"{s.prefix}ready:{q}") for s in others])


async def test_claims_counts_and_listings_span_slices(
    stores: tuple[RedisShardedStore, RedisShardedStore],
) -> None:
    store, other = stores
    a, b = queues_in_distinct_slices(2)
    runs = [queued(a) for _ in range(3)] + [queued(b) for _ in range(3)]
    await store.enqueue(runs)
    assert (await other.queue_length(None))[TaskPriority.medium] == 6
    assert (await other.queue_length(b))[TaskPriority.medium] == 3
    newest = await other.query(RunQuery(limit=4))
    assert [r.id for r in newest] == sorted((r.id for r in runs), reverse=True)[:4]
    page = await other.query(RunQuery(limit=4, cursor=newest[-1].id))
    assert [r.id for r in page] == sorted((r.id for r in runs), reverse=True)[4:]
    stats = {s.name: s.depth[TaskPriority.medium] for s in await other.queue_stats()}
    assert stats == {a: 3, b: 3}
    first = await other.claim("w", None, 4, 10, T0)
    assert len(first) == 4
    rest = await other.claim("w", [a, b], 10, 10, T0)
    assert {lease.run.id for lease in [*first, *rest]} == {r.id for r in runs}
    assert await other.claim("w", None, 10, 10, T0) == []


async def test_a_store_that_never_saw_a_run_finds_it_by_id(
    stores: tuple[RedisShardedStore, RedisShardedStore],
) -> None:
    store, other = stores
    a, b = queues_in_distinct_slices(2)
    run, waiting = queued(b), queued(a)
    await store.enqueue([run, waiting])
    await store.kv_set(f"runlog:{run.id}", b"[]", None, T0)
    got = await other.get(run.id)
    assert got is not None and got.queue == b
    assert await other.kv_get(f"runlog:{run.id}", T0) == b"[]"
    home = store._slices[shard_of(b, SHARDS)]
    assert await home._redis.exists(f"{home.prefix}kv:runlog:{run.id}") == 1  # beside the run
    fresh = open_store(other.url)
    await fresh.connect()
    try:
        aborted = await fresh.request_cancel(waiting.id, T0 + 1)
    finally:
        await fresh.close()
    assert aborted is not None and aborted.state is TaskState.aborted
    assert await other.get("no-such-run") is None


async def test_a_concurrency_slot_holds_across_slices(
    stores: tuple[RedisShardedStore, RedisShardedStore],
) -> None:
    store, other = stores
    a, b = queues_in_distinct_slices(2)
    await store.enqueue([queued(a), queued(b)])
    first, second = await store.claim("w", None, 2, 10, T0)
    assert await store.acquire_slot("task:t", first.run.id, 1, 10, T0)
    assert not await other.acquire_slot("task:t", second.run.id, 1, 10, T0)
    # the holder's heartbeats keep it, in whichever slice the slot lives
    [reply] = await store.heartbeat([Beat(first)], 10, T0 + 8)
    assert reply.alive
    assert not await other.acquire_slot("task:t", second.run.id, 1, 10, T0 + 12)
    await store.release_slot("task:t", first.run.id)
    assert await other.acquire_slot("task:t", second.run.id, 1, 10, T0 + 12)


def test_slices_take_evenly_spaced_slots() -> None:
    """Slice k's slot is in the k-th equal part of the slot range: 6 slices put 2 on each of
    3 masters that own equal ranges, whatever the app's name."""
    for stem in ("app", "taskloom", "x"):
        for shards in (1, 3, 6, 8, 256):
            tags = [slice_tag(stem, k, shards) for k in range(shards)]
            for k, tag in enumerate(tags):
                assert k * 16_384 // shards <= key_slot(tag.encode()) < (k + 1) * 16_384 // shards
            assert tags == [slice_tag(stem, k, shards) for k in range(shards)]  # stable
        # the ranges `redis-cli --cluster create` gives 3 masters
        slots = [key_slot(slice_tag(stem, k, 6).encode()) for k in range(6)]
        masters = [0 if s <= 5460 else 1 if s <= 10922 else 2 for s in slots]
        assert sorted(masters) == [0, 0, 1, 1, 2, 2]


def test_url_errors_name_the_problem() -> None:
    base = "redis+cluster://127.0.0.1:7000/0"
    for bad in ("0", "x", "999"):
        with pytest.raises(ConfigError, match="shards="):
            split_shards(f"{base}?shards={bad}")
    with pytest.raises(ConfigError, match="hash tags"):
        open_store(f"{base}?shards=2&prefix={{mine}}:")
    assert split_shards(f"{base}?prefix=app:&shards=3&max_connections=8") == (
        f"{base}?max_connections=8", "app", 3,
    )  # fmt: skip


@task()
async def double(x: int) -> int:
    """A run for the worker below."""
    return 2 * x


async def test_a_worker_serves_queues_in_every_slice(url: str) -> None:
    """A waiter hears each run's finish through its own slice's listener."""
    names = queues_in_distinct_slices(SHARDS)
    async with TaskManager(url, tasks=[double], poll_interval=0.1) as m:
        try:
            async with TaskConsumer(m, queues=[*names, "default"], max_concurrent_tasks=4):
                runs = [await m.queue(double, x=i, queue=q) for i, q in enumerate(names)]
                done = [await m.wait(r.id, timeout=30) for r in runs]
                assert [r.result for r in done] == [2 * i for i in range(SHARDS)]
                assert {r.queue for r in done} == set(names)
                assert (await m.queue_and_wait(double, x=21, timeout=30)).result == 42
        finally:
            await m.store.drop()  # type: ignore[attr-defined]
