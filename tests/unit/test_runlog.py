"""Run logs: records of ctx.logger and the task's module logger, kept per run, bounded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from taskloom import RetryPolicy, RunNotFoundError, TaskConsumer, TaskManager, TaskRun, task
from taskloom.runlog import MAX_RECORDS, runlog_key
from taskloom.testing import FakeClock

log = logging.getLogger(__name__)
elsewhere = logging.getLogger("some.library")


@pytest.fixture(autouse=True)
def info_level() -> Iterator[None]:
    """Capture follows the loggers' levels: let INFO through for these tests."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(old)


@task
async def chatty(ctx: TaskRun, n: int = 1) -> int:
    for i in range(n):
        ctx.logger.info("step %d of [%d]", i, n)
    log.warning("module logger speaking")
    elsewhere.warning("not this task's logger")
    return n


@task
def threaded(ctx: TaskRun) -> None:
    ctx.logger.info("from a worker thread")
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("with a traceback")


@task(retry=RetryPolicy(max_attempts=2, wait=0.0))
async def twice(ctx: TaskRun) -> None:
    ctx.logger.info("attempt %d", ctx.retry_attempt)
    if ctx.retry_attempt == 0:
        raise ConnectionError("again")


TASKS = [chatty, threaded, twice]


async def test_records_of_a_run_are_kept_with_it() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        run = await m.execute("chatty", n=2)
        other = await m.execute("chatty", n=1)
        logs = await m.run_logs(run.id)
        assert [(r["level"], r["logger"], r["message"]) for r in logs] == [
            ("INFO", "taskloom.task.chatty", "step 0 of [2]"),
            ("INFO", "taskloom.task.chatty", "step 1 of [2]"),
            ("WARNING", __name__, "module logger speaking"),
        ]
        assert all(r["ts"].endswith("+00:00") for r in logs)
        assert (await m.run_logs(other.id))[0]["message"] == "step 0 of [1]"


async def test_thread_tasks_and_tracebacks() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        run = await m.execute("threaded")
        logs = await m.run_logs(run.id)
        assert logs[0]["message"] == "from a worker thread"
        assert logs[1]["level"] == "ERROR" and "KeyError: 'k'" in logs[1]["message"]


async def test_attempts_append_through_a_worker() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        queued = await m.queue("twice")
        async with TaskConsumer(m):
            done = await m.wait(queued.id, timeout=10)
        assert done.retry_attempt == 1
        assert [r["message"] for r in await m.run_logs(done.id)] == ["attempt 0", "attempt 1"]


async def test_a_run_that_logs_nothing_writes_nothing() -> None:
    @task
    async def quiet() -> int:
        return 1

    async with TaskManager("memory://", tasks=[quiet]) as m:
        run = await m.execute("quiet")
        assert await m.run_logs(run.id) == []
        assert await m.store.kv_get(runlog_key(run.id), m.clock()) is None
        with pytest.raises(RunNotFoundError):
            await m.run_logs("nope")


async def test_logs_are_capped_per_run() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        run = await m.execute("chatty", n=MAX_RECORDS + 50)
        logs = await m.run_logs(run.id)
        assert len(logs) == MAX_RECORDS + 1
        assert logs[-1]["logger"] == "taskloom.runlog"
        assert "51 more record(s) dropped" in logs[-1]["message"]


async def test_closing_the_manager_detaches_its_handler() -> None:
    m = TaskManager("memory://", tasks=TASKS)
    async with m:
        assert any(getattr(h, "capture", None) is m._run_logs for h in log.handlers)
    assert not any(getattr(h, "capture", None) is m._run_logs for h in log.handlers)


async def test_api_serves_run_logs() -> None:
    pytest.importorskip("fastapi")
    from taskloom.api import create_app

    async with TaskManager("memory://", tasks=TASKS) as m:
        run = await m.execute("chatty", n=1)
        transport = httpx.ASGITransport(app=create_app(m))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            got = await client.get(f"/api/runs/{run.id}/logs")
            assert got.status_code == 200
            assert [r["message"] for r in got.json()] == ["step 0 of [1]", "module logger speaking"]
            assert set(got.json()[0]) == {"ts", "level", "logger", "message"}
            assert (await client.get("/api/runs/nope/logs")).status_code == 404


async def test_run_logs_leave_with_their_run() -> None:
    """Retention takes a run's logs along: nothing is left under `runlog:<id>`."""
    clock = FakeClock(1_800_000_000.0)
    async with TaskManager("memory://", tasks=TASKS, clock=clock) as m:
        run = await m.execute("chatty", n=1)
        assert await m.run_logs(run.id)
        clock.advance(3600)
        assert await m.purge(timedelta(minutes=30)) == 1
        with pytest.raises(RunNotFoundError):
            await m.run_logs(run.id)
        assert await m.store.kv_get(runlog_key(run.id), m.clock()) is None
