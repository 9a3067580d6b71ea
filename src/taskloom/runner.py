"""One attempt of a run, and the policy that turns its outcome into the run's next record.

Shared by `TaskManager.execute` (run now, here) and `TaskConsumer` (run from the queue), so
retries, rate limits, aborts and caching behave the same on both paths.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    CancelledRunError,
    ConfigError,
    NonRetryableError,
    PayloadTooLargeError,
    RateLimitError,
    Retry,
    TaskFailedError,
    TaskloomError,
)
from .executors.base import RunEnv
from .interface import check_size, input_hash
from .run import Attempt, TaskRun, TaskState
from .secret_inputs import SecretBox, inputs_of, secrets_digest
from .store.base import dt

if TYPE_CHECKING:
    from .executors.base import Executor
    from .hooks import RunHooks
    from .outcome import OutcomeChannel
    from .store.base import CoordinationStore
    from .task import Task

StopReason = Literal["abort", "drain", "lease_lost"]

# Retry(after=...) raised by a task with no retry policy may repeat this many attempts.
EXPLICIT_RETRY_ATTEMPTS = 3


@dataclass
class Stop:
    """Why the worker cancelled an attempt (set before cancelling it)."""

    reason: StopReason | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnv:
    """What one attempt needs from around it (the manager builds it; see `RunLifecycle`).

    `store` serves concurrency slots and the cache only; run records are the lifecycle's.
    """

    clock: Callable[[], float]
    store: CoordinationStore
    hooks: RunHooks
    executor_for: Callable[[Task], Awaitable[Executor]]
    slot_seconds: float
    outcomes: OutcomeChannel
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    secrets: SecretBox | None = None  # opens sealed secret inputs; keys their cache hash


def run_env(env: AttemptEnv, run: TaskRun) -> RunEnv:
    """The executor's view of one attempt of `run`."""
    return RunEnv(run, env.outcomes, env.clock)


def cache_key(task: Task, params: dict[str, Any], secrets: str | None = None) -> str | None:
    """The cache entry for these inputs, or None when the task does not cache.

    Secret inputs count only through `secrets`, their keyed hash (`secret_inputs.secrets_digest`).
    """
    if task.cache is None:
        return None
    version = task.cache.version or "0"
    digest = input_hash(params, task.cache.ignore)
    if secrets is not None:
        digest = f"{digest}.{secrets}"
    return f"cache:{task.name}:{version}:{task.cache.salt}:{digest}"


def _attempt(run: TaskRun, state: TaskState, now: float, error: dict[str, Any] | None) -> None:
    run.attempts.append(
        Attempt(
            attempt=run.retry_attempt, state=state, start=run.start, end=dt(now),
            worker=run.worker, error=error,
        )
    )  # fmt: skip


def _requeue(run: TaskRun, now: float, delay: float) -> TaskRun:
    run.state = TaskState.queued
    run.execute_after = dt(now + delay)
    run.worker = None
    run.progress = None
    return run


def decide(task: Task, run: TaskRun, exc: BaseException, now: float) -> TaskRun:
    """The next record of `run` after its attempt raised `exc` (policy, no I/O)."""
    failure = TaskFailedError.from_exception(exc, run.id)
    run.error = failure.to_dict()
    if isinstance(exc, CancelledRunError):
        _attempt(run, TaskState.aborted, now, run.error)
        run.state, run.end = TaskState.aborted, dt(now)
        return run
    if isinstance(exc, RateLimitError):
        policy = task.rate_limit_retry
        _attempt(run, TaskState.rate_limited, now, run.error)
        if policy is not None and policy.allows(run.rate_limit_attempt + 1):
            run.rate_limit_attempt += 1
            return _requeue(run, now, policy.delay(run.rate_limit_attempt))
        run.state, run.end = TaskState.rate_limited, dt(now)
        return run
    _attempt(run, TaskState.failure, now, run.error)
    policy = task.retry
    made = run.retry_attempt + 1
    if isinstance(exc, Retry):
        limit = policy.max_attempts if policy is not None else EXPLICIT_RETRY_ATTEMPTS
        if limit is None or made < limit:
            run.retry_attempt += 1
            return _requeue(run, now, exc.after)
    elif (
        policy is not None
        # deterministic failures: the same inputs would fail the same way again
        and not isinstance(exc, NonRetryableError | ConfigError | PayloadTooLargeError)
        and not failure.non_retryable
        and policy.retries_on(exc)
        and policy.allows(made)
    ):
        run.retry_attempt += 1
        return _requeue(run, now, policy.delay(run.retry_attempt))
    run.state, run.end = TaskState.failure, dt(now)
    return run


def interrupted(run: TaskRun, now: float) -> TaskRun:
    """The record of a run stopped by a worker drain: requeued at once, attempt not counted."""
    _attempt(run, TaskState.interrupted, now, {"type": "Interrupted", "message": "worker drain"})
    run.execute_after = None
    return _requeue(run, now, 0.0)


def succeeded(run: TaskRun, result: Any, now: float) -> TaskRun:
    """The record of a run whose attempt returned `result` (already encoded)."""
    _attempt(run, TaskState.success, now, None)
    run.state, run.end, run.result, run.error = TaskState.success, dt(now), result, None
    if run.progress is not None:
        run.progress = 1.0
    return run


async def attempt(env: AttemptEnv, task: Task, run: TaskRun, stop: Stop | None = None) -> TaskRun:
    """Execute one attempt of `run` (state running) and return its next record.

    Raises only `asyncio.CancelledError` when the worker lost the lease (nothing to write).
    """
    clock = env.clock
    slot = f"task:{task.name}" if task.max_concurrency > 0 else None
    key = cache_key(task, run.params)
    store = env.store
    try:
        kwargs = run._inputs
        if task.interface.secret_fields:  # opened here, where the attempt runs
            if kwargs is None:
                kwargs = inputs_of(task, run.params, env.secrets)
            if key is not None:
                key = cache_key(task, run.params, secrets_digest(task, kwargs, env.secrets))
        if slot is not None and not await store.acquire_slot(
            slot, run.id, task.max_concurrency, env.slot_seconds, clock()
        ):
            raise RateLimitError(
                f"max_concurrency={task.max_concurrency} of task {task.name!r} reached"
            )
        if key is not None and task.cache is not None and task.cache.behavior == "auto":
            hit = await store.kv_get(key, clock())
            if hit is not None:
                run.cache_hit = True
                return succeeded(run, env.loads(hit), clock())
        await env.hooks.before_run(run)
        if kwargs is None:
            kwargs = task.interface.call_kwargs(task.interface.validate_stored(run.params))
        executor = await env.executor_for(task)
        started = time.perf_counter()
        value = await executor.execute(task, run, kwargs, task.timeout_seconds, run_env(env, run))
        if stop is not None and stop.reason == "abort":
            # the task saw ctx.cancelled and returned: it stopped because it was asked to
            raise CancelledRunError("cancelled by request")
        run.metrics["elapsed"] = time.perf_counter() - started
        data = task.interface.encode_result(value)
        check_size(task.name, "output", data, task.max_inline_io_bytes)
        if key is not None and task.cache is not None:
            ttl = task.cache.ttl_seconds
            await store.kv_set(key, env.dumps(data), ttl, clock())
        new = succeeded(run, data, clock())
    except asyncio.CancelledError as exc:
        reason = stop.reason if stop is not None else None
        if reason == "drain":
            new = interrupted(run, clock())
        elif reason == "abort":
            new = decide(task, run, CancelledRunError("cancelled by request"), clock())
        elif reason is None and not _cancelled_here():
            # the task raised CancelledError itself: a failure like any other
            new = decide(task, run, exc, clock())
            await env.hooks.on_error(new, exc)
        else:
            raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the run fails, not the worker
        new = decide(task, run, exc, clock())
        await env.hooks.on_error(new, exc)
    finally:
        if slot is not None:
            await store.release_slot(slot, run.id)
    await env.hooks.after_run(new, new.failure if new.state.is_failure else None)
    return new


def _cancelled_here() -> bool:
    """True if someone cancelled the task running this code (the worker, or execute's caller)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def unknown_task_record(run: TaskRun, now: float, known: list[str]) -> TaskRun:
    """A run whose task this worker does not know fails at once, not retried."""
    exc = TaskloomError(f"unknown task {run.task!r} on this worker; known: {', '.join(known)}")
    failure = TaskFailedError.from_exception(exc, run.id)
    run.error = {**failure.to_dict(), "type": "UnknownTaskError", "non_retryable": True}
    _attempt(run, TaskState.failure, now, run.error)
    run.state, run.end = TaskState.failure, dt(now)
    return run
