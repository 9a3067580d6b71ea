"""The run lifecycle: every path that makes a run goes through one submit, hooks included."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from taskloom import Cache, RunHooks, TaskManager, TaskRun, TaskScheduler, every, task
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
