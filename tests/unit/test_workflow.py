"""Child runs inside a running task: ids, fan-out, replay, errors, caching, limits, queueing."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from rich.console import Console

from taskloom import (
    Cache,
    InvalidParamsError,
    PayloadTooLargeError,
    TaskConsumer,
    TaskFailedError,
    TaskManager,
    TaskRun,
    TaskState,
    UnknownTaskError,
    task,
)
from taskloom.interface import input_hash
from taskloom.run_tree import format_seconds, run_tree
from taskloom.store import Store
from taskloom.testing import run_burst
from taskloom.workflow import child_run_id

HEX32 = re.compile(r"[0-9a-f]{32}")


@task
async def double(x: int) -> int:
    return 2 * x


@task
async def fan_out(ctx: TaskRun, n: int) -> list[int]:
    return list(await asyncio.gather(*(double.aio(i) for i in range(n))))


def manager(*tasks: object, **options: object) -> TaskManager:
    return TaskManager("memory://", tasks=tasks, **options)  # type: ignore[arg-type]


# -- ids and fan-out --------------------------------------------------------------------------------
def test_child_id_is_deterministic_32_hex_and_keyed_by_parent_position_and_inputs() -> None:
    parent = "0193a1b2c3d4" + "e" * 20
    a = child_run_id(parent, 0, input_hash({"x": 1}))
    assert HEX32.fullmatch(a) and a == child_run_id(parent, 0, input_hash({"x": 1}))
    assert a.startswith(parent[:12])  # the family sorts with its parent
    assert a != child_run_id(parent, 1, input_hash({"x": 1}))
    assert a != child_run_id(parent, 0, input_hash({"x": 2}))
    assert a != child_run_id("0193a1b2c3d4" + "f" * 20, 0, input_hash({"x": 1}))
    assert HEX32.fullmatch(child_run_id("my-own-id", 3, input_hash({})))


async def test_fan_out_of_1000_children_returns_results_in_order() -> None:
    async with manager(double, fan_out) as m:
        run = await m.execute("fan_out", n=1000)
        assert run.state is TaskState.success, run.error
        assert run.result == [2 * i for i in range(1000)]
        children = await m.runs(parent_id=run.id, limit=2000)
    assert len(children) == 1000
    assert all(c.state is TaskState.success and c.root_run_id == run.id for c in children)
    assert all(HEX32.fullmatch(c.id) for c in children)
    by_input = {c.params["x"]: c for c in children}
    for position in (0, 1, 500, 999):  # gather order is the call position
        expected = child_run_id(run.id, position, input_hash({"x": position}))
        assert by_input[position].id == expected


async def test_grandchildren_keep_the_root() -> None:
    @task
    async def middle(ctx: TaskRun, n: int) -> int:
        return sum(await asyncio.gather(*(double.aio(i) for i in range(n))))

    @task
    async def top(ctx: TaskRun) -> int:
        return int(await middle.aio(3) + await middle.aio(2))

    async with manager(double, middle, top) as m:
        run = await m.execute("top")
        assert run.result == 6 + 2
        [_mid2, mid1] = sorted(await m.runs(parent_id=run.id), key=lambda r: r.params["n"])
        grandchildren = await m.runs(parent_id=mid1.id)
    assert len(grandchildren) == 3
    assert {g.root_run_id for g in grandchildren} == {run.id}


async def test_sync_children_from_sync_and_async_parents() -> None:
    @task
    def inc(x: int) -> int:
        return x + 1

    @task
    def sync_parent(ctx: TaskRun, n: int) -> int:
        return sum(inc(i) for i in range(n))  # blocking child calls from the worker thread

    @task
    async def async_parent(ctx: TaskRun) -> int:
        return int(await inc.aio(41))

    async with manager(inc, sync_parent, async_parent) as m:
        run = await m.execute("sync_parent", n=4)
        assert run.state is TaskState.success, run.error
        assert run.result == 1 + 2 + 3 + 4
        assert len(await m.runs(parent_id=run.id)) == 4
        assert (await m.execute("async_parent")).result == 42


# -- replay -----------------------------------------------------------------------------------------
def replay_tasks(executions: Counter[int], first_attempt_fails_after: int) -> tuple[object, ...]:
    @task
    async def step(i: int) -> int:
        executions[i] += 1
        return i * i

    @task(retry=2)
    async def flow(ctx: TaskRun, n: int) -> int:
        total = 0
        for i in range(n):
            total += await step.aio(i)
            if ctx.retry_attempt == 0 and i + 1 == first_attempt_fails_after:
                raise RuntimeError("parent crashed half way")
        return total

    return step, flow


async def test_replay_through_the_queue_runs_each_finished_child_once() -> None:
    executions: Counter[int] = Counter()
    async with manager(*replay_tasks(executions, first_attempt_fails_after=3)) as m:
        queued = await m.queue("flow", n=5)
        await run_burst(m)
        run = await m.get_run(queued.id)
        children = await m.runs(parent_id=run.id)
    assert run.state is TaskState.success and run.result == sum(i * i for i in range(5))
    assert run.retry_attempt == 1
    assert executions == Counter(dict.fromkeys(range(5), 1))
    assert len(children) == 5


async def test_replay_with_execute_runs_each_finished_child_once() -> None:
    executions: Counter[int] = Counter()
    async with manager(*replay_tasks(executions, first_attempt_fails_after=4)) as m:
        run = await m.execute("flow", n=6)
    assert run.state is TaskState.success, run.error
    assert executions == Counter(dict.fromkeys(range(6), 1))


async def test_replay_of_a_gather_reuses_every_finished_child() -> None:
    executions: Counter[int] = Counter()

    @task
    async def work(i: int) -> int:
        executions[i] += 1
        return i

    @task(retry=1)
    async def gather_then_fail(ctx: TaskRun, n: int) -> int:
        values = await asyncio.gather(*(work.aio(i) for i in range(n)))
        if ctx.retry_attempt == 0:
            raise RuntimeError("fail after the gather")
        return sum(values)

    async with manager(work, gather_then_fail) as m:
        run = await m.execute("gather_then_fail", n=50)
    assert run.state is TaskState.success and run.result == sum(range(50))
    assert executions == Counter(dict.fromkeys(range(50), 1))


async def test_a_failed_child_runs_again_when_the_parent_is_retried() -> None:
    calls: list[int] = []

    @task
    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return x

    @task(retry=1)
    async def parent(ctx: TaskRun) -> int:
        return int(await flaky.aio(7))

    async with manager(flaky, parent) as m:
        run = await m.execute("parent")
        [child] = await m.runs(parent_id=run.id)
    assert run.state is TaskState.success and run.result == 7
    assert calls == [7, 7]
    assert child.state is TaskState.success
    assert [a.state for a in child.attempts] == [TaskState.failure, TaskState.success]


async def test_replay_mismatch_when_the_retry_calls_other_inputs_at_a_position() -> None:
    @task(retry=1)
    async def drifting(ctx: TaskRun) -> int:
        value: int = await double.aio(1 if ctx.retry_attempt == 0 else 2)
        if ctx.retry_attempt == 0:
            raise RuntimeError("fail once")
        return value

    async with manager(double, drifting) as m:
        run = await m.execute("drifting")
    assert run.state is TaskState.failure
    assert run.error is not None and run.error["type"] == "ReplayMismatchError"
    assert "call #0" in run.error["message"]


async def test_replay_mismatch_when_the_retry_calls_another_task_at_a_position() -> None:
    @task
    async def triple(x: int) -> int:
        return 3 * x

    @task(retry=1)
    async def drifting(ctx: TaskRun) -> int:
        child = double if ctx.retry_attempt == 0 else triple
        value: int = await child.aio(1)
        if ctx.retry_attempt == 0:
            raise RuntimeError("fail once")
        return value

    async with manager(double, triple, drifting) as m:
        run = await m.execute("drifting")
    assert run.error is not None and run.error["type"] == "ReplayMismatchError"
    assert "triple" in run.error["message"] and "double" in run.error["message"]


async def test_an_existing_child_id_is_found_by_the_enqueue_itself() -> None:
    """A first attempt whose child id already exists (a lost worker got there first)."""
    executions: list[int] = []

    @task
    async def once(x: int) -> int:
        executions.append(x)
        return x

    @task
    async def parent(ctx: TaskRun, x: int) -> int:
        return int(await once.aio(x))

    async with manager(once, parent) as m:
        first = await m.execute("parent", x=5)
        [child] = await m.runs(parent_id=first.id)
        # the same parent id again, as a worker that lost its lease would run it
        again = m.new_run("parent", {"x": 5}, run_id=first.id)
        assert (await m.execute_run(again)).result == 5
        assert executions == [5]
        # a different task under that id is drift, caught on the enqueue's reply
        await m.store.save(child.model_copy(update={"task": "double"}))
        drift = await m.execute_run(m.new_run("parent", {"x": 5}, run_id=first.id))
    assert drift.error is not None and drift.error["type"] == "ReplayMismatchError"


# -- errors and limits ------------------------------------------------------------------------------
@task
async def broken(key: str) -> int:
    try:
        raise ValueError("the root cause")
    except ValueError as exc:
        raise KeyError(key) from exc


async def test_child_error_type_message_and_cause_reach_the_parent() -> None:
    seen: list[TaskFailedError] = []

    @task
    async def catching(ctx: TaskRun) -> str:
        try:
            await broken.aio("missing")
        except TaskFailedError as exc:
            seen.append(exc)
            return "handled"
        return "not raised"

    @task
    async def not_catching(ctx: TaskRun) -> None:
        await broken.aio("absent")

    async with manager(broken, catching, not_catching) as m:
        assert (await m.execute("catching")).result == "handled"
        failed = await m.execute("not_catching")
        [child] = await m.runs(parent_id=failed.id)
    [exc] = seen
    assert exc.type_name == "KeyError" and exc.message == "'missing'"
    assert exc.cause is not None and exc.cause.type_name == "ValueError"
    assert exc.cause.message == "the root cause"
    assert "raise KeyError(key)" in exc.traceback
    # uncaught: the parent's record carries the child's failure, chain included
    assert failed.state is TaskState.failure and failed.error is not None
    assert failed.error["type"] == "KeyError" and failed.error["run_id"] == child.id
    assert failed.error["cause"]["type"] == "ValueError"
    assert child.state is TaskState.failure and child.error is not None
    assert child.error["type"] == "KeyError"


async def test_invalid_child_params_raise_before_anything_runs() -> None:
    @task
    async def parent(ctx: TaskRun) -> str:
        try:
            await double.aio("not a number")
        except InvalidParamsError as exc:
            return f"rejected: {exc.task}"
        return "accepted"

    async with manager(double, parent) as m:
        run = await m.execute("parent")
        assert run.result == "rejected: double"
        assert await m.runs(parent_id=run.id) == []


async def test_child_input_over_max_inline_io_bytes_raises_before_anything_runs() -> None:
    executed: list[str] = []

    @task(max_inline_io_bytes=64)
    async def small(text: str) -> int:
        executed.append(text)
        return len(text)

    @task
    async def parent(ctx: TaskRun) -> str:
        try:
            await small.aio("x" * 100)
        except PayloadTooLargeError as exc:
            return f"too large: {exc.size} > {exc.limit}"
        return "sent"

    async with manager(small, parent) as m:
        run = await m.execute("parent")
        assert run.result is not None and run.result.startswith("too large")
        assert executed == [] and await m.runs(parent_id=run.id) == []


async def test_child_output_over_max_inline_io_bytes_fails_the_child() -> None:
    @task(max_inline_io_bytes=64)
    async def chatty(n: int) -> str:
        return "y" * n

    @task
    async def parent(ctx: TaskRun) -> str:
        assert await chatty.aio(10) == "y" * 10
        try:
            await chatty.aio(1000)
        except TaskFailedError as exc:
            return exc.type_name
        return "returned"

    async with manager(chatty, parent) as m:
        run = await m.execute("parent")
        children = await m.runs(parent_id=run.id)
    assert run.result == "PayloadTooLargeError"
    assert sorted(c.state for c in children) == [TaskState.failure, TaskState.success]


# -- caching ----------------------------------------------------------------------------------------
async def test_child_cache_hit_miss_version_bump_and_disable() -> None:
    executions: list[int] = []

    @task(cache=Cache(version="1"))
    async def costly(x: int) -> int:
        executions.append(x)
        return x * 10

    @task
    async def parent(ctx: TaskRun, mode: str) -> int:
        child = {
            "plain": costly,
            "v2": costly.override(cache=Cache(version="2")),
            "off": costly.override(cache="disable"),
        }[mode]
        return int(await child.aio(4))

    async def child_of(m: TaskManager, mode: str) -> TaskRun:
        run = await m.execute("parent", mode=mode)
        assert run.result == 40, run.error
        [child] = await m.runs(parent_id=run.id)
        return child

    async with manager(costly, parent) as m:
        assert not (await child_of(m, "plain")).cache_hit  # miss: runs, fills the cache
        assert (await child_of(m, "plain")).cache_hit  # hit: skips execution
        assert executions == [4]
        assert not (await child_of(m, "v2")).cache_hit  # version bump: a new key
        assert (await child_of(m, "v2")).cache_hit
        assert executions == [4, 4]
        assert not (await child_of(m, "off")).cache_hit  # disabled: always runs
        assert not (await child_of(m, "off")).cache_hit
        assert executions == [4, 4, 4, 4]


# -- on the queue -----------------------------------------------------------------------------------
async def test_children_on_the_queue_run_on_a_consumer() -> None:
    async with manager(double, fan_out, children_on_queue=True) as m:
        queued = await m.queue("fan_out", n=20)
        await run_burst(m, max_concurrent_tasks=8)
        run = await m.get_run(queued.id)
        children = await m.runs(parent_id=run.id)
    assert run.state is TaskState.success and run.result == [2 * i for i in range(20)]
    assert len(children) == 20
    assert all(c.state is TaskState.success and c.worker for c in children)
    assert all(len(c.attempts) == 1 for c in children)


async def test_override_queue_sends_the_child_to_that_queue() -> None:
    @task
    async def parent(ctx: TaskRun) -> list[int]:
        on_gpu = double.override(queue="gpu")
        return list(await asyncio.gather(on_gpu.aio(1), on_gpu.aio(2), double.aio(3)))

    async with manager(double, parent) as m:
        async with TaskConsumer(m, queues=["gpu"], worker_id="gpu-worker"):
            run = await m.execute("parent")
        children = await m.runs(parent_id=run.id)
    assert run.result == [2, 4, 6]
    by_queue = Counter((c.queue, c.worker) for c in children)
    assert by_queue[("gpu", "gpu-worker")] == 2
    assert sum(n for (queue, _), n in by_queue.items() if queue == "default") == 1


async def test_a_queued_child_must_be_registered() -> None:
    unregistered = double.override(queue="elsewhere")

    @task
    async def parent(ctx: TaskRun) -> str:
        try:
            await unregistered.aio(1)
        except UnknownTaskError:
            return "unknown"
        return "queued"

    async with manager(parent) as m:
        assert (await m.execute("parent")).result == "unknown"


async def test_queued_children_are_reused_on_replay() -> None:
    executions: Counter[int] = Counter()
    step, flow = replay_tasks(executions, first_attempt_fails_after=2)
    async with manager(step, flow, children_on_queue=True) as m:
        queued = await m.queue("flow", n=4)
        await run_burst(m, max_concurrent_tasks=4)
        run = await m.get_run(queued.id)
    assert run.state is TaskState.success and run.result == 0 + 1 + 4 + 9
    assert executions == Counter(dict.fromkeys(range(4), 1))


# -- Flyte pre / post -------------------------------------------------------------------------------
def _pre(**kwargs: int) -> dict[str, int]:
    return {**kwargs, "x": kwargs["x"] + 100}


def _post(value: int) -> int:
    return -value


@task(pre=_pre, post=_post)
async def hooked(x: int) -> int:
    return x


async def test_pre_and_post_wrap_local_calls_runs_and_children() -> None:
    assert await hooked.aio(1) == -101  # local call
    assert await hooked.override(pre=None).aio(1) == -1
    assert await hooked.override(post=None).aio(1) == 101

    @task
    async def parent(ctx: TaskRun) -> int:
        return int(await hooked.aio(2))

    async with manager(hooked, parent) as m:
        run = await m.execute("hooked", x=3)
        assert run.result == -103 and run.params == {"x": 3}  # the record keeps the inputs
        assert (await m.execute("parent")).result == -102


def test_pre_and_post_on_a_sync_task() -> None:
    @task(pre=_pre, post=_post)
    def sync_hooked(x: int) -> int:
        return x * 2

    assert sync_hooked(1) == -202


# -- run tree ---------------------------------------------------------------------------------------
async def test_run_tree_shows_children_states_and_timings() -> None:
    @task
    async def tree_parent(ctx: TaskRun) -> int:
        value: int = await double.aio(1)
        try:
            await broken.aio("k")
        except TaskFailedError:
            pass
        return value

    async with manager(double, broken, tree_parent) as m:
        run = await m.execute("tree_parent")
        tree = await run_tree(m, run.id)
        small = await run_tree(m, run.id, max_children=1)
    console = Console(record=True, width=200, color_system=None)
    console.print(tree)
    text = console.export_text()
    assert "tree_parent success" in text and run.id in text
    assert "double success" in text and "broken failure" in text
    assert "KeyError: 'k'" in text
    console.print(small)
    assert "first 1 shown" in console.export_text()


def test_format_seconds() -> None:
    assert format_seconds(0.0004) == "400µs"
    assert format_seconds(0.0123) == "12.3ms"
    assert format_seconds(4.567) == "4.57s"
    assert format_seconds(187) == "3m07s"


@pytest.mark.parametrize("n", [0, 1])
async def test_small_fan_outs(n: int) -> None:
    async with manager(double, fan_out) as m:
        assert (await m.execute("fan_out", n=n)).result == [2 * i for i in range(n)]


# -- every store ------------------------------------------------------------------------------------
async def test_fan_out_replay_and_mismatch_on_every_store(store: Store) -> None:
    executions: Counter[int] = Counter()
    m = TaskManager(store, tasks=[double, fan_out, *replay_tasks(executions, 2)])  # type: ignore[list-item]
    fanned = await m.execute("fan_out", n=30)
    assert fanned.result == [2 * i for i in range(30)]
    replayed = await m.execute("flow", n=4)
    assert replayed.state is TaskState.success and replayed.retry_attempt == 1
    assert executions == Counter(dict.fromkeys(range(4), 1))

    @task(retry=1)
    async def drifting(ctx: TaskRun) -> int:
        value: int = await double.aio(ctx.retry_attempt)
        if ctx.retry_attempt == 0:
            raise RuntimeError("fail once")
        return value

    m.register_task(drifting)
    drifted = await m.execute("drifting")
    assert drifted.error is not None and drifted.error["type"] == "ReplayMismatchError"


async def test_a_fan_out_larger_than_one_write_records_every_child(store: Store) -> None:
    from taskloom.lifecycle import ENDED_CHUNK

    n = ENDED_CHUNK * 2 + 7  # the final records go in three parts where the store overlaps them
    m = TaskManager(store, tasks=[double, fan_out])
    run = await m.execute("fan_out", n=n)
    assert run.result == [2 * i for i in range(n)]
    children = await m.runs(parent_id=run.id, limit=n + 1)
    assert len(children) == n and {c.state for c in children} == {TaskState.success}
    counted = sum(c.n for c in await m.store.counts() if c.task == "double")
    assert counted == n  # each child counted once, as success


async def test_children_on_the_queue_on_every_store(store: Store) -> None:
    m = TaskManager(store, tasks=[double, fan_out], children_on_queue=True, poll_interval=0.2)
    queued = await m.queue("fan_out", n=10)
    await asyncio.wait_for(run_burst(m, max_concurrent_tasks=4), 30)
    run = await m.get_run(queued.id)
    assert run.state is TaskState.success and run.result == [2 * i for i in range(10)]
    assert len(await m.runs(parent_id=run.id)) == 10


async def test_sync_parent_calls_async_child_durably() -> None:
    @task
    async def inner(n: int) -> int:
        return n + 1

    @task
    def outer(n: int) -> int:
        return inner(n) * 2  # type: ignore[no-any-return]

    async with TaskManager("memory://", tasks=[inner, outer]) as m:
        run = await m.execute("outer", n=1)
        kids = await m.runs(parent_id=run.id)
    assert run.state is TaskState.success and run.result == 4
    assert [k.task for k in kids] == ["inner"] and kids[0].result == 2
