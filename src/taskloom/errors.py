"""Every error taskloom raises, under one root.

::

    TaskloomError
    ├── UnknownTaskError
    ├── InvalidParamsError (also ValueError)
    ├── PayloadTooLargeError
    ├── ScheduleError (also ValueError)
    │   └── ScheduleNotFoundError (also KeyError)
    ├── ConfigError
    ├── StoreUnavailableError
    ├── RunNotFoundError (also KeyError)
    ├── CorruptRecordError      a stored run record cannot be read
    ├── LeaseLostError
    ├── DagCycleError
    ├── RateLimitError          raised by a task to ask for a rate-limit retry
    ├── Retry                   raised by a task: retry after N seconds (counted)
    ├── NonRetryableError       raised by a task: fail now, whatever the policy
    │   ├── ResultEncodingError (also TypeError)
    │   └── ReplayMismatchError
    ├── CancelledRunError       the run was aborted (by ctx.abort or manager.cancel)
    ├── TaskTimeoutError (also TimeoutError)
    └── TaskFailedError         a run failed; rebuilt from stored fields, never unpickled
"""

from __future__ import annotations

import traceback as _traceback
from typing import Any


class TaskloomError(Exception):
    """Root of every taskloom error."""


class UnknownTaskError(TaskloomError, LookupError):
    """No task of that name is registered on the manager."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; known tasks: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown task {name!r}{hint}")
        self.name = name


class InvalidParamsError(TaskloomError, ValueError):
    """Params do not match a task's typed interface; `errors` lists each field problem."""

    def __init__(self, task: str, errors: list[dict[str, Any]]) -> None:
        parts = []
        for err in errors:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(params)"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        super().__init__(f"invalid params for task {task!r}: {'; '.join(parts)}")
        self.task = task
        # pydantic puts the offending value under "input": a mistyped secret must not be
        # echoed back through an error (logs, API responses), so it never gets that far
        self.errors = [{k: v for k, v in err.items() if k not in _ECHOING} for err in errors]


_ECHOING = ("input", "url")


class PayloadTooLargeError(TaskloomError, ValueError):
    """An input or output is larger than the task's `max_inline_io_bytes`."""

    def __init__(self, task: str, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} of task {task!r} is {size} bytes, over max_inline_io_bytes={limit}"
        )
        self.task = task
        self.size = size
        self.limit = limit


class ScheduleError(TaskloomError, ValueError):
    """A schedule (cron expression, time zone, interval) is invalid."""


class ScheduleNotFoundError(ScheduleError, KeyError):
    """No schedule of that name exists (in code or stored)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} not found")
        self.name = name

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ConfigError(TaskloomError):
    """Configuration is wrong or an optional extra is missing."""


class SecretKeyError(ConfigError):
    """A sealed secret input cannot be opened here: set the same `TASKLOOM_SECRET_KEY` (or
    `TaskManager(secret_key=...)`) on every process that queues or runs the task."""


def missing_extra(extra: str, module: str) -> ConfigError:
    """Build the error raised when an optional dependency is not installed."""
    return ConfigError(
        f"{module} is not installed; install it with: pip install 'taskloom[{extra}]'"
    )


class StoreUnavailableError(TaskloomError, ConnectionError):
    """The store (database or broker) cannot be reached; nothing was written."""


class RunNotFoundError(TaskloomError, KeyError):
    """No run with that id exists in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CorruptRecordError(TaskloomError):
    """A stored run record cannot be decoded (broken JSON, or fields of the wrong type).

    `reason` says what is wrong without quoting the stored values, which may be private.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"the record of run {run_id!r} could not be read: {reason}")
        self.run_id = run_id
        self.reason = reason


class LeaseLostError(TaskloomError):
    """A worker tried to finish a run whose lease it no longer holds."""


class DagCycleError(TaskloomError):
    """A DAG's dependencies contain a cycle or name a missing node."""


class RateLimitError(TaskloomError):
    """Raise inside a task to ask to be retried later under `rate_limit_retry`."""


class Retry(TaskloomError):
    """Raise inside a task to be retried after `after` seconds (counts as an attempt)."""

    def __init__(self, after: float = 0.0, reason: str = "") -> None:
        super().__init__(reason or f"retry requested after {after}s")
        self.after = after


class NonRetryableError(TaskloomError):
    """Raise inside a task to fail the run now, whatever its retry policy says."""


class ReplayMismatchError(NonRetryableError):
    """A retried parent called a different child at the same position (never retried)."""


class ResultEncodingError(NonRetryableError, TypeError):
    """A task returned a value that cannot be encoded as JSON; retrying would not help."""


class CancelledRunError(TaskloomError):
    """The run was aborted; it is never retried."""


class TaskTimeoutError(TaskloomError, TimeoutError):
    """A run (or a wait) took longer than allowed."""


class TaskFailedError(TaskloomError):
    """A run failed. Built from stored fields (type name, message, traceback, cause chain)."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        type_name: str = "Exception",
        traceback: str = "",
        non_retryable: bool = False,
        cause: TaskFailedError | None = None,
    ) -> None:
        super().__init__(f"{type_name}: {message}" if type_name else message)
        self.run_id = run_id
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.non_retryable = non_retryable
        self.cause = cause

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form stored on a run."""
        return {
            "type": self.type_name,
            "message": self.message,
            "traceback": self.traceback,
            "run_id": self.run_id,
            "non_retryable": self.non_retryable,
            "cause": self.cause.to_dict() if self.cause else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskFailedError:
        """Rebuild from the stored form."""
        cause = data.get("cause")
        return cls(
            str(data.get("message", "")),
            run_id=data.get("run_id"),
            type_name=str(data.get("type", "Exception")),
            traceback=str(data.get("traceback", "")),
            non_retryable=bool(data.get("non_retryable", False)),
            cause=cls.from_dict(cause) if cause else None,
        )

    @classmethod
    def from_exception(cls, exc: BaseException, run_id: str | None = None) -> TaskFailedError:
        """Turn any exception into data; causes are converted recursively."""
        if isinstance(exc, TaskFailedError):
            return exc
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        return cls(
            str(exc),
            run_id=run_id,
            type_name=type(exc).__name__,
            traceback=tb,
            non_retryable=isinstance(exc, NonRetryableError),
            cause=cls.from_exception(inner) if inner is not None else None,
        )
