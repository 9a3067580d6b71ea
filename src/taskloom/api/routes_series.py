"""`/api/stats/series`: finished runs per time bucket, for the dashboard's throughput chart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..run import TaskRun, TaskState
from ..store.base import dt
from .context import MAX_STATS_WINDOW, ApiContext

MAX_SPAN_SECONDS = 7 * 24 * 3600
MAX_BUCKETS = 240


class SeriesBucket(BaseModel):
    """Runs that ended in one bucket, by outcome."""

    start: datetime
    success: int = 0
    failure: int = Field(0, description="failure, aborted and rate_limited together")


class SeriesOut(BaseModel):
    """Finished runs per bucket over the newest `span_seconds`, oldest bucket first."""

    span_seconds: int
    bucket_seconds: float
    buckets: list[SeriesBucket]
    counted: int = Field(description="runs read (queued in the span, at most `limit`)")
    truncated: bool = Field(description="true when the span held more runs than were read")


def bucketed(runs: list[TaskRun], end: float, span: int, count: int) -> list[SeriesBucket]:
    """Count the finished runs of `runs` into `count` equal buckets ending at `end`."""
    width = span / count
    start = end - span
    buckets = [SeriesBucket(start=dt(start + i * width)) for i in range(count)]
    for run in runs:
        if not run.is_done or run.end is None:
            continue
        index = int((run.end.timestamp() - start) // width)
        if 0 <= index < count:
            if run.state is TaskState.success:
                buckets[index].success += 1
            else:
                buckets[index].failure += 1
    return buckets


def router(ctx: ApiContext) -> APIRouter:
    """The series route (guarded by the caller)."""
    api = APIRouter(tags=["status"])
    manager = ctx.manager

    @api.get("/api/stats/series", response_model=SeriesOut, summary="Throughput over time")
    async def series(
        span: Annotated[int, Query(ge=60, le=MAX_SPAN_SECONDS, description="seconds")] = 3600,
        buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 30,
        limit: Annotated[int, Query(ge=1, le=MAX_STATS_WINDOW)] = MAX_STATS_WINDOW,
    ) -> SeriesOut:
        """Successes and failures per bucket, counted by when each run ended; one bounded
        read of the runs queued within the span (newest first)."""
        now = manager.clock()
        runs = await manager.runs(since=datetime.fromtimestamp(now - span, UTC), limit=limit)
        return SeriesOut(
            span_seconds=span,
            bucket_seconds=span / buckets,
            buckets=bucketed(runs, now, span, buckets),
            counted=len(runs),
            truncated=len(runs) >= limit,
        )

    return api
