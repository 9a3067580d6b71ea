"""Operational routes: state counts, workers, health and Prometheus metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse

from ..errors import StoreUnavailableError
from ..metrics import CONTENT_TYPE
from ..run import TaskState
from ..store.base import RunCount, queued_by_priority
from .context import ApiContext
from .schemas import HealthOut, StatsOut, WorkerOut

log = logging.getLogger("taskloom.api")


def count_states(counts: list[RunCount], tasks: list[str]) -> StatsOut:
    """State counts per task from the store's counters (every registered task listed)."""
    per_task: dict[str, dict[TaskState, int]] = {name: {} for name in tasks}
    totals: dict[TaskState, int] = {}
    for c in counts:
        states = per_task.setdefault(c.task, {})
        states[c.state] = states.get(c.state, 0) + c.n
        totals[c.state] = totals.get(c.state, 0) + c.n
    return StatsOut(
        counted=sum(totals.values()),
        tasks=per_task,
        totals=totals,
        queued=queued_by_priority(counts, None),
    )


def router(ctx: ApiContext, guard: Callable[..., Awaitable[None]]) -> APIRouter:
    """`/api/stats`, `/api/workers`, `/metrics` (guarded) and `/health` (open)."""
    api = APIRouter(tags=["status"])
    manager = ctx.manager
    guarded = [Depends(guard)]

    @api.get("/api/stats", response_model=StatsOut, dependencies=guarded, summary="State counts")
    async def stats() -> StatsOut:
        """Exact state counts per task and queued runs by priority, read from the store's
        maintained counters: one small read, whatever the number of runs stored."""
        return count_states(await manager.counts(), sorted(manager.tasks))

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
