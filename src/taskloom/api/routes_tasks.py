"""Task routes: list definitions with their schedule state, switch schedules, queue a run."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, status

from .. import serde
from ..errors import InvalidParamsError, ScheduleError
from ..manager import TaskManager
from ..task import Task
from .context import ApiContext
from .schemas import EnableRequest, Problem, QueueRequest, Responses, RunOut, TaskOut

log = logging.getLogger("taskloom.api")


async def next_fires(manager: TaskManager) -> dict[str, datetime | None]:
    """Each scheduled task's next fire time; empty when the schedules cannot be read."""
    from ..scheduler import TaskScheduler

    try:
        return await TaskScheduler(manager).next_fires()
    except ScheduleError:
        log.exception("cannot compute next fire times")
        return {}


async def task_out(manager: TaskManager, task: Task, fires: dict[str, datetime | None]) -> TaskOut:
    """A task's definition plus whether its schedule is on and when it fires next."""
    info = task.info().model_dump()
    return TaskOut(
        **info, next_fire=fires.get(task.name), enabled=await manager.is_enabled(task.name)
    )


def check_encodable(task: Task, params: dict[str, Any]) -> None:
    """Raise InvalidParamsError when validated params have no JSON form (64-bit overflow).

    `TaskManager.enqueue` raises a bare TypeError there, which would be a 500 here.
    """
    stored = task.interface.stored_params(task.interface.validate(params))
    try:
        serde.dumps(stored)
    except TypeError as exc:
        error = {"loc": (), "msg": f"params have no JSON form: {exc}", "type": "json_encoding"}
        raise InvalidParamsError(task.name, [error]) from None


def router(ctx: ApiContext) -> APIRouter:
    """The `/api/tasks` routes."""
    api = APIRouter(prefix="/api/tasks", tags=["tasks"])
    manager = ctx.manager
    missing: Responses = {404: {"model": Problem, "description": "unknown task"}}

    @api.get("", response_model=list[TaskOut], summary="List tasks")
    async def list_tasks() -> list[TaskOut]:
        """Every registered task, sorted by name."""
        await ctx.store()
        fires = await next_fires(manager)
        return [await task_out(manager, manager.tasks[n], fires) for n in sorted(manager.tasks)]

    @api.get("/{name}", response_model=TaskOut, responses=missing, summary="One task")
    async def get_task(name: str) -> TaskOut:
        """The task's definition (as in the list), 404 when no task has that name."""
        task = manager.get_task(name)
        await ctx.store()
        return await task_out(manager, task, await next_fires(manager))

    @api.patch("/{name}", response_model=TaskOut, responses=missing, summary="Switch a schedule")
    async def set_enabled(name: str, body: EnableRequest) -> TaskOut:
        """Switch the task's schedule on or off (stored, so every scheduler sees it)."""
        task = manager.get_task(name)
        if body.enabled:
            await manager.enable(name)
        else:
            await manager.disable(name)
        return await task_out(manager, task, await next_fires(manager))

    @api.post(
        "/{name}/runs",
        response_model=RunOut,
        status_code=status.HTTP_201_CREATED,
        responses={
            **missing,
            413: {"model": Problem, "description": "params over max_inline_io_bytes"},
            422: {"model": Problem, "description": "invalid params, one error per field"},
        },
        summary="Queue a run",
    )
    async def queue_run(name: str, body: QueueRequest) -> RunOut:
        """Validate the params against the task's interface and queue a run.

        With a `dedup_key` that matches a pending run, that run is returned instead.
        """
        check_encodable(manager.get_task(name), body.params)
        run = await manager.enqueue(
            name, body.params, priority=body.priority, queue=body.queue,
            dedup_key=body.dedup_key, delay=body.delay,
        )  # fmt: skip
        return RunOut.of(run)

    return api
