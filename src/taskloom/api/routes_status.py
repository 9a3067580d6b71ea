"""Operational routes: state counts, workers, health and Prometheus metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import JSONResponse

from ..errors import StoreUnavailableError
from ..metrics import CONTENT_TYPE
from ..run import TaskRun, TaskState
from .context import MAX_STATS_WINDOW, ApiContext
from .schemas import HealthOut, StatsOut, WorkerOut

log = logging.getLogger("taskloom.api")


def count_states(runs: list[TaskRun], tasks: list[str], window: int) -> StatsOut:
    """State counts per task (every registered task listed, zeros left out)."""
    per_task: dict[str, dict[TaskState, int]] = {name: {} for name in tasks}
    totals: dict[TaskState, int] = {}
    for run in runs:
        counts = per_task.setdefault(run.task, {})
        counts[run.state] = counts.get(run.state, 0) + 1
        totals[run.state] = totals.get(run.state, 0) + 1
    oldest = runs[-1].queued or runs[-1].start if runs else None
    return StatsOut(
        window=window, counted=len(runs), oldest=oldest, tasks=per_task, totals=totals, queued={}
    )


def router(ctx: ApiContext, guard: Callable[..., Awaitable[None]]) -> APIRouter:
    """`/api/stats`, `/api/workers`, `/metrics` (guarded) and `/health` (open)."""
    api = APIRouter(tags=["status"])
    manager = ctx.manager
    guarded = [Depends(guard)]

    @api.get("/api/stats", response_model=StatsOut, dependencies=guarded, summary="State counts")
    async def stats(
        window: Annotated[int, Query(ge=1, le=MAX_STATS_WINDOW)] = ctx.stats_window,
    ) -> StatsOut:
        """State counts per task over the newest `window` runs (one bounded, indexed read),
        plus the exact number of queued runs by priority."""
        runs = await manager.runs(limit=window)
        out = count_states(runs, sorted(manager.tasks), window)
        out.queued = await manager.queue_length()
        return out

    @api.get(
        "/api/workers", response_model=list[WorkerOut], dependencies=guarded, summary="Workers"
    )
    async def workers() -> list[WorkerOut]:
        """Workers whose heartbeat has not expired, with the time of their last beat."""
        workers = await manager.workers()
        now = manager.clock()
        return [
            WorkerOut(
                worker=w.worker,
                last_seen=w.last_seen,
                age_seconds=max(0.0, now - w.last_seen),
                info=w.info,
            )
            for w in workers
        ]

    @api.get(
        "/health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "the store does not answer"}},
        summary="Health",
    )
    async def health() -> HealthOut | JSONResponse:
        """Open to all (probes): whether the store answers and how many workers beat."""
        try:
            await manager.ping()
            seen = len(await manager.workers())
        except StoreUnavailableError as exc:
            # the detail may name hosts or paths: log it, do not hand it to anonymous callers
            log.warning("health check: %s", exc)
            down = HealthOut(status="down", store="unavailable", workers=None)
            return JSONResponse(down.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
        return HealthOut(status="ok", store="ok", workers=seen)

    @api.get(
        "/metrics",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        """Counters of this process's hooks and gauges read from the store now."""
        await ctx.store()
        return Response(await ctx.metrics.scrape(manager), media_type=CONTENT_TYPE)

    return api
