"""A run whose function raises any BaseException, or whose process dies, fails alone.

The worker serving it lives on and serves the next run; the failure names the type raised.
"""

from __future__ import annotations

import asyncio

import pytest

from taskloom import RetryPolicy, TaskManager, TaskRun, TaskState, task
from taskloom.executors.process import ProcessExecutor
from taskloom.testing import run_burst

from . import proc_tasks as pt


class OwnBase(BaseException):
    """A BaseException a task defines for itself."""


POISONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "OwnBase": OwnBase,
    "CancelledError": asyncio.CancelledError,
}


@task(timeout_seconds=30)
async def async_poison(kind: str) -> None:
    """Raise the named BaseException from the worker's own event loop (inline executor)."""
    raise POISONS[kind]("poisoned")


@task
def sync_poison(kind: str) -> None:
    """Raise the named BaseException on a pool thread (thread executor)."""
    raise POISONS[kind]("poisoned")


@task
async def after() -> str:
    """Queued behind the poison: the same worker must still serve it."""
    return "served"


@pytest.mark.parametrize("kind", list(POISONS))
@pytest.mark.parametrize("name", ["async_poison", "sync_poison"])
async def test_a_base_exception_fails_the_run_and_the_worker_lives_on(name: str, kind: str) -> None:
    async with TaskManager("memory://", tasks=[async_poison, sync_poison, after]) as m:
        bad = await m.queue(name, kind=kind)
        good = await m.queue("after")
        await run_burst(m, check=False, max_concurrent_tasks=1)
        rb, rg = await m.get_run(bad.id), await m.get_run(good.id)
    assert rb.state is TaskState.failure
    assert rb.failure is not None and rb.failure.type_name == kind
    assert [a.state for a in rb.attempts] == [TaskState.failure]
    assert rg.state is TaskState.success and rg.result == "served"


async def test_execute_of_a_base_exception_returns_a_failed_run() -> None:
    async with TaskManager("memory://", tasks=[async_poison, sync_poison]) as m:
        for name in ("async_poison", "sync_poison"):
            run = await m.execute(name, kind="SystemExit")
            assert run.state is TaskState.failure
            assert run.failure is not None and run.failure.type_name == "SystemExit"


async def test_a_base_exception_is_retried_by_policy_as_a_counted_attempt() -> None:
    calls: list[int] = []

    @task(retry=RetryPolicy(max_attempts=3, wait=0))
    async def twice(ctx: TaskRun) -> str:
        calls.append(ctx.retry_attempt)
        if len(calls) < 3:
            raise KeyboardInterrupt
        return "third time"

    async with TaskManager("memory://", tasks=[twice]) as m:
        run = await m.queue("twice")
        await run_burst(m)
        final = await m.get_run(run.id)
    assert final.result == "third time" and calls == [0, 1, 2]
    assert [a.state for a in final.attempts] == [
        TaskState.failure,
        TaskState.failure,
        TaskState.success,
    ]


@pytest.mark.parametrize(
    ("how", "type_name"),
    [
        ("exit", "ProcessDiedError"),
        ("system_exit", "SystemExit"),
        ("interrupt", "KeyboardInterrupt"),
        ("own", "Poison"),
    ],
)
async def test_a_poisoned_cpu_bound_run_uses_its_attempts_then_fails(
    how: str, type_name: str
) -> None:
    pool = ProcessExecutor(size=1, kill_grace=0.2)
    async with TaskManager(
        "memory://", tasks=[pt.poison, pt.square], executors={"process": pool}
    ) as m:
        bad = await m.queue("poison", how=how)
        good = await m.queue("square", n=7)
        await run_burst(m, check=False)
        rb, rg = await m.get_run(bad.id), await m.get_run(good.id)
    assert rb.state is TaskState.failure
    assert rb.failure is not None and rb.failure.type_name == type_name
    assert [a.state for a in rb.attempts] == [TaskState.failure, TaskState.failure]
    assert rg.state is TaskState.success and rg.result == 49
