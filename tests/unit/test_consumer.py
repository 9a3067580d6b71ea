"""TaskConsumer semantics on the memory store: retries, limits, timeouts, drain, cancel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from taskloom import (
    NonRetryableError,
    RateLimitError,
    Retry,
    RetryPolicy,
    TaskConsumer,
    TaskManager,
    TaskPriority,
    TaskRun,
    TaskState,
    task,
)
from taskloom.store.base import Lease
from taskloom.store.memory import MemoryStore
from taskloom.testing import FakeClock, run_burst


async def test_retry_backoff_on_fake_clock() -> None:
    calls: list[int] = []

    @task(retry=RetryPolicy(max_attempts=3, wait=10, backoff=2, max_wait=100))
    async def shaky(ctx: TaskRun) -> str:
        calls.append(ctx.retry_attempt)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    clock = FakeClock()
    async with TaskManager("memory://", tasks=[shaky], clock=clock) as m:
        run = await m.queue("shaky")
        await run_burst(m, check=False)
        r = await m.get_run(run.id)
        assert r.state is TaskState.queued and r.retry_attempt == 1
        assert r.execute_after is not None and r.execute_after.timestamp() == clock.now + 10
        assert r.failure is not None and r.failure.type_name == "ConnectionError"
        clock.advance(9)
        await run_burst(m, check=False)
        assert calls == [0]  # not due yet
        clock.advance(1)
        await run_burst(m, check=False)
        r = await m.get_run(run.id)
        assert r.execute_after is not None and r.execute_after.timestamp() == clock.now + 20
        clock.advance(20)
        await run_burst(m)
        r = await m.get_run(run.id)
    assert r.state is TaskState.success and r.result == "ok" and calls == [0, 1, 2]
    assert [a.state for a in r.attempts] == [
        TaskState.failure,
        TaskState.failure,
        TaskState.success,
    ]


async def test_exceptions_filter_and_exhaustion() -> None:
    policy = RetryPolicy(max_attempts=2, wait=0, exceptions=(ConnectionError,))

    @task(retry=policy)
    def wrong_kind() -> None:
        raise ValueError("not retried")

    @task(retry=policy)
    def always() -> None:
        raise ConnectionError("down")

    async with TaskManager("memory://", tasks=[wrong_kind, always]) as m:
        a = await m.queue("wrong_kind")
        b = await m.queue("always")
        await run_burst(m, check=False)
        ra, rb = await m.get_run(a.id), await m.get_run(b.id)
    assert ra.state is TaskState.failure and ra.retry_attempt == 0
    assert rb.state is TaskState.failure and rb.retry_attempt == 1 and len(rb.attempts) == 2


async def test_retry_and_non_retryable_raised_by_task() -> None:
    clock = FakeClock()

    @task(retry=5)
    def later(ctx: TaskRun) -> str:
        if ctx.retry_attempt == 0:
            raise Retry(after=60)
        return "done"

    @task(retry=5)
    def give_up() -> None:
        raise NonRetryableError("bad input")

    async with TaskManager("memory://", tasks=[later, give_up], clock=clock) as m:
        a, b = await m.queue("later"), await m.queue("give_up")
        await run_burst(m, check=False)
        ra = await m.get_run(a.id)
        assert ra.state is TaskState.queued
        assert ra.execute_after is not None and ra.execute_after.timestamp() == clock.now + 60
        assert (await m.get_run(b.id)).state is TaskState.failure
        clock.advance(60)
        await run_burst(m)
        assert (await m.get_run(a.id)).result == "done"


async def test_async_timeout_cancels_and_is_retried() -> None:
    cancelled = asyncio.Event()

    @task(timeout_seconds=0.05, retry=RetryPolicy(max_attempts=2, wait=0))
    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with TaskManager("memory://", tasks=[hangs]) as m:
        run = await m.queue("hangs")
        await run_burst(m, check=False)
        r = await m.get_run(run.id)
    assert cancelled.is_set()
    assert r.state is TaskState.failure and r.retry_attempt == 1
    assert r.failure is not None and r.failure.type_name == "TaskTimeoutError"
    assert [a.error["type"] for a in r.attempts if a.error] == ["TaskTimeoutError"] * 2


async def test_sync_timeout_fails_on_time_and_frees_slot() -> None:
    release = threading.Event()

    @task(timeout_seconds=0.05, max_concurrency=1)
    def blocks() -> str:
        release.wait(10)
        return "late"

    @task(max_concurrency=1, name="blocks2")
    def quick() -> str:
        return "quick"

    async with TaskManager("memory://", tasks=[blocks, quick]) as m:
        run = await m.queue("blocks")
        await run_burst(m, check=False)
        r = await m.get_run(run.id)
        assert r.state is TaskState.failure and r.failure is not None
        assert r.failure.type_name == "TaskTimeoutError"
        # the slot of `blocks` was released although its thread still runs
        assert await m.store.acquire_slot("task:blocks", "probe", 1, 10, m.clock())
        release.set()


async def test_max_concurrency_across_two_consumers() -> None:
    active = 0
    peak = 0
    gate = asyncio.Event()

    @task(max_concurrency=2, rate_limit_retry=RetryPolicy(max_attempts=None, wait=0.01, backoff=1))
    async def limited(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active >= 2:
            gate.set()
        await gate.wait()
        await asyncio.sleep(0)
        active -= 1
        return i

    async with TaskManager("memory://", tasks=[limited]) as m:
        runs = await m.queue_many("limited", [{"i": i} for i in range(8)])
        async with TaskConsumer(m, max_concurrent_tasks=4), TaskConsumer(m, max_concurrent_tasks=4):
            done = [await m.wait(r.id, timeout=10) for r in runs]
    assert all(r.state is TaskState.success for r in done)
    assert peak == 2
    assert any(r.rate_limit_attempt > 0 for r in done)
    assert all(r.retry_attempt == 0 for r in done)


async def test_rate_limit_error_without_policy_ends_rate_limited() -> None:
    @task
    def busy() -> None:
        raise RateLimitError("upstream says 429")

    async with TaskManager("memory://", tasks=[busy]) as m:
        run = await m.queue("busy")
        await run_burst(m, check=False)
        assert (await m.get_run(run.id)).state is TaskState.rate_limited


async def test_priorities_then_fifo() -> None:
    order: list[str] = []

    @task
    def rec(tag: str) -> None:
        order.append(tag)

    async with TaskManager("memory://", tasks=[rec]) as m:
        await m.queue("rec", tag="low", priority=TaskPriority.low)
        await m.queue("rec", tag="m1")
        await m.queue("rec", tag="high", priority=TaskPriority.high)
        await m.queue("rec", tag="m2")
        await run_burst(m, max_concurrent_tasks=1)
    assert order == ["high", "m1", "m2", "low"]


async def test_named_queues() -> None:
    @task
    def noop() -> None: ...

    async with TaskManager("memory://", tasks=[noop]) as m:
        a = await m.queue("noop", queue="a")
        b = await m.queue("noop", queue="b")
        await TaskConsumer(m, queues=["a"]).run(burst=True)
        assert (await m.get_run(a.id)).state is TaskState.success
        assert (await m.get_run(b.id)).state is TaskState.queued


async def test_drain_interrupts_and_requeues_without_counting() -> None:
    started = asyncio.Event()

    @task
    async def forever(ctx: TaskRun) -> None:
        started.set()
        await asyncio.Event().wait()

    async with TaskManager("memory://", tasks=[forever]) as m:
        run = await m.queue("forever")
        consumer = TaskConsumer(m, grace_seconds=0.05)
        serving = asyncio.create_task(consumer.run())
        await started.wait()
        await consumer.stop()
        await serving
        r = await m.get_run(run.id)
    assert r.state is TaskState.queued and r.retry_attempt == 0
    assert r.attempts[-1].state is TaskState.interrupted
    assert r.execute_after is not None


async def test_cancel_running_run() -> None:
    started = asyncio.Event()
    saw_cancel = asyncio.Event()

    @task
    async def long(ctx: TaskRun) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():
                saw_cancel.set()
            raise

    async with TaskManager("memory://", tasks=[long]) as m:
        run = await m.queue("long")
        async with TaskConsumer(m):
            await started.wait()
            await m.cancel(run.id)
            r = await m.wait(run.id, timeout=5)
    assert r.state is TaskState.aborted and saw_cancel.is_set()


async def test_cancel_queued_never_runs() -> None:
    ran = []

    @task
    def never() -> None:
        ran.append(1)

    async with TaskManager("memory://", tasks=[never]) as m:
        run = await m.queue("never")
        await m.cancel(run.id)
        await run_burst(m, check=False)
        assert (await m.get_run(run.id)).state is TaskState.aborted and ran == []


async def test_lost_lease_completes_exactly_once() -> None:
    clock = FakeClock()
    first_started = asyncio.Event()
    executions: list[str] = []

    @task
    async def slow(ctx: TaskRun) -> str:
        executions.append(ctx.worker or "")
        if len(executions) == 1:
            first_started.set()
            await asyncio.Event().wait()  # the stuck worker
        return ctx.worker or ""

    async with TaskManager("memory://", tasks=[slow], clock=clock, lease_seconds=10) as m:
        run = await m.queue("slow")
        stuck = TaskConsumer(m, worker_id="stuck", heartbeat_interval=3600)
        serving = asyncio.create_task(stuck.run())
        await first_started.wait()
        clock.advance(11)  # the stuck worker missed its heartbeats: lease expired
        await m.store.reclaim(clock())
        await TaskConsumer(m, worker_id="rescuer").run(burst=True)
        r = await m.get_run(run.id)
        assert r.state is TaskState.success and r.result == "rescuer"
        await stuck._beat_once()  # the stuck worker learns it lost the lease
        await stuck.stop()
        await serving
        final = await m.get_run(run.id)
    assert final.result == "rescuer" and executions == ["stuck", "rescuer"]
    assert [a.state for a in final.attempts] == [TaskState.interrupted, TaskState.success]
    assert stuck.lost_leases == 1


async def test_worker_survives_bad_runs() -> None:
    @task
    def unencodable() -> object:
        return object()

    @task
    def fine() -> int:
        return 1

    async with TaskManager("memory://", tasks=[unencodable, fine]) as m:
        bad = await m.queue("unencodable")
        good = await m.queue("fine")
        # a run of a task this worker does not know
        ghost = m.new_run("fine", {})
        ghost.task = "ghost"
        await m.store.enqueue([ghost])
        await run_burst(m, check=False)
        rb, rg, rx = await m.get_run(bad.id), await m.get_run(good.id), await m.get_run(ghost.id)
    assert rb.state is TaskState.failure and rb.failure is not None
    assert (
        rb.failure.type_name == "ResultEncodingError" and "cannot be encoded" in rb.failure.message
    )
    assert rg.state is TaskState.success
    assert rx.state is TaskState.failure and rx.failure is not None
    assert rx.failure.type_name == "UnknownTaskError"


async def test_progress_reaches_the_store() -> None:
    reported = asyncio.Event()
    finish = asyncio.Event()

    @task
    async def steps(ctx: TaskRun) -> None:
        ctx.set_progress(0.5, "half way")
        reported.set()
        await finish.wait()

    async with TaskManager("memory://", tasks=[steps]) as m:
        run = await m.queue("steps")
        async with TaskConsumer(m, heartbeat_interval=3600) as consumer:
            await reported.wait()
            await consumer._beat_once()
            mid = await m.get_run(run.id)
            assert mid.progress == 0.5 and mid.progress_note == "half way"
            finish.set()
            done = await m.wait(run.id, timeout=5)
    assert done.progress == 1.0 and done.progress_note == "half way"


async def test_queue_and_wait_with_background_consumer() -> None:
    @task
    async def echo(x: int) -> int:
        return x

    async with TaskManager("memory://", tasks=[echo]) as m, TaskConsumer(m):
        results = await asyncio.gather(
            *(m.queue_and_wait("echo", x=i, timeout=5) for i in range(20))
        )
    assert [r.result for r in results] == list(range(20))


async def test_a_finished_run_claims_again_only_if_the_last_claim_was_full() -> None:
    """A claim that left slots free took every due run: the run finishing does not claim
    again (its enqueue's wake-up brings the next). A full claim may have left runs behind:
    each finished run then claims again, with no poll interval to wait for."""

    @task
    async def echo(x: int) -> int:
        return x

    async with TaskManager("memory://", tasks=[echo], poll_interval=60) as m:
        store = m.store
        original, claims = store.claim, []

        async def counting(*args: object, **kwargs: object) -> list[Lease]:
            leases: list[Lease] = await original(*args, **kwargs)  # type: ignore[arg-type]
            claims.append(len(leases))
            return leases

        store.claim = counting  # type: ignore[method-assign]
        async with TaskConsumer(m, max_concurrent_tasks=4):
            for i in range(3):  # one at a time: one claim each, none after it finishes
                await m.queue_and_wait("echo", x=i, timeout=5)
            trickle = list(claims)
            claims.clear()
            # more due runs than slots: each finished one claims the next at once
            runs = await m.queue_many("echo", [{"x": i} for i in range(10)])
            done = await asyncio.gather(*(m.wait(r.id, timeout=5) for r in runs))
    # one claim per run; before them, at most the start's claim, which found nothing
    assert trickle[-3:] == [1, 1, 1] and trickle[:-3] in ([], [0])
    assert [r.result for r in done] == list(range(10))
    assert sum(claims) == 10 and claims[0] == 4


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_consumer_on_sqlite(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("taskloom.store.sqlite")

    @task
    async def echo(x: int) -> int:
        return x

    async with TaskManager(f"sqlite:///{tmp_path}/q.db", tasks=[echo]) as m:
        runs = await m.queue_many("echo", [{"x": i} for i in range(50)])
        await run_burst(m)
        assert [(await m.get_run(r.id)).result for r in runs] == list(range(50))


async def test_worker_survives_a_store_outage() -> None:
    from taskloom.errors import StoreUnavailableError
    from taskloom.store.memory import MemoryStore

    class Flaky(MemoryStore):
        outages = 3

        async def claim(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.outages:
                self.outages -= 1
                raise StoreUnavailableError("server restarting")
            return await super().claim(*args, **kwargs)

    @task
    async def echo(x: int) -> int:
        return x

    store = Flaky()
    async with TaskManager(store, tasks=[echo]) as m:
        run = await m.queue("echo", x=7)
        await run_burst(m)
        assert (await m.get_run(run.id)).result == 7 and store.outages == 0


class _MalformedFinish(MemoryStore):
    """A store whose finish answers with the wrong number of results."""

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        await super().finish(items)
        return []


@task
async def _noop() -> None:
    """Does nothing."""


@pytest.mark.parametrize("burst", [True, False])
async def test_a_dead_background_task_stops_the_consumer_with_its_error(burst: bool) -> None:
    async with TaskManager(_MalformedFinish(), tasks=[_noop]) as m:
        await m.queue("_noop")
        consumer = TaskConsumer(m, grace_seconds=1)
        with pytest.raises(ValueError, match="zip"):
            await asyncio.wait_for(consumer.run(burst=burst), 20)
        assert consumer.active == 0


async def test_a_dead_background_task_ends_the_async_with_block() -> None:
    async with TaskManager(_MalformedFinish(), tasks=[_noop]) as m:
        with pytest.raises(ValueError, match="zip"):
            async with TaskConsumer(m, grace_seconds=1) as consumer:
                await m.queue("_noop")
                await asyncio.wait_for(consumer._done.wait(), 20)


async def test_the_manager_reports_live_workers_and_pings_the_store() -> None:
    async with TaskManager("memory://", tasks=[_noop]) as m:
        await m.ping()
        assert await m.workers() == []
        async with TaskConsumer(m) as consumer:
            await m.queue_and_wait("_noop", timeout=10)
            assert [w.worker for w in await m.workers()] == [consumer.worker_id]


class _SwallowingReclaim(MemoryStore):
    """A store call that swallows the cancel that reaches it, as a client library can when
    the cancel lands just as its reply arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = asyncio.Event()

    async def reclaim(self, now: float) -> list[TaskRun]:
        self.stuck.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return []  # swallowed
        return []


async def test_stop_ends_a_background_loop_whose_cancel_was_swallowed() -> None:
    store = _SwallowingReclaim()
    async with TaskManager(store, tasks=[_noop]) as m:
        consumer = TaskConsumer(m, grace_seconds=1, heartbeat_interval=0.01)
        running = asyncio.create_task(consumer.run())
        await asyncio.wait_for(store.stuck.wait(), 20)  # the heartbeat loop is inside reclaim
        await asyncio.wait_for(consumer.stop(), 20)  # hung here before: the loop went on
        await asyncio.wait_for(running, 20)
