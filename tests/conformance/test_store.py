"""The store contract. A backend that passes this suite is correct by definition."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from taskloom import TaskConsumer, TaskManager, task
from taskloom.errors import CorruptRecordError
from taskloom.ratelimit import RateLimit
from taskloom.run import Attempt, TaskPriority, TaskRun, TaskState
from taskloom.store import Beat, Lease, RunQuery, Store
from taskloom.store.base import ACTIVE_STATES, QueueSettings, dt, taken_count
from taskloom.testing import run_burst

from ..raw_records import Damage, damage_record

T0 = 1_800_000_000.0


def queued(task: str = "t", **kw: object) -> TaskRun:
    kw.setdefault("queued", dt(T0))
    return TaskRun(task=task, state=TaskState.queued, **kw)  # type: ignore[arg-type]


async def test_enqueue_and_get_roundtrip(store: Store) -> None:
    run = queued(params={"x": 1, "s": "ü"}, tags=["a"], priority=TaskPriority.high)
    [stored] = await store.enqueue([run])
    assert stored.id == run.id
    got = await store.get(run.id)
    assert got is not None
    assert got.params == {"x": 1, "s": "ü"}
    assert got.tags == ["a"] and got.priority is TaskPriority.high
    assert got.state is TaskState.queued and got.root_run_id == run.id
    assert await store.get("nope") is None


async def test_enqueue_same_id_is_idempotent(store: Store) -> None:
    run = queued()
    [inserted] = await store.enqueue([run])
    assert inserted is run  # an insert hands back the object itself
    [again] = await store.enqueue([run.model_copy(update={"params": {"changed": True}})])
    assert again.params == {} and again is not run


async def test_enqueue_keeps_the_given_state(store: Store) -> None:
    child = TaskRun(task="c", state=TaskState.running, start=dt(T0))
    await store.enqueue([child])
    got = await store.get(child.id)
    assert got is not None and got.state is TaskState.running
    assert await store.claim("w", None, 5, 30, T0) == []


async def test_enqueue_existing_id_returns_it_even_when_finished(store: Store) -> None:
    run = queued()
    await store.enqueue([run])
    [lease] = await store.claim("w", None, 1, 30, T0)
    done = lease.run.model_copy(update={"state": TaskState.success, "result": 1})
    assert await store.finish([(lease, done)]) == [True]
    [again] = await store.enqueue([queued(id=run.id)])
    assert again.state is TaskState.success and again.result == 1
    assert await store.claim("w", None, 1, 30, T0) == []


async def test_dedup_key_returns_active_run(store: Store) -> None:
    a = queued(dedup_key="k")
    b = queued(dedup_key="k")
    await store.enqueue([a])
    [got] = await store.enqueue([b])
    assert got.id == a.id
    assert await store.get(b.id) is None
    # once the first run is done, the key is free again
    [lease] = await store.claim("w", None, 1, 30, T0)
    done = lease.run.model_copy(update={"state": TaskState.success, "end": dt(T0 + 1)})
    assert await store.finish([(lease, done)]) == [True]
    [c] = await store.enqueue([queued(dedup_key="k")])
    assert c.id != a.id


async def test_claim_orders_by_priority_then_fifo(store: Store) -> None:
    low = queued(priority=TaskPriority.low, queued=dt(T0 - 30))
    med1 = queued(queued=dt(T0 - 20))
    med2 = queued(queued=dt(T0 - 10))
    high = queued(priority=TaskPriority.high, queued=dt(T0 - 5))
    await store.enqueue([low, med2, med1, high])
    leases = await store.claim("w", None, 10, 30, T0)
    assert [lease.run.id for lease in leases] == [high.id, med1.id, med2.id, low.id]
    assert all(lease.run.state is TaskState.running and lease.run.worker == "w" for lease in leases)
    assert await store.claim("w", None, 10, 30, T0) == []


async def test_claim_respects_limit_queue_and_execute_after(store: Store) -> None:
    later = queued(execute_after=dt(T0 + 60))
    other = queued(queue="other")
    now_runs = [queued() for _ in range(3)]
    await store.enqueue([later, other, *now_runs])
    first = await store.claim("w", ["default"], 2, 30, T0)
    assert len(first) == 2
    rest = await store.claim("w", ["default"], 10, 30, T0)
    assert {lease.run.id for lease in first + rest} == {r.id for r in now_runs}
    assert [lease.run.id for lease in await store.claim("w", ["default"], 10, 30, T0 + 61)] == [
        later.id
    ]
    assert [lease.run.id for lease in await store.claim("w", None, 10, 30, T0)] == [other.id]


async def test_claim_sets_start_once(store: Store) -> None:
    run = queued()
    await store.enqueue([run])
    [lease] = await store.claim("w", None, 1, 30, T0)
    assert lease.run.start is not None and lease.run.start.timestamp() == T0


async def test_two_claimers_never_share_a_run(store: Store) -> None:
    runs = [queued() for _ in range(40)]
    await store.enqueue(runs)
    got = await asyncio.gather(*(store.claim(f"w{i}", None, 7, 30, T0) for i in range(8)))
    ids = [lease.run.id for batch in got for lease in batch]
    assert len(ids) == len(set(ids)) == 40


async def test_finish_is_fenced_by_lease(store: Store) -> None:
    run = queued()
    await store.enqueue([run])
    [lease] = await store.claim("w1", None, 1, 10, T0)
    # lease expires and another worker reclaims and claims the run
    reclaimed = await store.reclaim(T0 + 11)
    assert [r.id for r in reclaimed] == [run.id]
    assert reclaimed[0].attempts[-1].state is TaskState.interrupted
    [lease2] = await store.claim("w2", None, 1, 10, T0 + 11)
    assert lease2.token != lease.token
    stale = lease.run.model_copy(update={"state": TaskState.success, "result": "old"})
    assert await store.finish([(lease, stale)]) == [False]
    fresh = lease2.run.model_copy(update={"state": TaskState.success, "result": "new"})
    assert await store.finish([(lease2, fresh)]) == [True]
    got = await store.get(run.id)
    assert got is not None and got.result == "new" and got.state is TaskState.success
    # completing twice is refused too
    assert await store.finish([(lease2, fresh)]) == [False]


async def test_attempts_read_back_whole_after_every_write(store: Store) -> None:
    """A finished run's last attempt shares its times, worker and error with the run (a
    record may keep it once); every write and read gives all the attempts back as written."""
    run = queued()
    await store.enqueue([run])
    await store.claim("w1", None, 1, 10, T0)
    [back] = await store.reclaim(T0 + 11)  # attempt 0 interrupted: its own times and worker
    [lease] = await store.claim("w2", None, 1, 10, T0 + 12)
    done = lease.run.record()
    error = {"type": "ValueError", "message": "boom", "non_retryable": True}
    done.state, done.end, done.error = TaskState.failure, dt(T0 + 13), error
    done.attempts.append(
        Attempt(attempt=0, state=TaskState.failure, start=done.start, end=done.end,
                worker=done.worker, error=dict(error))
    )  # fmt: skip
    assert await store.finish([(lease, done)]) == [True]
    expected = [a.model_dump() for a in done.attempts]
    assert [a.state for a in back.attempts] == [TaskState.interrupted]
    assert len(expected) == 2 and expected[1]["worker"] == "w2"

    async def stored() -> list[dict[str, object]]:
        got = await store.get(run.id)
        assert got is not None
        return [a.model_dump() for a in got.attempts]

    assert await stored() == expected
    [listed] = [r for r in await store.query(RunQuery(state=TaskState.failure)) if r.id == run.id]
    assert [a.model_dump() for a in listed.attempts] == expected
    # a last attempt that differs from the run (it ended before the run was failed by hand)
    other = done.model_copy(update={"end": dt(T0 + 20), "error": None})
    other.attempts = [a.model_copy() for a in done.attempts]
    await store.save(other)
    got = await store.get(run.id)
    assert got is not None and got.end == dt(T0 + 20) and got.error is None
    assert [a.model_dump() for a in got.attempts] == expected
    await store.save_many([done])
    assert await stored() == expected


async def test_fields_kept_beside_the_record_read_back_as_written(store: Store) -> None:
    """Stores may keep some fields in columns or keys rather than in the record (id, task,
    queue, priority, queued, end): odd names, a run never queued and microsecond times all
    come back from every write and read path."""
    odd = 'ta"sk\\ü'
    live = queued(odd, queue='q"ü', priority=TaskPriority.high, params={"x": 1})
    live.queued = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert await store.enqueue([live]) == [live]
    [lease] = await store.claim("w", None, 1, 10, T0)
    assert (lease.run.task, lease.run.queue, lease.run.priority, lease.run.queued) == (
        odd, 'q"ü', TaskPriority.high, live.queued,
    )  # fmt: skip
    done = lease.run.record()
    done.state, done.end, done.result = TaskState.success, dt(T0 + 1.000001), [1, 2]
    assert await store.finish([(lease, done)]) == [True]
    never_queued = TaskRun(
        task=odd, queue="q2", state=TaskState.failure, start=dt(T0 + 2.5), end=dt(T0 + 3),
        worker="local", priority=TaskPriority.low,
    )  # fmt: skip
    await store.save(never_queued)
    for want in (done, never_queued):
        got = await store.get(want.id)
        assert got is not None and got.model_dump() == want.model_dump()
        [listed] = [r for r in await store.query(RunQuery(task=odd)) if r.id == want.id]
        assert listed.model_dump() == want.model_dump()
    cancelled = queued(odd, queue='q"ü')
    await store.enqueue([cancelled])
    aborted = await store.request_cancel(cancelled.id, T0 + 4)
    assert aborted is not None and aborted.state is TaskState.aborted
    assert (aborted.task, aborted.queue, aborted.end) == (odd, 'q"ü', dt(T0 + 4))
    assert aborted.queued == cancelled.queued


async def test_reclaim_leaves_live_leases(store: Store) -> None:
    await store.enqueue([queued()])
    [lease] = await store.claim("w", None, 1, 10, T0)
    assert await store.reclaim(T0 + 5) == []
    [reply] = await store.heartbeat([Beat(lease, 0.5, "half")], 10, T0 + 9)
    assert reply.alive and not reply.cancel_requested
    assert await store.reclaim(T0 + 15) == []
    got = await store.get(lease.run.id)
    assert got is not None and got.progress == 0.5 and got.progress_note == "half"
    assert [r.id for r in await store.reclaim(T0 + 20)] == [lease.run.id]
    [reply] = await store.heartbeat([Beat(lease)], 10, T0 + 21)
    assert not reply.alive


async def test_a_run_saved_under_a_lease_is_held_like_a_claimed_one(store: Store) -> None:
    """What `execute()` does: the run is written running under a lease, never claimable."""
    here = TaskRun(task="t", state=TaskState.running, queued=dt(T0), start=dt(T0), worker="local")
    lease = await store.save_leased(here, 10, T0)
    assert await store.claim("w", None, 5, 10, T0) == []
    [reply] = await store.heartbeat([Beat(lease, 0.5, "half")], 10, T0 + 8)
    assert reply.alive and not reply.cancel_requested
    assert await store.reclaim(T0 + 15) == []
    assert (await store.request_cancel(here.id, T0 + 16)) is not None
    [reply] = await store.heartbeat([Beat(lease)], 10, T0 + 16)
    assert reply.alive and reply.cancel_requested
    stale = await store.save_leased(here, 10, T0 + 17)  # the next attempt: a fresh lease
    done = here.model_copy(update={"state": TaskState.success, "end": dt(T0 + 18)})
    assert await store.finish([(lease, done)]) == [False]  # the first lease is gone
    assert await store.finish([(stale, done)]) == [True]
    got = await store.get(here.id)
    assert got is not None and got.state is TaskState.success


async def test_a_leased_run_whose_holder_died_is_reclaimed_and_claimed(store: Store) -> None:
    here = TaskRun(task="t", state=TaskState.running, queued=dt(T0), start=dt(T0), worker="local")
    lease = await store.save_leased(here, 10, T0)
    [back] = await store.reclaim(T0 + 11)
    assert back.id == here.id and back.state is TaskState.queued
    [again] = await store.claim("w", None, 1, 10, T0 + 12)
    assert again.run.id == here.id and again.run.attempts[-1].state is TaskState.interrupted
    assert await store.finish([(lease, here)]) == [False]


async def test_finish_requeue_with_execute_after(store: Store) -> None:
    await store.enqueue([queued()])
    [lease] = await store.claim("w", None, 1, 10, T0)
    again = lease.run.model_copy(
        update={"state": TaskState.queued, "retry_attempt": 1, "execute_after": dt(T0 + 5),
                "error": {"type": "ValueError", "message": "boom"}}
    )  # fmt: skip
    assert await store.finish([(lease, again)]) == [True]
    assert await store.claim("w", None, 1, 10, T0 + 1) == []
    [lease2] = await store.claim("w", None, 1, 10, T0 + 6)
    assert lease2.run.retry_attempt == 1 and lease2.run.error == again.error


async def test_batch_finish_mixed(store: Store) -> None:
    await store.enqueue([queued(), queued()])
    a, b = await store.claim("w", None, 2, 10, T0)
    await store.reclaim(T0 + 100)
    ok = await store.finish([(a, a.run.model_copy(update={"state": TaskState.success}))])
    assert ok == [False]
    c, d = await store.claim("w", None, 2, 10, T0 + 100)
    ok = await store.finish(
        [
            (c, c.run.model_copy(update={"state": TaskState.success})),
            (b, b.run.model_copy(update={"state": TaskState.failure})),
            (d, d.run.model_copy(update={"state": TaskState.failure})),
        ]
    )
    assert ok == [True, False, True]


async def test_cancel_queued_and_running(store: Store) -> None:
    q, r = queued(), queued(priority=TaskPriority.high)
    await store.enqueue([q, r])
    [lease] = await store.claim("w", None, 1, 10, T0)
    assert lease.run.id == r.id
    cancelled = await store.request_cancel(q.id, T0)
    assert cancelled is not None and cancelled.state is TaskState.aborted
    assert await store.claim("w", None, 5, 10, T0) == []
    running = await store.request_cancel(r.id, T0)
    assert running is not None and running.state is TaskState.running and running.cancel_requested
    [reply] = await store.heartbeat([Beat(lease)], 10, T0 + 1)
    assert reply.alive and reply.cancel_requested
    assert await store.request_cancel("missing", T0) is None


async def test_save_query_and_paging(store: Store) -> None:
    runs = []
    for i in range(7):
        run = TaskRun(
            id=f"{i:032x}", task="a" if i % 2 else "b", state=TaskState.success,
            queued=dt(T0 + i), end=dt(T0 + i), tags=["x"] if i < 3 else [],
            queue="q2" if i == 6 else "default",
        )  # fmt: skip
        runs.append(run)
        await store.save(run)
    everything = await store.query(RunQuery(limit=100))
    assert [r.id for r in everything] == [r.id for r in reversed(runs)]
    page1 = await store.query(RunQuery(limit=3))
    page2 = await store.query(RunQuery(limit=3, cursor=page1[-1].id))
    assert [r.id for r in page1 + page2] == [r.id for r in reversed(runs)][:6]
    assert {r.id for r in await store.query(RunQuery(task="a"))} == {runs[i].id for i in (1, 3, 5)}
    assert {r.id for r in await store.query(RunQuery(tags=("x",)))} == {
        runs[i].id for i in range(3)
    }
    assert [r.id for r in await store.query(RunQuery(queue="q2"))] == [runs[6].id]
    since = await store.query(RunQuery(since=dt(T0 + 5)))
    assert {r.id for r in since} == {runs[5].id, runs[6].id}
    before = await store.query(RunQuery(before=dt(T0 + 1)))
    assert [r.id for r in before] == [runs[0].id]
    assert await store.query(RunQuery(state=TaskState.failure)) == []
    assert await store.purge(T0 + 3) == 3
    assert len(await store.query(RunQuery())) == 4


async def test_purge_frees_dedup_keys(store: Store) -> None:
    await store.enqueue([queued(dedup_key="p")])
    [lease] = await store.claim("w", None, 1, 30, T0)
    done = lease.run.model_copy(update={"state": TaskState.success, "end": dt(T0)})
    await store.finish([(lease, done)])
    assert await store.purge(T0 + 1) == 1
    [again] = await store.enqueue([queued(dedup_key="p")])
    assert again.id != lease.run.id and await store.get(again.id) is not None


async def test_query_by_lineage(store: Store) -> None:
    root = TaskRun(task="p", state=TaskState.running)
    kids = [TaskRun(task="c", parent_id=root.id, root_run_id=root.id) for _ in range(3)]
    for run in [root, *kids]:
        await store.save(run)
    assert {r.id for r in await store.query(RunQuery(parent_id=root.id))} == {k.id for k in kids}
    assert len(await store.query(RunQuery(root_run_id=root.id))) == 4


async def test_queue_length(store: Store) -> None:
    await store.enqueue([queued(priority=TaskPriority.high), queued(), queued(), queued(queue="b")])
    counts = await store.queue_length(None)
    assert counts == {TaskPriority.high: 1, TaskPriority.medium: 3, TaskPriority.low: 0}
    assert (await store.queue_length("b"))[TaskPriority.medium] == 1


async def test_slots_limit_release_and_expiry(store: Store) -> None:
    assert await store.acquire_slot("t", "r1", 2, 10, T0)
    assert await store.acquire_slot("t", "r2", 2, 10, T0)
    assert await store.acquire_slot("t", "r1", 2, 10, T0)  # idempotent for the holder
    assert not await store.acquire_slot("t", "r3", 2, 10, T0)
    await store.release_slot("t", "r2")
    assert await store.acquire_slot("t", "r3", 2, 10, T0)
    assert not await store.acquire_slot("t", "r4", 2, 10, T0 + 5)
    # r1 and r3 stop beating: their slots expire
    assert await store.acquire_slot("t", "r4", 2, 10, T0 + 11)
    assert await store.acquire_slot("other", "r9", 1, 10, T0)


async def test_heartbeat_extends_slots_of_the_run(store: Store) -> None:
    await store.enqueue([queued()])
    [lease] = await store.claim("w", None, 1, 10, T0)
    assert await store.acquire_slot("t", lease.run.id, 1, 10, T0)
    await store.heartbeat([Beat(lease)], 10, T0 + 8)
    assert not await store.acquire_slot("t", "other", 1, 10, T0 + 12)
    assert await store.acquire_slot("t", "other", 1, 10, T0 + 19)


async def test_leader_lock(store: Store) -> None:
    assert await store.acquire_lock("leader", "a", 10, T0)
    assert not await store.acquire_lock("leader", "b", 10, T0 + 1)
    assert await store.acquire_lock("leader", "a", 10, T0 + 5)  # renew
    assert not await store.acquire_lock("leader", "b", 10, T0 + 14)
    assert await store.acquire_lock("leader", "b", 10, T0 + 16)  # expired: failover
    await store.release_lock("leader", "a")  # not the holder: no effect
    assert not await store.acquire_lock("leader", "a", 10, T0 + 17)
    await store.release_lock("leader", "b")
    assert await store.acquire_lock("leader", "a", 10, T0 + 17)


async def test_kv_with_expiry(store: Store) -> None:
    assert await store.kv_get("k", T0) is None
    await store.kv_set("k", b"\x00v", None, T0)
    await store.kv_set("e", b"x", 5, T0)
    assert await store.kv_get("k", T0) == b"\x00v"
    assert await store.kv_get("e", T0 + 4) == b"x"
    assert await store.kv_get("e", T0 + 6) is None
    await store.kv_delete("k")
    assert await store.kv_get("k", T0) is None


async def test_workers_seen_by_beats(store: Store) -> None:
    await store.worker_beat("w1", {"pid": 1}, 10, T0)
    await store.worker_beat("w2", {"pid": 2}, 10, T0 + 5)
    live = await store.workers(T0 + 12)
    assert [(w.worker, w.info) for w in live] == [("w2", {"pid": 2})]


async def test_worker_leave_is_not_live_any_more(store: Store) -> None:
    await store.worker_beat("w1", {"pid": 1}, 30, T0)
    await store.worker_beat("w2", {"pid": 2}, 30, T0)
    await store.worker_leave("w1")
    await store.worker_leave("never-seen")
    assert [w.worker for w in await store.workers(T0 + 1)] == ["w2"]


async def test_notifier_wakes_on_enqueue_and_finish(store: Store) -> None:
    with store.notifier.watch("queue") as woke:
        await store.enqueue([queued()])
        await asyncio.wait_for(woke.wait(), 5)
    [lease] = await store.claim("w", None, 1, 10, T0)
    with store.notifier.watch(f"run:{lease.run.id}") as changed:
        done = lease.run.model_copy(update={"state": TaskState.success})
        await store.finish([(lease, done)])
        await asyncio.wait_for(changed.wait(), 5)


async def test_result_and_error_roundtrip(store: Store) -> None:
    await store.enqueue([queued()])
    [lease] = await store.claim("w", None, 1, 10, T0)
    done = lease.run.model_copy(
        update={
            "state": TaskState.failure, "end": dt(T0 + 1),
            "result": {"nested": [1, 2.5, None, "x"]},
            "error": {"type": "ValueError", "message": "bad", "cause": None},
            "metrics": {"elapsed": 1.5}, "cache_hit": True,
        }
    )  # fmt: skip
    await store.finish([(lease, done)])
    got = await store.get(done.id)
    assert got is not None
    assert got.result == {"nested": [1, 2.5, None, "x"]}
    assert got.error == {"type": "ValueError", "message": "bad", "cause": None}
    assert got.metrics == {"elapsed": 1.5} and got.cache_hit
    assert got.end is not None and abs(got.end.timestamp() - (T0 + 1)) < 1e-3
    assert got.duration == timedelta(seconds=1).total_seconds()


async def test_thousands_of_concurrent_calls(store: Store) -> None:
    # a workflow fan-out: each child is its own enqueue + get, all at once (once exhausted
    # the Redis server's connections through an unbounded pool)
    runs = [queued() for _ in range(3000)]
    await asyncio.gather(*(store.enqueue([r]) for r in runs))
    got = await asyncio.gather(*(store.get(r.id) for r in runs))
    assert all(g is not None for g in got)


# -- queue control: pause, start-rate limits, stored schedules ----------------------------------


async def test_paused_queue_accepts_runs_but_is_not_claimed(store: Store) -> None:
    a, b = queued(queue="a"), queued(queue="b")
    await store.enqueue([a, b])
    await store.set_queue_paused("a", True)
    later = queued(queue="a")
    [accepted] = await store.enqueue([later])
    assert accepted is later
    assert await store.claim("w", ["a"], 10, 30, T0) == []
    assert [x.run.id for x in await store.claim("w", None, 10, 30, T0)] == [b.id]
    assert (await store.queue_settings())["a"].paused
    await store.set_queue_paused("a", False)
    got = await store.claim("w", ["a"], 10, 30, T0)
    assert {x.run.id for x in got} == {a.id, later.id}
    assert not (await store.queue_settings()).get("a", QueueSettings()).paused


async def test_pause_lets_running_runs_finish(store: Store) -> None:
    run = queued(queue="a")
    await store.enqueue([run])
    [lease] = await store.claim("w", None, 1, 30, T0)
    await store.set_queue_paused("a", True)
    [reply] = await store.heartbeat([Beat(lease)], 30, T0 + 1)
    assert reply.alive
    done = lease.run.model_copy(update={"state": TaskState.success, "end": dt(T0 + 2)})
    assert await store.finish([(lease, done)]) == [True]


async def test_queue_stats_count_depth_and_oldest(store: Store) -> None:
    await store.enqueue(
        [
            queued(queue="a", queued=dt(T0 - 50)),
            queued(queue="a", queued=dt(T0 - 10), priority=TaskPriority.high),
            queued(queue="b", queued=dt(T0 - 5), execute_after=dt(T0 + 60)),
        ]
    )
    stats = {s.name: s for s in await store.queue_stats()}
    assert stats["a"].depth == {TaskPriority.high: 1, TaskPriority.medium: 1, TaskPriority.low: 0}
    assert stats["a"].oldest_queued == T0 - 50
    assert stats["b"].oldest_queued == T0 - 5 and sum(stats["b"].depth.values()) == 1


async def test_rate_limit_holds_runs_back_until_a_slot_frees(store: Store) -> None:
    runs = [queued(queued=dt(T0 - 10 + i)) for i in range(5)]
    await store.enqueue(runs)
    limits = {"t": RateLimit(2, per=timedelta(seconds=10))}
    first = await store.claim("w", None, 10, 30, T0, rate_limits=limits)
    assert [x.run.id for x in first] == [runs[0].id, runs[1].id]
    assert getattr(first, "retry_at", None) == T0 + 10
    held = [await store.get(r.id) for r in runs[2:]]
    assert all(r is not None and r.state is TaskState.queued for r in held)
    assert [r.execute_after.timestamp() for r in held if r and r.execute_after] == [
        T0 + 10, T0 + 10, T0 + 20,
    ]  # fmt: skip
    assert all(r is not None and r.retry_attempt == 0 for r in held)
    assert await store.claim("w", None, 10, 30, T0 + 9.9, rate_limits=limits) == []
    second = await store.claim("w", None, 10, 30, T0 + 10, rate_limits=limits)
    assert [x.run.id for x in second] == [runs[2].id, runs[3].id]
    assert await store.claim("w", None, 10, 30, T0 + 19, rate_limits=limits) == []
    third = await store.claim("w", None, 10, 30, T0 + 20, rate_limits=limits)
    assert [x.run.id for x in third] == [runs[4].id]


async def test_rate_limit_holds_in_every_window_across_claimers(store: Store) -> None:
    await store.enqueue([queued(queued=dt(T0 - 100 + i)) for i in range(60)])
    limits = {"t": RateLimit(4, per=timedelta(seconds=10))}
    starts: list[float] = []
    for step in range(80):
        now = T0 + step * 0.5
        claims = await asyncio.gather(
            *(store.claim(f"w{i}", None, 3, 30, now, rate_limits=limits) for i in range(4))
        )
        starts += [now for batch in claims for _ in batch]
    assert len(starts) == 16  # 40 s at 4 per 10 s
    for at in starts:
        assert sum(1 for s in starts if at <= s < at + 10) <= 4


async def test_rate_limited_task_does_not_block_others(store: Store) -> None:
    slow = [queued(task="slow", queued=dt(T0 - 50 + i)) for i in range(5)]
    fast = [queued(task="fast", queued=dt(T0 - 10 + i)) for i in range(2)]
    await store.enqueue([*slow, *fast])
    limits = {"slow": RateLimit(1, per=timedelta(minutes=1))}
    got = await store.claim("w", None, 3, 30, T0, rate_limits=limits)
    assert [x.run.id for x in got] == [slow[0].id, fast[0].id, fast[1].id]


async def test_queue_rate_limit_is_stored_and_enforced(store: Store) -> None:
    await store.set_queue_rate_limit("q", RateLimit(1, per=timedelta(seconds=30)))
    assert (await store.queue_settings())["q"].rate_limit == RateLimit(1, timedelta(seconds=30))
    a, b = queued(task="a", queue="q"), queued(task="b", queue="q")
    await store.enqueue([a, b])
    assert [x.run.id for x in await store.claim("w", None, 5, 30, T0)] == [a.id]
    assert await store.claim("w", None, 5, 30, T0 + 29) == []
    assert [x.run.id for x in await store.claim("w", None, 5, 30, T0 + 30)] == [b.id]
    await store.set_queue_rate_limit("q", None)
    assert (await store.queue_settings()).get("q", QueueSettings()).rate_limit is None


async def test_stored_schedules_put_list_delete(store: Store) -> None:
    assert await store.stored_schedules() == {}
    await store.put_schedule("nightly", b'{"v": 1}')
    await store.put_schedule("nightly", b'{"v": 2}')
    await store.put_schedule("hourly", b'{"v": 3}')
    assert await store.stored_schedules() == {"nightly": b'{"v": 2}', "hourly": b'{"v": 3}'}
    assert await store.delete_schedule("nightly") is True
    assert await store.delete_schedule("nightly") is False
    assert list(await store.stored_schedules()) == ["hourly"]


# -- typed results: what the manager hands back on every store -----------------------------------
class Receipt(BaseModel):
    order: str
    total: float
    at: datetime


@dataclass
class Span:
    start: datetime
    hours: int


class Blob:
    """No JSON form at all: only the opt-in pickle serializer can keep it."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


@task
def receipt(order: str) -> Receipt:
    return Receipt(order=order, total=12.5, at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC))


@task
def span(hours: int) -> Span:
    return Span(start=datetime(2030, 1, 1, tzinfo=UTC), hours=hours)


@task
async def stamp() -> datetime:
    return datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


@task(serializer="pickle")
def wrap(blob: Blob) -> Blob:
    return Blob(blob.payload * 2)


@task
def unwrap_blob(blob: Blob) -> bytes:
    return blob.payload


async def test_results_come_back_as_the_declared_type(store: Store) -> None:
    manager = TaskManager(store, tasks=[receipt, span, stamp, wrap], poll_interval=0.1)
    executed = await manager.execute("receipt", order="A-1")
    assert executed.result == Receipt(
        order="A-1", total=12.5, at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    )
    assert (await manager.get_run(executed.id)).result == executed.result

    queued = await manager.queue("span", hours=3)
    await run_burst(manager)
    waited = await manager.wait(queued.id)
    assert waited.result == Span(start=datetime(2030, 1, 1, tzinfo=UTC), hours=3)
    assert (await manager.get_run(queued.id)).result == waited.result

    consumer = TaskConsumer(manager, grace_seconds=5)
    serving = asyncio.create_task(consumer.run())
    try:
        stamped = await manager.queue_and_wait("stamp", timeout=30)
        wrapped = await manager.queue_and_wait("wrap", blob=Blob(b"ab"), timeout=30)
    finally:
        await consumer.stop()
        await serving
    assert stamped.result == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert isinstance(wrapped.result, Blob) and wrapped.result.payload == b"abab"
    # what the store keeps stays JSON: the pickled value sits in a one-key envelope
    raw = await store.get(wrapped.id)
    assert raw is not None and set(raw.result) == {"__pickle__"}
    assert set(raw.params["blob"]) == {"__pickle__"}


async def test_manager_wide_pickle_serializer(store: Store) -> None:
    manager = TaskManager(store, tasks=[unwrap_blob], serializer="pickle")
    done = await manager.execute("unwrap_blob", blob=Blob(b"xyz"))
    assert done.state is TaskState.success and done.result == b"xyz"
    assert (await manager.get_run(done.id)).result == b"xyz"


@pytest.mark.parametrize("how", ["broken", "wrong_shape"])
async def test_an_unreadable_record_fails_alone_and_leaves_the_queue(
    persistent_store: Store, how: Damage
) -> None:
    store = persistent_store
    a, bad, c = queued(), queued(), queued()
    await store.enqueue([a, bad, c])
    await damage_record(store, bad.id, how)

    with pytest.raises(CorruptRecordError) as caught:
        await store.get(bad.id)
    assert caught.value.run_id == bad.id and bad.id in str(caught.value)
    listed = {run.id: run for run in await store.query(RunQuery())}
    assert set(listed) == {a.id, bad.id, c.id}  # the bad id shows as a stand-in row
    assert listed[bad.id].state is TaskState.failure

    leases = await store.claim("w", None, 10, 30, T0)
    assert sorted(lease.run.id for lease in leases) == sorted([a.id, c.id])
    assert taken_count(leases) == 3  # the unreadable run was taken too: failed, not leased
    failed = await store.get(bad.id)
    assert failed is not None and failed.state is TaskState.failure and failed.end is not None
    assert failed.error is not None and failed.error["type"] == "CorruptRecordError"
    assert "could not be read" in failed.error["message"]
    assert sum((await store.queue_length(None)).values()) == 0
    assert await store.claim("w", None, 10, 30, T0 + 1) == []
    done = [(lease, lease.run.model_copy(update={"state": TaskState.success})) for lease in leases]
    assert await store.finish(done) == [True, True]


async def test_an_unreadable_running_record_is_failed_by_reclaim_or_the_next_claim(
    persistent_store: Store,
) -> None:
    store = persistent_store
    run = queued()
    await store.enqueue([run])
    [lease] = await store.claim("w", None, 1, 30, T0)
    await damage_record(store, run.id, "wrong_shape")
    assert await store.reclaim(T0 + 60) == []  # never handed out as a requeued run
    assert await store.claim("w2", None, 10, 30, T0 + 60) == []
    failed = await store.get(run.id)
    assert failed is not None and failed.state is TaskState.failure
    assert failed.error is not None and failed.error["type"] == "CorruptRecordError"
    assert await store.finish([(lease, lease.run)]) == [False]  # the old lease is gone


def finished(task: str, state: TaskState, end: float, **kw: object) -> TaskRun:
    return TaskRun(
        task=task,
        state=state,
        queued=dt(T0),
        start=dt(T0),
        end=dt(end),
        **kw,  # type: ignore[arg-type]
    )


async def test_purge_filters_takes_children_and_run_logs_and_spares_active_runs(
    store: Store,
) -> None:
    root = finished("p", TaskState.success, T0)
    family = {"parent_id": root.id, "root_run_id": root.id}
    kid = finished("c", TaskState.success, T0, **family)
    late_kid = finished("c", TaskState.failure, T0 + 500, **family)  # goes with its root
    live_kid = TaskRun(task="c", state=TaskState.running, start=dt(T0), **family)
    old_failure = finished("t", TaskState.failure, T0)
    other = finished("u", TaskState.success, T0)
    recent = finished("t", TaskState.success, T0 + 1000)
    old_queued = queued()
    everything = [root, kid, late_kid, live_kid, old_failure, other, recent, old_queued]
    for run in everything:
        await store.save(run)
        await store.kv_set(f"runlog:{run.id}", b"log", None, T0)
    cutoff = T0 + 100

    assert await store.purge(cutoff, state=TaskState.failure) == 1  # old_failure
    assert await store.purge(cutoff, task="u") == 1  # other
    assert await store.purge(cutoff, skip_tasks=("p",)) == 1  # kid (a child on its own)
    assert await store.purge(cutoff) == 2  # root, and late_kid with it
    assert await store.purge(cutoff) == 0

    gone = {root.id, kid.id, late_kid.id, old_failure.id, other.id}
    for run in everything:
        kept = await store.get(run.id)
        log = await store.kv_get(f"runlog:{run.id}", T0)
        if run.id in gone:
            assert kept is None and log is None, run
        else:
            assert kept is not None and log == b"log", run
    assert {r.id for r in await store.query(RunQuery())} == {live_kid.id, recent.id, old_queued.id}


async def test_purge_finds_finished_runs_whatever_their_ids(store: Store) -> None:
    """Ids made by taskloom sort by creation time and runs end after they are made; purge may
    rely on that only where it holds. Ids chosen by hand, an id whose time is later than the
    run's end, and such an id quoted in JSON must all be found."""
    cutoff = T0 + 100
    old = [
        finished("t", TaskState.success, T0),  # a made id
        finished("t", TaskState.failure, T0, id="custom-run-1"),
        finished("t", TaskState.aborted, T0, id="F" * 32),  # upper case: not a made id
        finished("t", TaskState.success, T0, id="f" * 32),  # its time is centuries away
        finished("t", TaskState.rate_limited, T0, id='000000000000 "quoted" \\ id'),
        finished("t", TaskState.success, 1_000_000_000.0),  # ended before its id was made
    ]
    young = [
        finished("t", TaskState.success, T0 + 500),
        finished("t", TaskState.success, T0 + 500, id="custom-run-2"),
    ]
    for run in old + young:
        await store.save(run)
    got = await store.get(old[4].id)
    assert got is not None and got.id == old[4].id
    assert await store.purge(1_000_000_001.0) == 1
    assert await store.purge(cutoff, limit=2) == 2
    assert await store.purge(cutoff) == 3
    assert await store.purge(cutoff) == 0
    left = {r.id for r in await store.query(RunQuery())}
    assert left == {r.id for r in young}
    assert await store.purge(T0 + 501) == 2


async def test_purge_takes_any_cutoff(store: Store) -> None:
    runs = [finished("t", TaskState.success, T0), finished("t", TaskState.failure, T0 + 1e9)]
    for run in runs:
        await store.save(run)
    await store.enqueue([queued()])
    assert await store.purge(0.0) == 0
    assert await store.purge(float("-inf")) == 0
    assert await store.purge(float("inf"), state=TaskState.queued) == 0  # only finished runs
    assert await store.purge(float("inf")) == 2
    assert len(await store.query(RunQuery(state=TaskState.queued))) == 1


async def test_purge_works_in_batches(store: Store) -> None:
    for _ in range(5):
        await store.save(finished("t", TaskState.success, T0))
    assert [await store.purge(T0 + 1, limit=2) for _ in range(4)] == [2, 2, 1, 0]


async def _full_count(store: Store) -> dict[tuple[str, str, TaskState, TaskPriority], int]:
    tally: dict[tuple[str, str, TaskState, TaskPriority], int] = {}
    for run in await store.query(RunQuery(limit=100_000)):
        key = (run.task, run.queue, run.state, run.priority)
        tally[key] = tally.get(key, 0) + 1
    return tally


async def _assert_counts_exact(store: Store) -> None:
    want = await _full_count(store)
    got = {(c.task, c.queue, c.state, c.priority): c.n for c in await store.counts()}
    assert got == want
    for queue in (None, "q1", "q2"):
        depth = dict.fromkeys(TaskPriority, 0)
        for (_, q, state, priority), n in want.items():
            if state is TaskState.queued and queue in (None, q):
                depth[priority] += n
        assert await store.queue_length(queue) == depth, queue
    stats = {s.name: s.depth for s in await store.queue_stats()}
    for name, depth in stats.items():
        assert depth == await store.queue_length(name)
    assert sum(sum(d.values()) for d in stats.values()) == sum(
        (await store.queue_length(None)).values()
    )


async def test_counts_match_a_full_count_after_a_random_mix_of_operations(store: Store) -> None:
    import random

    rng = random.Random(17)
    now = T0
    leases: list[Lease] = []
    ids: list[str] = []
    for step in range(120):
        now += 1
        op = rng.choice(
            ["enqueue", "enqueue", "claim", "finish", "finish", "cancel", "save", "reclaim"]
        )
        if op == "enqueue":
            batch = [
                queued(
                    rng.choice(["a", "b"]),
                    queue=rng.choice(["q1", "q2"]),
                    priority=rng.choice(list(TaskPriority)),
                    dedup_key=rng.choice([None, None, "k1", "k2"]),
                    execute_after=dt(now + 5) if rng.random() < 0.2 else None,
                )
                for _ in range(rng.randint(1, 4))
            ]
            ids += [r.id for r in batch]
            await store.enqueue(batch)
        elif op == "claim":
            leases += await store.claim("w", rng.choice([None, ["q1"]]), rng.randint(1, 3), 10, now)
        elif op == "finish" and leases:
            lease = leases.pop(rng.randrange(len(leases)))
            state = rng.choice([TaskState.success, TaskState.failure, TaskState.queued])
            update: dict[str, object] = {"state": state, "end": dt(now)}
            if state is TaskState.queued:
                update = {"state": state, "execute_after": dt(now + 2), "end": None}
            await store.finish([(lease, lease.run.model_copy(update=update))])
        elif op == "cancel" and ids:
            await store.request_cancel(rng.choice(ids), now)
        elif op == "save":
            run = finished(rng.choice(["a", "c"]), TaskState.success, now, queue="q2")
            if ids and rng.random() < 0.5:  # overwrite one: its old counts must go
                got = await store.get(rng.choice(ids))
                if got is not None and got.state not in ACTIVE_STATES:
                    run = got.model_copy(update={"state": TaskState.aborted, "task": "c"})
            ids.append(run.id)
            await store.save(run)
        elif op == "reclaim":
            now += 20  # every lease expires
            await store.reclaim(now)
            leases.clear()
        if step % 10 == 9:
            await _assert_counts_exact(store)
    await store.purge(now + 1, limit=7)
    await _assert_counts_exact(store)
    await store.purge(now + 1)
    await _assert_counts_exact(store)


async def test_every_write_that_inserts_counts_and_tags_the_new_run(store: Store) -> None:
    tagged = queued("a", queue="q1", tags=["x"])
    await store.enqueue([tagged])  # the one-run path
    await store.enqueue([queued("a", queue="q1"), queued("b", queue="q2", tags=["x", "y"])])
    await store.save(finished("a", TaskState.success, T0 + 1, queue="q2", tags=["y"]))
    again = finished("c", TaskState.failure, T0 + 2, queue="q1", tags=["x"])
    overwrite = tagged.model_copy(update={"state": TaskState.aborted, "end": dt(T0 + 3)})
    # a new run, an existing one and the same new id twice, in one call
    await store.save_many([again, overwrite, again.model_copy(update={"tags": ["y"]})])
    await store.save_leased(queued("b", queue="q2").model_copy(update={"state": TaskState.running}),
                            30.0, T0)  # fmt: skip
    await _assert_counts_exact(store)
    by_tag = {t: sorted(r.id for r in await store.query(RunQuery(tags=(t,)))) for t in "xy"}
    runs = await store.query(RunQuery())
    for tag in "xy":
        assert by_tag[tag] == sorted(r.id for r in runs if tag in r.tags), tag


async def test_listings_page_newest_first_across_queues_tags_and_saves(store: Store) -> None:
    runs = [
        finished("t", TaskState.success, T0 + i, queue=f"q{i % 3}", tags=["odd"] if i % 2 else [])
        for i in range(9)
    ]
    for run in runs:
        await store.save(run)
    newest = sorted((r.id for r in runs), reverse=True)
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.query(RunQuery(limit=2, cursor=cursor))
        if not page:
            break
        seen += [r.id for r in page]
        cursor = page[-1].id
    assert seen == newest
    odd = [r.id for r in runs if r.tags]
    assert [r.id for r in await store.query(RunQuery(tags=("odd",)))] == sorted(odd, reverse=True)
    page = await store.query(RunQuery(tags=("odd",), limit=2, cursor=sorted(odd)[-1]))
    assert [r.id for r in page] == sorted(odd, reverse=True)[1:3]
    # a record saved with other tags leaves the old tag's listing and joins the new one's
    moved = runs[1].model_copy(update={"tags": ["even-now"]})
    await store.save(moved)
    assert moved.id not in {r.id for r in await store.query(RunQuery(tags=("odd",)))}
    assert [r.id for r in await store.query(RunQuery(tags=("even-now",)))] == [moved.id]
    assert [r.id for r in await store.query(RunQuery(queue="q1"))] == sorted(
        (r.id for r in runs if r.queue == "q1"), reverse=True
    )
    await store.purge(T0 + 100)
    assert await store.query(RunQuery(tags=("odd",))) == []
    assert await store.query(RunQuery()) == []


async def test_save_many_replaces_records_and_drops_leases_in_one_call(store: Store) -> None:
    held = queued()
    await store.enqueue([held])
    [lease] = await store.claim("w", None, 1, 30, T0)
    fresh = [finished("t", TaskState.success, T0 + i, queue="q2") for i in range(3)]
    keyed = TaskRun(task="k", state=TaskState.running, start=dt(T0), dedup_key="only")
    done = lease.run.model_copy(update={"state": TaskState.success, "end": dt(T0 + 5)})
    await store.save_many([*fresh, keyed, done])
    for run in [*fresh, keyed, done]:
        got = await store.get(run.id)
        assert got is not None and got.state is run.state and got.queue == run.queue
    assert await store.finish([(lease, lease.run)]) == [False]  # the save dropped the lease
    [same] = await store.enqueue([queued(dedup_key="only")])
    assert same.id == keyed.id  # the saved active run holds its dedup key
    await _assert_counts_exact(store)
    await store.save_many([])


async def test_a_parents_children_follow_saves_and_purges(store: Store) -> None:
    """Listing by parent (what a parent's first child asks) sees a child saved under another
    parent move, and a purged child go."""
    a, b = queued(), queued()
    child = queued(parent_id=a.id, root_run_id=a.id)
    await store.enqueue([a, b, child])
    assert [r.id for r in await store.query(RunQuery(parent_id=a.id))] == [child.id]
    moved = child.model_copy(update={"parent_id": b.id, "root_run_id": b.id})
    await store.save(moved)
    assert await store.query(RunQuery(parent_id=a.id)) == []
    assert [r.id for r in await store.query(RunQuery(parent_id=b.id))] == [child.id]
    done = moved.model_copy(update={"state": TaskState.success, "end": dt(T0 + 1)})
    await store.save(done)
    await store.purge(T0 + 2, limit=100)
    assert await store.query(RunQuery(parent_id=b.id)) == []
