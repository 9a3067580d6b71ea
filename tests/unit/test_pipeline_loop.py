"""The pipeline loop: every ready job launched exactly once, reaped into `done`, recovered."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from taskloom import TaskManager, TaskState
from taskloom.errors import ConfigError
from taskloom.pipeline import (
    ExecutorTask,
    FileRepository,
    InProcessTask,
    MemoryRepository,
    Pipeline,
    Repository,
    StoreRepository,
    TaskStatus,
)
from taskloom.pipeline.views import SyncRepository
from taskloom.testing import run_burst


@pytest.fixture
async def manager() -> AsyncIterator[TaskManager]:
    async with TaskManager("memory://") as m:
        yield m


async def settle(pipeline: Pipeline) -> None:
    """Pass until nothing is in flight (jobs held back by a quota may stay ready)."""
    async with asyncio.timeout(10):
        await pipeline.update()
        while pipeline.live:
            await pipeline.wait()
            await pipeline.update()


async def run(pipeline: Pipeline) -> None:
    async with asyncio.timeout(20):
        await pipeline.run()


async def seed(repo: Repository, n: int) -> list[str]:
    keys = [f"k{i:02d}" for i in range(n)]
    for i, key in enumerate(keys):
        await repo.dump(key, {"n": i})
    return keys


def doubler(name: str, done: Repository, calls: Counter[str]) -> InProcessTask:
    @InProcessTask(name, done=done)
    async def body(job: str, **links: Repository) -> None:
        calls[job] += 1
        [src] = [r for n, r in links.items() if n.endswith("src") or n.endswith("_out")]
        await links["out"].dump(job, {"n": (await src.info(job))["n"] * 2})

    return body  # type: ignore[return-value]


async def test_two_stages_process_every_input_once(manager: TaskManager) -> None:
    src, mid, out = MemoryRepository("src"), MemoryRepository("mid"), MemoryRepository("out")
    keys = await seed(src, 20)
    first_calls: Counter[str] = Counter()
    second_calls: Counter[str] = Counter()
    first = doubler("first", MemoryRepository("first.done"), first_calls)
    first.link("src", src, is_input=True)
    first.link("out", mid, is_output=True)
    second = doubler("second", MemoryRepository("second.done"), second_calls)
    second.plug(first)
    second.link("out", out, is_output=True)
    pipeline = Pipeline([first, second], manager=manager)
    async with pipeline:
        await run(pipeline)
        assert first_calls == dict.fromkeys(keys, 1)
        assert second_calls == dict.fromkeys(keys, 1)
        assert [await out.info(k) for k in keys] == [{"n": i * 4} for i in range(20)]
        assert pipeline.stats.launched == 40 and pipeline.stats.succeeded == 40
        for _ in range(3):  # more passes launch nothing
            assert not await pipeline.update()
        assert pipeline.stats.launched == 40
    record = await second.done.info("k03")
    assert record["exit"] == "success" and record["attempts"] == 1
    assert record["start"] <= record["end"]
    run_record = await manager.get_run(record["run_id"])
    assert run_record.task == "pipeline.second" and run_record.dedup_key == "second/k03"


async def test_three_stages_over_files_and_new_inputs(manager: TaskManager, tmp_path: Path) -> None:
    def repo(name: str) -> FileRepository:
        return FileRepository(tmp_path / name, suffix=".json")

    src = repo("src")
    await seed(src, 5)
    calls: dict[str, Counter[str]] = {n: Counter() for n in ("a", "b", "c")}
    tasks = []
    upstream = None
    for name in ("a", "b", "c"):
        t = doubler(name, repo(f"{name}.done"), calls[name])
        if upstream is None:
            t.link("src", src, is_input=True)
        else:
            t.plug(upstream, output_links=["out", "done"])
        t.link("out", repo(f"{name}.out"), is_output=True)
        tasks.append(t)
        upstream = t
    pipeline = Pipeline(tasks, manager=manager)
    await run(pipeline)
    assert {n: sum(c.values()) for n, c in calls.items()} == {"a": 5, "b": 5, "c": 5}
    assert await repo("c.out").info("k04") == {"n": 32}
    assert sorted(os.listdir(tmp_path / "c.out")) == [f"k{i:02d}.json" for i in range(5)]
    await src.dump("late", {"n": 1})  # a new input: only it goes through
    await run(pipeline)
    assert {n: sum(c.values()) for n, c in calls.items()} == {"a": 6, "b": 6, "c": 6}
    assert await repo("c.out").info("late") == {"n": 8}


async def test_a_job_launches_once_however_many_passes(manager: TaskManager) -> None:
    src, done = MemoryRepository(), MemoryRepository()
    await seed(src, 4)
    gate, started = asyncio.Event(), Counter[str]()

    async def body(job: str) -> None:
        started[job] += 1
        await gate.wait()

    task = InProcessTask("slow", done=done, func=body)
    task.link("src", src, is_input=True)
    async with Pipeline([task], manager=manager) as pipeline:
        for _ in range(5):
            assert await pipeline.update()
        assert pipeline.stats.launched == 4 and pipeline.live == 4
        assert await task.live.snapshot() == {"k00", "k01", "k02", "k03"}
        assert (await task.live.info("k00"))["run_id"]
        [status] = await pipeline.status()
        assert status == TaskStatus("slow", "in-process", ready=0, running=4, done=0, failed=0)
        gate.set()
        await settle(pipeline)
    assert started == dict.fromkeys(["k00", "k01", "k02", "k03"], 1)
    assert await done.snapshot() == {"k00", "k01", "k02", "k03"}


async def test_a_failing_body_leaves_no_partial_output(
    manager: TaskManager, tmp_path: Path
) -> None:
    src, out = MemoryRepository(), FileRepository(tmp_path / "out")
    await seed(src, 1)

    async def body(job: str, out: Repository) -> None:
        async with out.open(job, "wb") as blob:
            await blob.write(b"half of the result")
            raise RuntimeError("crashed mid-write")

    task = InProcessTask("writer", done=MemoryRepository(), func=body)
    task.link("src", src, is_input=True)
    task.link("out", out, is_output=True)
    downstream = InProcessTask("reader", done=MemoryRepository(), func=body)
    downstream.plug(task)
    downstream.link("out", MemoryRepository(), is_output=True)
    pipeline = Pipeline([task, downstream], manager=manager)
    await run(pipeline)
    assert os.listdir(tmp_path / "out") == []  # neither the key nor a temp file
    record = await task.done.info("k00")
    assert record["exit"] == "failure" and record["error"]["type"] == "RuntimeError"
    assert record["error"]["message"] == "crashed mid-write"
    statuses = {s.task: s for s in await pipeline.status()}
    assert statuses["writer"].failed == 1
    assert statuses["reader"].ready == 0  # the output it needs never appeared


async def test_a_failing_job_is_retried_then_stays_failed(manager: TaskManager) -> None:
    src, done = MemoryRepository(), MemoryRepository()
    await seed(src, 2)
    calls: Counter[str] = Counter()

    async def body(job: str) -> None:
        calls[job] += 1
        if job == "k01":
            raise ValueError(f"bad input {job}")

    task = InProcessTask("flaky", done=done, func=body, retry=2)  # 3 attempts in all
    task.link("src", src, is_input=True)
    pipeline = Pipeline([task], manager=manager)
    async with pipeline:
        await run(pipeline)
        assert calls == {"k00": 1, "k01": 3}
        record = await done.info("k01")
        assert record["exit"] == "failure" and record["attempts"] == 3
        assert record["error"] == {"type": "ValueError", "message": "bad input k01"}
        for _ in range(3):  # not relaunched in a loop
            assert not await pipeline.update()
        assert calls == {"k00": 1, "k01": 3}
        assert pipeline.stats.failed == 1 and pipeline.stats.succeeded == 1
        [status] = await pipeline.status()
        assert (status.done, status.failed, status.ready) == (1, 1, 0)
        runs = await manager.runs(task="pipeline.flaky", state=TaskState.failure)
        assert len(runs) == 1 and runs[0].retry_attempt == 2
        await pipeline.retry("flaky", "k01")  # an explicit retry runs it again, once
        await run(pipeline)
        assert calls == {"k00": 1, "k01": 6}
    with pytest.raises(ConfigError):
        await pipeline.retry("nope", "k01")


async def test_cancel_aborts_a_job_in_flight(manager: TaskManager) -> None:
    src, done = MemoryRepository(), MemoryRepository()
    await seed(src, 2)
    started, never, cancelled = asyncio.Event(), asyncio.Event(), []

    async def body(job: str) -> None:
        started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(job)
            raise

    task = InProcessTask("stuck", done=done, func=body, retry=3)
    task.link("src", src, is_input=True)
    async with Pipeline([task], manager=manager, concurrency=1) as pipeline:
        await pipeline.update()
        async with asyncio.timeout(10):
            await started.wait()
        running = await pipeline.cancel("stuck", "k00")  # running: asked to stop
        queued = await pipeline.cancel("stuck", "k01")  # queued: aborted at once
        assert running.cancel_requested and queued.state is TaskState.aborted
        await settle(pipeline)
        assert not await pipeline.update()
    assert cancelled == ["k00"]  # never retried, never relaunched
    assert (await done.info("k00"))["exit"] == "aborted"
    assert (await done.info("k01"))["exit"] == "aborted"
    assert pipeline.stats.failed == 2 and pipeline.stats.launched == 2
    with pytest.raises(ConfigError, match="not in flight"):
        await pipeline.cancel("stuck", "k00")


async def test_timeout_kills_the_job_and_only_a_late_one(manager: TaskManager) -> None:
    src, done = MemoryRepository(), MemoryRepository()
    await src.write("fast", b"")
    await src.write("slow", b"")
    never, cancelled = asyncio.Event(), []

    async def body(job: str) -> None:
        if job == "slow":
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(job)
                raise

    task = InProcessTask("timed", done=done, func=body, timeout=0.2)
    task.link("src", src, is_input=True)
    await run(Pipeline([task], manager=manager))
    slow, fast = await done.info("slow"), await done.info("fast")
    assert slow["exit"] == "timeout" and slow["error"]["type"] == "TaskTimeoutError"
    assert cancelled == ["slow"]  # killed after the timeout, not left running
    assert fast["exit"] == "success"  # a job within its timeout is not killed


async def test_reopening_launches_nothing_again(manager: TaskManager) -> None:
    src, calls = MemoryRepository(), Counter[str]()
    await seed(src, 3)
    task = doubler("t", MemoryRepository(), calls)
    task.link("src", src, is_input=True)
    task.link("out", MemoryRepository(), is_output=True)
    pipeline = Pipeline([task], manager=manager)
    await run(pipeline)
    await run(pipeline)
    await run(Pipeline([task], manager=manager))
    assert sum(calls.values()) == 3


async def test_runs_that_ended_unreaped_are_reaped_on_recovery(manager: TaskManager) -> None:
    """The loop stopped after launching; the runs finished without it. Reopening reaps
    them: no job runs twice."""
    src, done, calls = MemoryRepository(), MemoryRepository(), Counter[str]()
    await seed(src, 3)
    task = doubler("t", done, calls)
    task.link("src", src, is_input=True)
    task.link("out", MemoryRepository(), is_output=True)
    pipeline = Pipeline([task], manager=manager, serve=False)
    async with pipeline:
        await pipeline.update()
        assert pipeline.stats.launched == 3
    await run_burst(manager)  # a plain worker runs them while no pipeline loop is open
    assert sum(calls.values()) == 3 and await done.snapshot() == frozenset()
    async with pipeline:
        assert await pipeline.update()
        assert await done.snapshot() == {"k00", "k01", "k02"}
        assert pipeline.stats.launched == 0 and pipeline.stats.succeeded == 3
    assert sum(calls.values()) == 3


async def test_runs_in_flight_are_adopted_on_recovery(manager: TaskManager) -> None:
    src, done, calls = MemoryRepository(), MemoryRepository(), Counter[str]()
    await seed(src, 2)
    task = doubler("t", done, calls)
    task.link("src", src, is_input=True)
    task.link("out", MemoryRepository(), is_output=True)
    pipeline = Pipeline([task], manager=manager, serve=False)
    async with pipeline:
        await pipeline.update()
    async with pipeline:  # still queued: adopted, not launched again
        assert await pipeline.update()
        assert pipeline.live == 2 and pipeline.stats.launched == 0
    assert len(await manager.runs(task="pipeline.t")) == 2
    await run(Pipeline([task], manager=manager))
    assert sum(calls.values()) == 2


async def test_runs_finished_by_another_worker_are_reaped() -> None:
    """Workers of other processes send no hook: the loop finds their runs in the store."""
    async with TaskManager("memory://", poll_interval=0.05) as here:
        there = TaskManager(here.store)  # another process's manager on the same store
        src, done, calls = MemoryRepository(), MemoryRepository(), Counter[str]()
        await seed(src, 3)
        task = doubler("t", done, calls)
        task.link("src", src, is_input=True)
        task.link("out", MemoryRepository(), is_output=True)
        Pipeline([task], manager=there)  # the worker's app builds the same pipeline
        async with Pipeline([task], manager=here, serve=False) as pipeline:
            await pipeline.update()
            await run_burst(there)
            async with asyncio.timeout(10):
                while pipeline.live:
                    await pipeline.wait()
                    await pipeline.update()
            assert pipeline.stats.succeeded == 3
        assert await done.snapshot() == {"k00", "k01", "k02"}
        assert sum(calls.values()) == 3


async def test_translator_maps_job_keys(manager: TaskManager) -> None:
    src, up_out, translator = MemoryRepository(), MemoryRepository(), MemoryRepository("map")
    await seed(src, 2)
    up = doubler("up", MemoryRepository(), Counter())
    up.link("src", src, is_input=True)
    up.link("out", up_out, is_output=True)
    for job, upstream in {"x": "k00", "y": "k01", "z": "missing"}.items():
        await translator.dump(job, upstream)
    seen: dict[str, Any] = {}

    async def body(job: str, up_out: Repository) -> None:
        seen[job] = await up_out.info(job)

    down = InProcessTask("down", done=MemoryRepository(), func=body)
    down.plug(up, translator=translator)
    await run(Pipeline([up, down], manager=manager))
    assert seen == {"x": {"n": 0}, "y": {"n": 2}}  # z's upstream job does not exist


async def test_store_repositories_end_to_end(manager: TaskManager) -> None:
    src = StoreRepository(manager, "src")
    await seed(src, 3)
    calls: Counter[str] = Counter()
    task = doubler("t", StoreRepository(manager, "t.done"), calls)
    task.link("src", src, is_input=True)
    task.link("out", StoreRepository(manager, "t.out"), is_output=True)
    await run(Pipeline([task], manager=manager))
    assert await StoreRepository(manager, "t.out").info("k02") == {"n": 4}
    assert len(await StoreRepository(manager, "t.done").snapshot()) == 3


def copy_upper(job: str, src: SyncRepository, out: SyncRepository) -> None:
    out.write(job, src.read(job).upper())


async def test_executor_task_in_threads_and_processes(manager: TaskManager, tmp_path: Path) -> None:
    mem_src, mem_out = MemoryRepository(), MemoryRepository()
    file_src, file_out = FileRepository(tmp_path / "src"), FileRepository(tmp_path / "out")
    for repo in (mem_src, file_src):
        await repo.write("a", b"abc")
    with ThreadPoolExecutor(2) as threads, ProcessPoolExecutor(1) as processes:
        in_thread = ExecutorTask("thread", threads, MemoryRepository(), func=copy_upper)
        in_thread.link("src", mem_src, is_input=True)
        in_thread.link("out", mem_out, is_output=True)
        in_process = ExecutorTask("process", processes, MemoryRepository(), func=copy_upper)
        in_process.link("src", file_src, is_input=True)
        in_process.link("out", file_out, is_output=True)
        await run(Pipeline([in_thread, in_process], manager=manager))
        assert await mem_out.read("a") == b"ABC"
        assert await file_out.read("a") == b"ABC"
        wrong = ExecutorTask("wrong", processes, MemoryRepository(), func=copy_upper)
        wrong.link("src", mem_src, is_input=True)
        wrong.link("out", mem_out, is_output=True)
        with pytest.raises(ConfigError, match="cannot cross into a process pool"):
            Pipeline([wrong], manager=manager).validate()


async def test_update_needs_an_open_pipeline(manager: TaskManager) -> None:
    task = InProcessTask("t", done=MemoryRepository(), func=None, ready=MemoryRepository())
    with pytest.raises(ConfigError, match="async with pipeline"):
        await Pipeline([task], manager=manager).update()
