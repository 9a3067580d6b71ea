"""Child runs: a task called inside a running task becomes a durable child run."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import TaskFailedError
from .run import TaskRun, TaskState

if TYPE_CHECKING:
    from .task import Task


async def call_child(
    parent: TaskRun, task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Run `task` as a child of `parent` and return its typed result (or raise its failure)."""
    manager = parent.manager
    model = task.prepare(args, kwargs)
    run = manager.new_run(task.name if task.name in manager.tasks else task, {}, parent=parent)
    run.params = task.interface.stored_params(model)
    done = await manager.execute_run(run)
    if done.state is not TaskState.success:
        failure = done.failure or TaskFailedError(f"child run ended {done.state}", run_id=done.id)
        raise failure
    return task.interface.decode_result(done.result)


def call_child_sync(
    parent: TaskRun, task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """`call_child` from a worker thread: hop to the manager's loop and block for the result."""
    loop = parent.manager.loop
    if loop is None:
        raise RuntimeError("manager is not connected")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            f"sync task {task.name!r} called from async code: use `await {task.name}.aio(...)`"
        )
    return asyncio.run_coroutine_threadsafe(call_child(parent, task, args, kwargs), loop).result()
