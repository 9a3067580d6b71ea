"""The executor seam: a run and its inputs in, the function's return value out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import TaskFailedError, TaskTimeoutError

if TYPE_CHECKING:
    from ..outcome import OutcomeChannel
    from ..run import TaskRun
    from ..task import Task

T = TypeVar("T")


class RunEnv:
    """All an executor may use around one attempt: never the store, never the manager.

    `heartbeat()` says the run is alive (and its `progress` changed) so the lease holder beats
    now; `cancelled` is set when the run was asked to stop; `outcomes` is where an attempt run
    out of process (a Kubernetes Job) leaves its outcome; `clock` gives Unix seconds.
    """

    __slots__ = ("_run", "clock", "outcomes")

    def __init__(self, run: TaskRun, outcomes: OutcomeChannel, clock: Callable[[], float]) -> None:
        self._run = run
        self.outcomes = outcomes
        self.clock = clock

    def heartbeat(self) -> None:
        """Tell the run's lease holder to beat now (it saves the run's progress)."""
        on_progress = self._run._on_progress
        if on_progress is not None:
            on_progress(self._run)

    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the run is asked to stop: made on first use, as most attempts never ask
        (an event per inline child was a tenth of what the garbage collector walked)."""
        return self._run.cancelled


class Executor(Protocol):
    """Runs one attempt of a task somewhere (this loop, a thread, a process, a cluster).

    `execute` returns the function's raw return value or raises what it raised; it raises
    `TaskTimeoutError` past `timeout` seconds and stops the work where it can. Cancelling the
    awaiting coroutine must stop the work too (kill the process, delete the Job, ...).
    """

    name: str

    async def start(self) -> None:
        """Acquire resources (pools, connections); called once before first use."""
        ...

    async def stop(self) -> None:
        """Release resources."""
        ...

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Run one attempt and return the function's value."""
        ...


async def with_timeout(aw: Awaitable[T], timeout: float | None, task: str) -> T:
    """Await with an optional timeout that raises TaskTimeoutError naming the task."""
    if timeout is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise TaskTimeoutError(f"task {task!r} timed out after {timeout:g}s") from None


async def contained(aw: Awaitable[T], run_id: str | None) -> T:
    """Await a task's coroutine; a bare `BaseException` it raises becomes a run failure.

    SystemExit or KeyboardInterrupt leaving an asyncio task would stop the worker's event
    loop, and other BaseExceptions slip past `except Exception`: the run must fail instead,
    with the original type named. Cancellation passes through: only the caller knows whether
    it asked for it.
    """
    try:
        return await aw
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        raise TaskFailedError.from_exception(exc, run_id) from None


def contained_sync(fn: Callable[[], T], run_id: str | None) -> T:
    """`contained` for a function running on a pool thread (nothing there is ours to cancel)."""
    try:
        return fn()
    except Exception:
        raise
    except BaseException as exc:
        raise TaskFailedError.from_exception(exc, run_id) from None
