"""One attempt's outcome as data, for attempts that run in another interpreter.

A pool child, a Ray worker and a Kubernetes Job all answer the same way: the result's JSON form,
or the failure (type name, message, traceback, cause chain) plus the taskloom control-flow kind
it stood for. The worker turns that back into the value or the same kind of error, so the retry
policy treats a remote attempt exactly as an in-process one. One codec serves every executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from . import serde
from .errors import CancelledRunError, ConfigError, RateLimitError, Retry, TaskFailedError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .store.base import CoordinationStore
    from .task import Task

Outcome = dict[str, Any]


def control_of(exc: BaseException) -> str | None:
    """Which control-flow error `exc` is, so the other side raises the same kind."""
    if isinstance(exc, CancelledRunError):
        return "abort"
    if isinstance(exc, RateLimitError):
        return "rate_limit"
    if isinstance(exc, Retry):
        return "retry"
    if isinstance(exc, ConfigError):  # a missing secret or module: retrying will not help
        return "config"
    return None


def success(data: Any) -> Outcome:
    """The outcome of an attempt that returned `data` (the result's encoded form)."""
    return {"ok": True, "result": data}


def failure(exc: BaseException, run_id: str | None) -> Outcome:
    """The outcome of an attempt that raised `exc`."""
    outcome: Outcome = {
        "ok": False,
        "error": TaskFailedError.from_exception(exc, run_id).to_dict(),
        "control": control_of(exc),
    }
    if isinstance(exc, Retry):
        outcome["after"] = exc.after
    return outcome


def value_of(task: Task, outcome: Outcome, run_id: str | None = None) -> Any:
    """The typed result of a successful outcome; otherwise raise the failure it carries.

    Control-flow errors (abort, rate limit, `Retry`, `ConfigError`) come back as their own
    classes, with the remote failure as their cause; anything else is a `TaskFailedError`
    keeping the original type name and traceback.
    """
    if outcome.get("ok"):
        return task.interface.decode_result(outcome.get("result"))
    error = dict(outcome.get("error") or {})
    if run_id is not None:
        error.setdefault("run_id", run_id)
    cause = TaskFailedError.from_dict(error)
    control = outcome.get("control")
    if control == "abort":
        raise CancelledRunError(cause.message) from cause
    if control == "rate_limit":
        raise RateLimitError(cause.message) from cause
    if control == "retry":
        raise Retry(after=float(outcome.get("after") or 0.0), reason=cause.message) from cause
    if control == "config":
        raise ConfigError(cause.message) from cause
    raise cause


def outcome_key(run_id: str, attempt: int) -> str:
    """The key/value entry holding the outcome of one attempt run out of process."""
    return f"k8s-outcome:{run_id}:{attempt}"


class OutcomeChannel(Protocol):
    """Where an attempt running elsewhere leaves its outcome for the worker that waits on it."""

    where: str

    async def put(self, run_id: str, attempt: int, outcome: Outcome, ttl: float) -> None:
        """Leave the outcome of one attempt (kept `ttl` seconds)."""
        ...

    async def take(self, run_id: str, attempt: int) -> Outcome | None:
        """The outcome of one attempt, removed once read; None if none was left."""
        ...


class StoreOutcomes:
    """Outcomes kept in the store's key/value space, which the far side shares."""

    def __init__(self, store: CoordinationStore, url: str, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self.where = f"store {url}"

    async def put(self, run_id: str, attempt: int, outcome: Outcome, ttl: float) -> None:
        """Write the outcome under `outcome_key`."""
        await self._store.kv_set(
            outcome_key(run_id, attempt), serde.dumps(outcome), ttl, self._clock()
        )

    async def take(self, run_id: str, attempt: int) -> Outcome | None:
        """Read and delete the outcome."""
        key = outcome_key(run_id, attempt)
        raw = await self._store.kv_get(key, self._clock())
        if raw is None:
            return None
        await self._store.kv_delete(key)
        data: Outcome = serde.loads(raw)
        return data
