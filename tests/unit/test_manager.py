"""TaskManager: registry, execute, queue, queries, errors, hooks, sync facade."""

from __future__ import annotations

import pytest

from taskloom import (
    InvalidParamsError,
    RetryPolicy,
    RunHooks,
    RunNotFoundError,
    TaskFailedError,
    TaskManager,
    TaskPriority,
    TaskRun,
    TaskState,
    UnknownTaskError,
    task,
)
from taskloom.testing import FakeClock


@task
def add(a: int, b: int = 1) -> int:
    """Add."""
    return a + b


@task
async def fails(ctx: TaskRun, why: str = "nope") -> None:
    raise KeyError(why)


@task
async def aborts(ctx: TaskRun) -> None:
    ctx.abort("not today")


def manager(**kw: object) -> TaskManager:
    return TaskManager("memory://", tasks=[add, fails, aborts], **kw)  # type: ignore[arg-type]


async def test_execute_success_records_run() -> None:
    async with manager() as m:
        run = await m.execute("add", a=2)
        assert run.state is TaskState.success and run.result == 3
        assert run.params == {"a": 2, "b": 1}  # defaults stored
        assert run.root_run_id == run.id and run.parent_id is None
        stored = await m.get_run(run.id)
        assert stored.result == 3 and stored.end is not None and stored.start is not None
        assert [a.state for a in stored.attempts] == [TaskState.success]


async def test_execute_failure_returns_failed_run() -> None:
    async with manager() as m:
        run = await m.execute("fails", why="gone")
        assert run.state is TaskState.failure
        err = run.failure
        assert isinstance(err, TaskFailedError)
        assert (
            err.type_name == "KeyError" and "gone" in err.message and "Traceback" in err.traceback
        )


async def test_abort_ends_aborted() -> None:
    async with manager() as m:
        run = await m.execute("aborts")
        assert run.state is TaskState.aborted
        assert run.failure is not None and run.failure.type_name == "CancelledRunError"


async def test_execute_retries_here() -> None:
    calls = []

    @task(retry=RetryPolicy(max_attempts=3, wait=0, backoff=1, max_wait=0))
    def shaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("again")
        return "fine"

    async with TaskManager("memory://", tasks=[shaky]) as m:
        run = await m.execute("shaky")
    assert run.state is TaskState.success and run.retry_attempt == 2 and len(calls) == 3
    assert [a.state for a in run.attempts] == [TaskState.failure] * 2 + [TaskState.success]


async def test_unknown_task_and_bad_params_queue_nothing() -> None:
    async with manager() as m:
        with pytest.raises(UnknownTaskError, match="'nope'.*known tasks: aborts, add, fails"):
            await m.queue("nope")
        with pytest.raises(InvalidParamsError, match="a: Input should be a valid integer"):
            await m.queue("add", a="x")
        with pytest.raises(InvalidParamsError):
            await m.execute("add")
        assert await m.runs() == []


async def test_get_run_missing() -> None:
    async with manager() as m:
        with pytest.raises(RunNotFoundError, match="'zzz' not found"):
            await m.get_run("zzz")
        with pytest.raises(RunNotFoundError):
            await m.cancel("zzz")


async def test_queue_options_and_queries() -> None:
    clock = FakeClock()
    async with manager(clock=clock) as m:
        a = await m.queue("add", a=1, priority="high", queue="fast")
        b = await m.queue("add", a=2, delay=30)
        c = await m.queue("add", a=3, dedup_key="k")
        d = await m.queue("add", a=4, dedup_key="k")
        assert d.id == c.id
        assert a.priority is TaskPriority.high and a.queue == "fast"
        assert b.execute_after is not None and b.execute_after.timestamp() == clock.now + 30
        assert [r.id for r in await m.runs()] == [c.id, b.id, a.id]
        assert [r.id for r in await m.runs(queue="fast")] == [a.id]
        assert await m.queue_length() == {
            TaskPriority.high: 1, TaskPriority.medium: 2, TaskPriority.low: 0
        }  # fmt: skip
        many = await m.queue_many("add", [{"a": i} for i in range(5)])
        assert len({r.id for r in many}) == 5


async def test_cancel_queued_and_retry_finished() -> None:
    async with manager() as m:
        run = await m.queue("add", a=1)
        cancelled = await m.cancel(run.id)
        assert cancelled.state is TaskState.aborted
        again = await m.retry(run.id)
        assert again.id != run.id and again.from_run_id == run.id and again.params == run.params
        with pytest.raises(Exception, match="only finished runs"):
            await m.retry(again.id)


async def test_wait_times_out() -> None:
    from taskloom import TaskTimeoutError

    async with manager() as m:
        run = await m.queue("add", a=1)
        with pytest.raises(TaskTimeoutError, match="not done"):
            await m.wait(run.id, timeout=0.05)


async def test_enable_disable_schedule() -> None:
    async with manager() as m:
        assert await m.is_enabled("add")
        await m.disable("add")
        assert not await m.is_enabled("add")
        await m.enable("add")
        assert await m.is_enabled("add")
        with pytest.raises(UnknownTaskError):
            await m.disable("nope")


async def test_hooks_are_called() -> None:
    seen: list[tuple[str, str]] = []

    class Record(RunHooks):
        async def on_queued(self, run: TaskRun) -> None:
            seen.append(("queued", run.task))

        async def before_run(self, run: TaskRun) -> None:
            seen.append(("before", run.task))

        async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
            seen.append(("after", f"{run.state}:{error.type_name if error else ''}"))

        async def on_error(self, run: TaskRun, exc: BaseException) -> None:
            seen.append(("error", type(exc).__name__))

    async with TaskManager("memory://", tasks=[add, fails], hooks=[Record()]) as m:
        await m.queue("add", a=1)
        await m.execute("fails")
    assert seen == [
        ("queued", "add"), ("before", "fails"), ("error", "KeyError"),
        ("after", "failure:KeyError"),
    ]  # fmt: skip


def test_sync_facade() -> None:
    m = manager()
    run = m.sync.execute("add", a=5)
    assert run.result == 6
    queued = m.sync.queue("add", a=1)
    assert m.sync.get_run(queued.id).state is TaskState.queued
    assert len(m.sync.runs()) == 2
    m.sync.close()


def test_manager_task_decorator() -> None:
    m = TaskManager("memory://")

    @m.task(priority="low")
    def hi() -> str:
        return "hi"

    assert m.get_task("hi").priority is TaskPriority.low
    assert m.sync.execute("hi").result == "hi"
    m.sync.close()


async def test_secret_str_inputs_execute_and_are_stored_only_sealed() -> None:
    from pydantic import SecretStr

    @task
    def login(user: str, password: SecretStr) -> str:
        return f"{user}:{len(password.get_secret_value())}"

    async with TaskManager("memory://", tasks=[login]) as m:
        run = await m.execute("login", user="ann", password="hunter2")
        assert run.state is TaskState.success and run.result == "ann:7"
        stored = await m.get_run(run.id)
        assert "hunter2" not in stored.model_dump_json() and stored.params["user"] == "ann"
        assert "$sealed" in stored.params["password"]
        queued = await m.queue("login", user="ann", password="hunter2")
        assert "hunter2" not in queued.model_dump_json()
