"""Request and response models of the HTTP API.

Responses are built field by field from the run record, never dumped whole: a field added to
`TaskRun` later (or one holding internal state such as `trace`) stays out of the API until it is
named here. Stored params already leave out every `SecretStr` input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..run import Attempt, TaskPriority, TaskRun, TaskState
from ..secret_inputs import redact
from ..task import TaskInfo

# the `responses=` argument of FastAPI route decorators (documented error bodies)
Responses = dict[int | str, dict[str, Any]]

MAX_DELAY_SECONDS = 10 * 365 * 24 * 3600  # far enough; beyond it datetimes overflow


class ErrorBrief(BaseModel):
    """A failed run's error type and message (what the runs table shows)."""

    type: str = "Exception"
    message: str = ""

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> ErrorBrief | None:
        """From a stored error dict."""
        if not data:
            return None
        return cls(type=str(data.get("type") or "Exception"), message=str(data.get("message", "")))


class ErrorOut(ErrorBrief):
    """A run's stored error in full: traceback text and the cause chain."""

    traceback: str = ""
    run_id: str | None = None
    non_retryable: bool = False
    cause: ErrorOut | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> ErrorOut | None:
        """From a stored error dict (older records may lack fields)."""
        if not data:
            return None
        cause = data.get("cause")
        return cls(
            type=str(data.get("type") or "Exception"),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback") or ""),
            run_id=data.get("run_id") if isinstance(data.get("run_id"), str) else None,
            non_retryable=bool(data.get("non_retryable", False)),
            cause=cls.of(cause) if isinstance(cause, dict) else None,
        )


class AttemptOut(BaseModel):
    """One attempt in a run's history."""

    attempt: int
    state: TaskState
    start: datetime | None
    end: datetime | None
    worker: str | None
    error: ErrorOut | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        """From a stored attempt."""
        return cls(
            attempt=a.attempt, state=a.state, start=a.start, end=a.end, worker=a.worker,
            error=ErrorOut.of(a.error),
        )  # fmt: skip


class RunSummary(BaseModel):
    """One run as listed: state, timing, lineage and progress, without params or result."""

    id: str
    task: str
    state: TaskState
    priority: TaskPriority
    queue: str
    queued: datetime | None
    start: datetime | None
    end: datetime | None
    execute_after: datetime | None
    duration: float | None = Field(description="seconds between start and end")
    retry_attempt: int
    rate_limit_attempt: int
    parent_id: str | None
    root_run_id: str | None
    from_run_id: str | None
    dedup_key: str | None
    worker: str | None
    progress: float | None
    progress_note: str | None
    tags: list[str]
    cache_hit: bool
    cancel_requested: bool
    error: ErrorBrief | None

    @classmethod
    def fields_of(cls, run: TaskRun) -> dict[str, Any]:
        """The summary's fields taken from a run record."""
        return {
            "id": run.id, "task": run.task, "state": run.state, "priority": run.priority,
            "queue": run.queue, "queued": run.queued, "start": run.start, "end": run.end,
            "execute_after": run.execute_after, "duration": run.duration,
            "retry_attempt": run.retry_attempt, "rate_limit_attempt": run.rate_limit_attempt,
            "parent_id": run.parent_id, "root_run_id": run.root_run_id,
            "from_run_id": run.from_run_id, "dedup_key": run.dedup_key, "worker": run.worker,
            "progress": run.progress, "progress_note": run.progress_note, "tags": list(run.tags),
            "cache_hit": run.cache_hit, "cancel_requested": run.cancel_requested,
            "error": ErrorBrief.of(run.error),
        }  # fmt: skip

    @classmethod
    def of(cls, run: TaskRun) -> RunSummary:
        """From a run record."""
        return cls(**cls.fields_of(run))


class RunOut(RunSummary):
    """A run in full: params (secrets left out), result, error, attempts, metrics."""

    params: dict[str, Any]
    result: Any
    error: ErrorOut | None
    attempts: list[AttemptOut]
    metrics: dict[str, float]

    @classmethod
    def of(cls, run: TaskRun) -> RunOut:
        """From a run record."""
        return cls(**cls._full(run))

    @classmethod
    def _full(cls, run: TaskRun) -> dict[str, Any]:
        return {
            **RunSummary.fields_of(run),
            "params": redact(run.params),  # sealed secret inputs shown as asterisks
            "result": run.result,
            "error": ErrorOut.of(run.error),
            "attempts": [AttemptOut.of(a) for a in run.attempts],
            "metrics": dict(run.metrics),
        }


class RunDetail(RunOut):
    """A run in full plus its newest child runs."""

    children: list[RunSummary]
    children_next_cursor: str | None = Field(
        description="more children: GET /api/runs?parent_id=<id>&cursor=<this>"
    )

    @classmethod
    def with_children(
        cls, run: TaskRun, children: list[TaskRun], next_cursor: str | None
    ) -> RunDetail:
        """From a run record and a page of its children."""
        return cls(
            **cls._full(run),
            children=[RunSummary.of(c) for c in children],
            children_next_cursor=next_cursor,
        )


class RunPage(BaseModel):
    """A page of runs, newest first; pass `next_cursor` as `cursor` for the next page."""

    runs: list[RunSummary]
    next_cursor: str | None


class RunLogRecord(BaseModel):
    """One record a run logged: `GET /api/runs/{id}/logs` returns a list of them."""

    ts: str = Field(description="ISO 8601 time, UTC")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    logger: str
    message: str


class TaskOut(TaskInfo):
    """A task's definition plus its schedule state."""

    next_fire: datetime | None = Field(description="next scheduled fire; null when none/disabled")
    enabled: bool = Field(description="false when the task's schedule is switched off")


class QueueRequest(BaseModel):
    """Body of `POST /api/tasks/{name}/runs`."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="the task's inputs")
    priority: TaskPriority | None = Field(None, description="default: the task's priority")
    queue: str | None = Field(None, min_length=1, max_length=200)
    dedup_key: str | None = Field(None, min_length=1, max_length=500)
    delay: float | None = Field(
        None, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False, description="seconds to wait"
    )


class EnableRequest(BaseModel):
    """Body of `PATCH /api/tasks/{name}`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class StatsOut(BaseModel):
    """Exact state counts of every stored run, per task, plus queued runs by priority."""

    counted: int = Field(description="every run the store holds (purged runs are gone)")
    tasks: dict[str, dict[TaskState, int]] = Field(
        description="per task (every registered one listed), its runs by state; zeros left out"
    )
    totals: dict[TaskState, int]
    queued: dict[TaskPriority, int] = Field(description="every queued run, by priority")


class WorkerOut(BaseModel):
    """A live worker as its heartbeats show it."""

    worker: str
    last_seen: datetime
    age_seconds: float
    info: dict[str, Any]


class HealthOut(BaseModel):
    """Whether the store answers and how many workers beat."""

    status: Literal["ok", "down"]
    store: str
    workers: int | None


class FieldError(BaseModel):
    """One invalid field: where, what, and pydantic's error type (the input is not echoed)."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every error response: a message and, for validation errors, the fields."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
