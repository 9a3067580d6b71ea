"""The run lifecycle: every path that makes a run goes through one submit, hooks included."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from taskloom import (
    Cache,
    CancelledRunError,
    ConfigError,
    RateLimitError,
    Retry,
    RunHooks,
    TaskFailedError,
    TaskManager,
    TaskRun,
    TaskScheduler,
    TaskState,
    every,
    outcome,
    serde,
    task,
)
from taskloom.dag import DAG, Node
from taskloom.pipeline import InProcessTask, MemoryRepository, Pipeline, Repository
from taskloom.testing import FakeClock, run_burst

START = 1_800_000_000.0  # a multiple of 5 minutes


class Seen(RunHooks):
    """Counts `before_queue` and `on_queued` per task name."""

    def __init__(self) -> None:
        self.before: Counter[str] = Counter()
        self.queued: Counter[str] = Counter()

    async def before_queue(self, run: TaskRun) -> None:
        self.before[run.task] += 1

    async def on_queued(self, run: TaskRun) -> None:
        self.queued[run.task] += 1


@task(cache=Cache(version="1"))
async def leaf(x: int) -> int:
    """A cached child."""
    return x + 1


@task
async def parent(x: int) -> int:
    """Calls the same cached child twice: the second call is a cache hit."""
    return await leaf.aio(x=x) + await leaf.aio(x=x)


@task(queue="other")
async def elsewhere() -> str:
    """A child on another queue than its parent's: it goes through the workers."""
    return "there"


@task
async def caller() -> str:
    """Calls a child that is queued, not run inline."""
    return str(await elsewhere.aio())


@task(schedule=every(timedelta(minutes=5)))
async def ticking() -> None:
    """Scheduled."""


@task
async def node_a() -> int:
    """A DAG node."""
    return 1


async def test_before_queue_runs_on_every_path() -> None:
    seen = Seen()
    tasks = [leaf, parent, elsewhere, caller, ticking, node_a]
    clock = FakeClock(START)
    async with TaskManager("memory://", tasks=tasks, hooks=[seen], clock=clock) as m:
        await m.queue("leaf", x=1)
        await m.enqueue("leaf", {"x": 2})
        await m.queue_many("leaf", [{"x": 3}, {"x": 4}])
        assert seen.before["leaf"] == 4 and seen.queued["leaf"] == 4

        done = await m.execute("parent", x=10)  # two inline children, the second a cache hit
        assert done.result == 22
        assert seen.before["parent"] == 1 and seen.before["leaf"] == 6
        assert seen.queued["parent"] == 0 and seen.queued["leaf"] == 4  # ran here: not queued

        queued = await m.queue("caller")
        await run_burst(m, queues=["default", "other"])
        assert (await m.get_run(queued.id)).result == "there"
        assert seen.before["elsewhere"] == 1 and seen.queued["elsewhere"] == 1

        await DAG([Node(node_a)]).run(m)
        assert seen.before["node_a"] == 1

        scheduler = TaskScheduler(m)
        await scheduler.tick()
        clock.set(START + 300)
        assert len(await scheduler.tick()) == 1
        assert seen.before["ticking"] == 1 and seen.queued["ticking"] == 1

        calls: Counter[str] = Counter()

        @InProcessTask("stage", done=MemoryRepository("stage.done"))
        async def stage(job: str, **links: Repository) -> None:
            calls[job] += 1

        src = MemoryRepository("src")
        await src.dump("k1", {"n": 1})
        stage.link("src", src, is_input=True)
        async with Pipeline([stage], manager=m) as pipeline:
            await pipeline.update()
        assert seen.before["pipeline.stage"] == 1 and seen.queued["pipeline.stage"] == 1


@pytest.mark.parametrize(
    "exc",
    [
        CancelledRunError("stop"),
        RateLimitError("busy"),
        Retry(after=2.5),
        ConfigError("MODEL_PATH unset"),
        ValueError("bad"),
    ],
)
def test_one_outcome_codec_keeps_the_error_kind(exc: Exception) -> None:
    """What a pool child, a Ray worker or a Job reports comes back as the same kind of error."""
    wire = serde.loads(serde.dumps(outcome.failure(exc, "r1")))
    with pytest.raises(Exception) as raised:
        outcome.value_of(node_a, wire)
    expected = TaskFailedError if isinstance(exc, ValueError) else type(exc)
    assert type(raised.value) is expected
    if isinstance(exc, Retry):
        assert isinstance(raised.value, Retry) and raised.value.after == 2.5
    assert outcome.value_of(node_a, outcome.success(3)) == 3


@task
async def waits(ctx: TaskRun) -> None:
    """Waits until it is cancelled."""
    await asyncio.wait_for(ctx.cancelled.wait(), 60)


class Started(RunHooks):
    """Sets `started` when an attempt begins."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.run_id = ""

    async def before_run(self, run: TaskRun) -> None:
        self.run_id = run.id
        self.started.set()


async def test_cancel_aborts_a_run_executing_here() -> None:
    hook = Started()
    async with TaskManager("memory://", tasks=[waits], hooks=[hook], lease_seconds=3.0) as m:
        executing = asyncio.create_task(m.execute("waits"))
        await asyncio.wait_for(hook.started.wait(), 10)
        assert (await m.get_run(hook.run_id)).state is TaskState.running
        await m.cancel(hook.run_id)
        done = await asyncio.wait_for(executing, 10)
        assert done.state is TaskState.aborted
        assert (await m.get_run(done.id)).state is TaskState.aborted


def _validated(run: TaskRun) -> TaskRun:
    """The same record built through pydantic's validation."""
    return TaskRun(**{name: getattr(run, name) for name in TaskRun.model_fields})


async def test_built_runs_equal_validated_ones() -> None:
    """`build` skips validating values it made or checked itself: the record (field order,
    defaults, JSON) is the one `TaskRun(...)` makes, and odd option values still go through
    pydantic (converted, or refused by name)."""
    manager = TaskManager("memory://")

    @manager.task(tags=["t1"])
    async def job(x: int, name: str = "n") -> int:
        return x

    parent = manager.new_run("job", {"x": 1})
    plain = [
        manager.new_run("job", {"x": 2}),
        manager.new_run(
            "job",
            {"x": 3},
            priority="high",
            queue="q",
            dedup_key="k",
            delay=5,
            tags=["a", "b"],
            parent=parent,
            from_run_id="r0",
        ),
        manager.new_run("job", {"x": 4}, run_id="my-id"),
        manager.lifecycle.build_here(job, {"x": 5, "name": "n"}, parent=parent, worker="w"),
    ]
    for run in plain:
        twin = _validated(run)
        assert list(run.__dict__) == list(twin.__dict__)
        assert run.model_dump_json() == twin.model_dump_json()
        assert run.root_run_id == (parent.root_run_id if run.parent_id else run.id)
    assert plain[2].id == "my-id" and plain[1].parent_id == parent.id
    # each run has its own mutable defaults
    plain[0].metrics["m"] = 1.0
    assert plain[2].metrics == {}

    converted = manager.new_run("job", {"x": 6}, execute_after="2030-01-01T00:00:00Z")  # type: ignore[arg-type]
    assert converted.execute_after is not None and converted.execute_after.year == 2030
    with pytest.raises(ValueError, match="queue"):
        manager.new_run("job", {"x": 7}, queue=3)
    with pytest.raises(ValueError, match="tags"):
        manager.new_run("job", {"x": 8}, tags=[1])


async def test_runs_built_together_equal_runs_built_one_by_one() -> None:
    """`build_many` (queue_many) checks options once and validates every params in one call:
    each run is still what `build` makes, with its own id, time and mutable fields, and the
    first bad params raise as `build` would, before anything is queued."""
    manager = TaskManager("memory://")

    @manager.task(tags=["t1"], max_inline_io_bytes=64)
    async def job(x: int, name: str = "n") -> int:
        return x

    parent = manager.new_run("job", {"x": 0})
    options = dict(priority="high", queue="q", delay=5, tags=["a"], parent=parent, from_run_id="r")
    many = manager.lifecycle.build_many("job", [{"x": i} for i in range(1, 5)], **options)
    assert [run.params for run in many] == [{"x": i, "name": "n"} for i in range(1, 5)]
    assert len({run.id for run in many}) == 4
    for run in many:
        twin = _validated(run)
        assert list(run.__dict__) == list(twin.__dict__)
        assert run.model_dump_json() == twin.model_dump_json()
        one = manager.new_run("job", run.params, **options)
        same = ("task", "priority", "queue", "tags", "parent_id", "root_run_id", "from_run_id")
        assert {k: getattr(run, k) for k in same} == {k: getattr(one, k) for k in same}
        assert run.execute_after is not None and run.queued is not None
        assert run.execute_after - run.queued == timedelta(seconds=5)
    many[0].tags.append("mine")
    assert many[1].tags == ["a"]  # not shared

    async with manager:
        with pytest.raises(ValueError, match="x"):
            await manager.queue_many("job", [{"x": 1}, {"x": "not a number"}, {"x": 3}])
        with pytest.raises(ValueError, match="too large|exceeds|bytes"):
            await manager.queue_many("job", [{"x": 1}, {"x": 2, "name": "n" * 100}])
        assert await manager.runs() == []  # nothing queued by either call
        assert len(await manager.queue_many("job", [{"x": i} for i in range(3)])) == 3
