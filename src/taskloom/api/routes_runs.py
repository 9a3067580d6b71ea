"""Run routes: list with filters and paging, detail with children, cancel, retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from ..manager import TaskManager
from ..run import TaskRun, TaskState
from .context import CHILDREN_PAGE, ApiContext
from .schemas import Problem, Responses, RunDetail, RunLogRecord, RunOut, RunPage, RunSummary

MAX_LIMIT = 500


async def page(
    manager: TaskManager,
    limit: int,
    *,
    task: str | None = None,
    state: TaskState | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    parent_id: str | None = None,
    cursor: str | None = None,
) -> tuple[list[TaskRun], str | None]:
    """Up to `limit` runs newest first, and the cursor of the next page if there is one.

    One extra run is read so that the last page says so, instead of costing an empty request.
    """
    runs = await manager.runs(
        task=task, state=state, queue=queue, since=since, limit=limit + 1, parent_id=parent_id,
        cursor=cursor,
    )  # fmt: skip
    if len(runs) > limit:
        return runs[:limit], runs[limit - 1].id
    return runs, None


def _aware(moment: datetime | None) -> datetime | None:
    # a query string without an offset means UTC (stores compare aware datetimes)
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def router(ctx: ApiContext) -> APIRouter:
    """The `/api/runs` routes."""
    api = APIRouter(prefix="/api/runs", tags=["runs"])
    manager = ctx.manager
    missing: Responses = {404: {"model": Problem, "description": "unknown run"}}

    @api.get("", response_model=RunPage, summary="List runs")
    async def list_runs(
        task: str | None = None,
        state: TaskState | None = None,
        queue: str | None = None,
        since: Annotated[datetime | None, Query(description="queued at or after")] = None,
        parent_id: str | None = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the last page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> RunPage:
        """Runs newest first, filtered; page with `cursor` (the last id of the previous page)."""
        runs, next_cursor = await page(
            manager, limit, task=task, state=state, queue=queue, since=_aware(since),
            parent_id=parent_id, cursor=cursor,
        )  # fmt: skip
        return RunPage(runs=[RunSummary.of(r) for r in runs], next_cursor=next_cursor)

    @api.get("/{run_id}", response_model=RunDetail, responses=missing, summary="One run")
    async def get_run(run_id: str) -> RunDetail:
        """A run in full, with its attempts, error, progress and newest children."""
        run = await manager.get_run(run_id, decode=False)  # JSON as stored, whatever the type
        children, more = await page(manager, CHILDREN_PAGE, parent_id=run_id)
        return RunDetail.with_children(run, children, more)

    @api.get(
        "/{run_id}/logs", response_model=list[RunLogRecord], responses=missing, summary="Run logs"
    )
    async def run_logs(run_id: str) -> list[RunLogRecord]:
        """What the run logged while it executed, oldest first (bounded per run)."""
        return [RunLogRecord(**r) for r in await manager.run_logs(run_id)]

    @api.post("/{run_id}/cancel", response_model=RunOut, responses=missing, summary="Cancel")
    async def cancel_run(run_id: str) -> RunOut:
        """Abort a queued run now; ask a running one to stop. A finished run is unchanged."""
        return RunOut.of(await manager.cancel(run_id))

    @api.post(
        "/{run_id}/retry",
        response_model=RunOut,
        status_code=status.HTTP_201_CREATED,
        responses={**missing, 409: {"model": Problem, "description": "run not finished"}},
        summary="Retry",
    )
    async def retry_run(run_id: str) -> RunOut:
        """Queue a finished run again as a new run (its `from_run_id` names this one)."""
        run = await manager.get_run(run_id)
        if not run.is_done:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"run {run_id} is {run.state.value}; only finished runs can be retried",
            )
        return RunOut.of(await manager.retry(run_id))

    return api
