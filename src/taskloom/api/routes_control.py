"""Queue and schedule control: `/api/queues` (pause, resume) and `/api/schedules` (add,
switch, remove schedules at run time)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from ..errors import ScheduleError, ScheduleNotFoundError, UnknownTaskError
from ..queues import QueueInfo
from ..stored_schedules import ScheduleInfo, from_request
from .context import ApiContext
from .handlers import problem
from .schemas import Problem, Responses


class QueuePatch(BaseModel):
    """`PATCH /api/queues/{name}`: pause (true) or resume (false)."""

    paused: bool


class ScheduleIn(BaseModel):
    """`POST /api/schedules`: exactly one of `every` (seconds) and `cron` (+ `tz`)."""

    name: str
    task: str
    every: float | None = Field(default=None, gt=0)
    cron: str | None = None
    tz: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class SchedulePatch(BaseModel):
    """`PATCH /api/schedules/{name}`: switch a schedule on or off."""

    enabled: bool


def router(ctx: ApiContext) -> APIRouter:
    """The `/api/queues` and `/api/schedules` routes."""
    api = APIRouter(prefix="/api")
    manager = ctx.manager
    missing: Responses = {404: {"model": Problem, "description": "unknown schedule"}}
    gone: Responses = {
        **missing,
        409: {"model": Problem, "description": "a schedule in code: switch it off"},
    }

    @api.get("/queues", response_model=list[QueueInfo], tags=["queues"], summary="List queues")
    async def list_queues() -> list[QueueInfo]:
        return await manager.queues()

    @api.patch(
        "/queues/{name}", response_model=QueueInfo, tags=["queues"], summary="Pause or resume"
    )
    async def patch_queue(name: str, body: QueuePatch) -> QueueInfo:
        return await (manager.pause(name) if body.paused else manager.resume(name))

    @api.get(
        "/schedules", response_model=list[ScheduleInfo], tags=["schedules"],
        summary="Schedules in code and stored ones",
    )  # fmt: skip
    async def list_schedules() -> list[ScheduleInfo]:
        return await manager.schedules()

    @api.post(
        "/schedules", response_model=ScheduleInfo, status_code=status.HTTP_201_CREATED,
        tags=["schedules"], summary="Store a schedule",
    )  # fmt: skip
    async def add_schedule(body: ScheduleIn) -> Any:
        try:
            schedule = from_request(body.every, body.cron, body.tz)
            return await manager.add_schedule(
                body.name, body.task, schedule, body.params, enabled=body.enabled
            )
        except UnknownTaskError as exc:  # a field of the body, not the URL: 422, not 404
            return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
        except ScheduleError as exc:
            return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))

    @api.patch(
        "/schedules/{name}", response_model=ScheduleInfo, tags=["schedules"],
        summary="Switch a schedule on or off", responses=missing,
    )  # fmt: skip
    async def patch_schedule(name: str, body: SchedulePatch) -> Any:
        try:
            return await manager.set_schedule_enabled(name, body.enabled)
        except ScheduleNotFoundError as exc:
            return problem(status.HTTP_404_NOT_FOUND, str(exc))

    @api.delete(
        "/schedules/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["schedules"],
        summary="Remove a stored schedule", responses=gone,
    )  # fmt: skip
    async def delete_schedule(name: str) -> Response:
        try:
            await manager.remove_schedule(name)
        except ScheduleNotFoundError as exc:
            return problem(status.HTTP_404_NOT_FOUND, str(exc))
        except ScheduleError as exc:  # a schedule in code cannot be removed
            return problem(status.HTTP_409_CONFLICT, str(exc))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return api
