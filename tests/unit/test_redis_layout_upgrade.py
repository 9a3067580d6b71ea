"""A Redis store written by an older taskloom (one `runs` zset of every run, no counters) is
brought to the current layout when a store connects to it."""

from __future__ import annotations

import uuid

import pytest

from taskloom.run import TaskRun, TaskState
from taskloom.store.base import RunQuery, dt
from tests.conftest import redis_url, unavailable

T0 = 1_800_000_000.0


async def test_an_older_layout_is_upgraded_on_connect() -> None:
    pytest.importorskip("redis")
    from redis.asyncio import Redis

    from taskloom.store.redis import RedisStore

    base = redis_url()
    if not base:
        unavailable("TASKLOOM_TEST_REDIS_URL not set")
        return
    prefix = f"upgrade-{uuid.uuid4().hex[:8]}:"
    url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    runs = [
        TaskRun(
            task="t", state=TaskState.success, queue=f"q{i % 2}", queued=dt(T0), start=dt(T0),
            end=dt(T0 + i), tags=["x"] if i % 2 else [],
        )
        for i in range(7)
    ] + [TaskRun(task="t", state=TaskState.queued, queued=dt(T0))]  # fmt: skip
    store = RedisStore(url)
    await store.connect()
    raw = Redis.from_url(base)
    try:
        for run in runs:
            await store.save(run)
        # what an older taskloom left: every run in `runs`, no queue/tag indexes, no counters
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        old_indexes = [
            k for k in keys if b":idx:queue:" in k or b":tag:" in k or k.endswith(b"qnames")
        ]
        await raw.delete(*old_indexes, f"{prefix}counts")
        await raw.zadd(f"{prefix}runs", {run.id: 0 for run in runs})
        assert await store.query(RunQuery()) == []  # the old layout is invisible to listings
        # a change to a run not yet moved is counted as it stands when it moves
        [lease] = await store.claim("w", None, 1, 30, T0)
        await store.finish([(lease, lease.run.model_copy(update={"state": TaskState.failure}))])

        upgraded = RedisStore(url)
        await upgraded.connect()
        try:
            assert await raw.exists(f"{prefix}runs") == 0
            listed = [r.id for r in await upgraded.query(RunQuery())]
            assert listed == sorted((r.id for r in runs), reverse=True)
            tagged = {r.id for r in await upgraded.query(RunQuery(tags=("x",)))}
            assert tagged == {r.id for r in runs if r.tags}
            counts = {(c.queue, c.state): c.n for c in await upgraded.counts()}
            assert counts == {
                ("q0", TaskState.success): 4,
                ("q1", TaskState.success): 3,
                ("default", TaskState.failure): 1,
            }
        finally:
            await upgraded.close()
    finally:
        await store.drop()
        await store.close()
        await raw.aclose()
