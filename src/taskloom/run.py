"""TaskRun (one run's record and, while it executes, its context), states and priorities."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import secrets as _secrets
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import CancelledRunError, ConfigError, TaskFailedError

if TYPE_CHECKING:
    from .manager import TaskManager
    from .report import ReportFormat


class TaskState(StrEnum):
    """Lifecycle state of a run."""

    init = "init"
    queued = "queued"
    running = "running"
    success = "success"
    failure = "failure"
    aborted = "aborted"
    rate_limited = "rate_limited"
    interrupted = "interrupted"

    @property
    def is_done(self) -> bool:
        """True for the terminal states."""
        return self in _DONE

    @property
    def is_failure(self) -> bool:
        """True for the terminal states that are not a success."""
        return self in _DONE and self is not TaskState.success


_DONE = frozenset({TaskState.success, TaskState.failure, TaskState.aborted, TaskState.rate_limited})


class TaskPriority(StrEnum):
    """Priority of a run; high runs are claimed first."""

    high = "high"
    medium = "medium"
    low = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for medium, 2 for low: the order claims use."""
        return _RANK[self]


_RANK = {TaskPriority.high: 0, TaskPriority.medium: 1, TaskPriority.low: 2}


def new_run_id() -> str:
    """A 32-hex-digit id that sorts by creation time: 56 bits of 100 ns ticks + 72 random bits.

    The fine clock keeps ids made one after another in one process in order.
    """
    # random's shared generator (reseeded in a forked child): ids need to be unique, not
    # secret, and a system call for every run cost a tenth of building one
    return f"{time.time_ns() // 100:014x}{random.getrandbits(72):018x}"


def run_id_at(seconds: float) -> str:
    """A `new_run_id()` as if made at Unix time `seconds` (records written after the fact)."""
    return f"{int(seconds * 1e7):014x}{_secrets.token_hex(9)}"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def is_in_cpu_process() -> bool:
    """True inside a process spawned to run a cpu_bound task (TASK_MANAGER_SPAWN=true)."""
    return os.environ.get("TASK_MANAGER_SPAWN", "").lower() == "true"


class _Live:
    """What a run carries only while it executes (never stored)."""

    __slots__ = (
        "cancelled", "child_index", "fresh_children", "inputs", "manager", "node",
        "on_progress", "report", "secrets",
    )  # fmt: skip

    def __init__(self) -> None:
        self.manager: TaskManager | None = None
        self.cancelled: asyncio.Event | None = None
        self.secrets: Mapping[str, str] = {}
        self.on_progress: Callable[[TaskRun], None] | None = None
        self.child_index = 0
        # whether no child of this run was in the store when its first child started
        self.fresh_children: Any = None  # lifecycle's shared read, made on the first child
        self.inputs: dict[str, Any] | None = None
        self.report: list[dict[str, str]] | None = None  # None: the task does not report
        self.node: Any = None  # a DAG node's runtime (`taskloom.dag.current_node()`)


class Attempt(BaseModel):
    """One attempt of a run, kept in the run's history."""

    attempt: int
    state: TaskState
    start: datetime | None = None
    end: datetime | None = None
    worker: str | None = None
    error: dict[str, Any] | None = None


class TaskRun(BaseModel):
    """The record of one run of a task; inside the task it is also the run context."""

    model_config = ConfigDict(validate_assignment=False, arbitrary_types_allowed=True)

    id: str = Field(default_factory=new_run_id)
    task: str
    priority: TaskPriority = TaskPriority.medium
    params: dict[str, Any] = Field(default_factory=dict)
    state: TaskState = TaskState.init
    queued: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    execute_after: datetime | None = None
    rate_limit_attempt: int = 0
    retry_attempt: int = 0
    from_run_id: str | None = None
    root_run_id: str | None = Field(default_factory=lambda data: data["id"])
    parent_id: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    queue: str = "default"
    dedup_key: str | None = None
    worker: str | None = None
    progress: float | None = None
    progress_note: str | None = None
    tags: list[str] = Field(default_factory=list)
    cache_hit: bool = False
    cancel_requested: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    trace: dict[str, str] = Field(default_factory=dict)

    # The live context of an executing run sits in one lazily made object: a record read from
    # a store never pays for it (each private attribute slows every model construction).
    _live: _Live | None = PrivateAttr(default=None)

    def _ctx(self) -> _Live:
        """The live context, made on first use (read through the private dict: pydantic's
        attribute hooks cost microseconds on the hot path)."""
        private = self.__pydantic_private__
        assert private is not None
        live = private.get("_live")
        if live is None:
            live = private["_live"] = _Live()
        return live

    def _peek(self) -> _Live | None:
        private = self.__pydantic_private__
        return None if private is None else private.get("_live")

    @property
    def _manager(self) -> TaskManager | None:
        live = self._peek()
        return None if live is None else live.manager

    @_manager.setter
    def _manager(self, value: TaskManager | None) -> None:
        self._ctx().manager = value

    @property
    def _cancelled(self) -> asyncio.Event | None:
        live = self._peek()
        return None if live is None else live.cancelled

    @_cancelled.setter
    def _cancelled(self, value: asyncio.Event | None) -> None:
        self._ctx().cancelled = value

    @property
    def _secrets(self) -> Mapping[str, str]:
        live = self._peek()
        return {} if live is None else live.secrets

    @_secrets.setter
    def _secrets(self, value: Mapping[str, str]) -> None:
        self._ctx().secrets = value

    @property
    def _on_progress(self) -> Callable[[TaskRun], None] | None:
        live = self._peek()
        return None if live is None else live.on_progress

    @_on_progress.setter
    def _on_progress(self, value: Callable[[TaskRun], None] | None) -> None:
        self._ctx().on_progress = value

    @property
    def _child_index(self) -> int:
        live = self._peek()
        return 0 if live is None else live.child_index

    @_child_index.setter
    def _child_index(self, value: int) -> None:
        self._ctx().child_index = value

    @property
    def _inputs(self) -> dict[str, Any] | None:
        """Validated inputs kept in memory for a run executed here: SecretStr inputs never
        reach the store, so they cannot be rebuilt from `params`."""
        live = self._peek()
        return None if live is None else live.inputs

    @_inputs.setter
    def _inputs(self, value: dict[str, Any] | None) -> None:
        self._ctx().inputs = value

    @property
    def _report(self) -> list[dict[str, str]] | None:
        """Report parts of this attempt; None unless the task has `report=True`."""
        live = self._peek()
        return None if live is None else live.report

    @_report.setter
    def _report(self, value: list[dict[str, str]] | None) -> None:
        self._ctx().report = value

    @property
    def _node(self) -> Any:
        """The DAG node runtime of a run a DAG launched (see `taskloom.dag.current_node`)."""
        live = self._peek()
        return None if live is None else live.node

    @_node.setter
    def _node(self, value: Any) -> None:
        self._ctx().node = value

    def _call_scope(self) -> AbstractContextManager[object]:
        """What wraps the task function's call in the thread or process that runs it."""
        node = self._node
        return nullcontext() if node is None else node.call_scope()

    # -- record helpers -------------------------------------------------------------------------
    @property
    def is_done(self) -> bool:
        """True once the run reached a terminal state."""
        return self.state.is_done

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, when both are known."""
        if self.start and self.end:
            return (self.end - self.start).total_seconds()
        return None

    @property
    def failure(self) -> TaskFailedError | None:
        """The stored error rebuilt as a `TaskFailedError`, if the run failed."""
        return TaskFailedError.from_dict(self.error) if self.error else None

    @property
    def name(self) -> str:
        """The task's name (alias of `task`, as fluid spells it)."""
        return self.task

    # -- context API, valid while the run executes ---------------------------------------------
    @property
    def manager(self) -> TaskManager:
        """The manager executing this run."""
        if self._manager is None:
            raise RuntimeError("this TaskRun is a record, not a live run context")
        return self._manager

    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the run is asked to stop (cancel or drain); long tasks should check it."""
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
        return self._cancelled

    @property
    def logger(self) -> logging.Logger:
        """A logger named after the task."""
        return logging.getLogger(f"taskloom.task.{self.task}")

    @property
    def secrets(self) -> Mapping[str, str]:
        """Secret values resolved for this run; never stored."""
        return self._secrets

    def set_progress(self, fraction: float, note: str | None = None) -> None:
        """Report progress in [0, 1]; it reaches the store with the next heartbeat."""
        self.progress = min(1.0, max(0.0, float(fraction)))
        self.progress_note = note
        if self._on_progress is not None:
            self._on_progress(self)

    def heartbeat(self) -> None:
        """Ask the worker to extend this run's lease now (long steps without progress)."""
        if self._on_progress is not None:
            self._on_progress(self)

    def report(self, content: str, *, format: ReportFormat = "auto") -> None:
        """Add a part to this run's report page (a task with `report=True` only).

        `format="auto"` reads text starting with `<` as HTML, anything else as Markdown.
        """
        parts = self._report
        if parts is None:
            raise ConfigError(
                f"task {self.task!r} cannot report: declare it with @task(report=True)"
            )
        from .report import report_part

        parts.append(report_part(content, format))

    def abort(self, reason: str = "aborted by task") -> None:
        """End the run as `aborted`; it is never retried."""
        raise CancelledRunError(reason)

    def record(self) -> TaskRun:
        """A deep copy of the record without the live context (what a store keeps)."""
        new = self.model_copy(
            update={
                "params": copy.deepcopy(self.params),
                "result": copy.deepcopy(self.result),
                "error": copy.deepcopy(self.error),
                "tags": list(self.tags),
                "metrics": dict(self.metrics),
                "attempts": list(self.attempts),  # Attempt records are never mutated
                "trace": dict(self.trace),
            }
        )
        new.__pydantic_private__ = {"_live": None}
        return new


# Every field in declaration order (pydantic's __dict__ order) with its default; None stands
# for the fields a factory fills (made_run makes those itself).
_TEMPLATE: dict[str, Any] = {
    name: None if info.default_factory is not None else info.default
    for name, info in TaskRun.model_fields.items()
}
_set_slot = object.__setattr__


def made_run(fields: dict[str, Any]) -> TaskRun:
    """A TaskRun from `fields` whose values already have their fields' types: no validation.

    For records built from inputs that were checked on the way in (`RunLifecycle.build`):
    `TaskRun(**fields)` would check every value again, which is about half the cost of
    building a run. Fields not given take their defaults, as in the constructor.
    """
    data = _TEMPLATE.copy()
    run_id = fields.get("id") or new_run_id()
    data["id"] = data["root_run_id"] = run_id
    data["params"], data["tags"], data["metrics"], data["attempts"], data["trace"] = (
        {}, [], {}, [], {},
    )  # fmt: skip
    data.update(fields)
    run = TaskRun.__new__(TaskRun)
    _set_slot(run, "__dict__", data)
    _set_slot(run, "__pydantic_fields_set__", set(fields))
    _set_slot(run, "__pydantic_extra__", None)
    _set_slot(run, "__pydantic_private__", {"_live": None})
    return run


_current_run: ContextVar[TaskRun | None] = ContextVar("taskloom_current_run", default=None)


def current_run() -> TaskRun | None:
    """The run executing in this context, if any."""
    return _current_run.get()


def set_current_run(run: TaskRun | None) -> Any:
    """Set the current run; returns the token to reset it with."""
    return _current_run.set(run)


def reset_current_run(token: Any) -> None:
    """Undo `set_current_run`."""
    _current_run.reset(token)
