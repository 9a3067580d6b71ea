"""What a worker prints: a start-up banner and one line per finished attempt.

The lines go through the `taskloom.worker` logger, so `setup_logging` decides between text
and JSON; each record also carries the fields (task, run_id, state, duration...) as extras.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import TaskFailedError
from .hooks import RunHooks
from .manager import TaskManager
from .run import TaskRun, TaskState
from .run_tree import format_seconds

log = logging.getLogger("taskloom.worker")


def redact_url(url: str) -> str:
    """The store URL with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def banner(
    manager: TaskManager,
    worker_id: str,
    queues: Sequence[str] | None,
    concurrency: int,
    *,
    scheduler: bool = False,
) -> None:
    """Log what this worker serves: store, queues, concurrency and tasks."""
    tasks = []
    for t in manager.tasks.values():
        tasks.append(f"{t.name} ({t.schedule})" if t.schedule is not None else t.name)
    store = redact_url(manager.store.url)
    lines = [
        f"worker {worker_id} ready",
        f"  store:       {store}",
        f"  queues:      {', '.join(queues) if queues else 'all'}",
        f"  concurrency: {concurrency}",
        f"  scheduler:   {'on' if scheduler else 'off'}",
        f"  tasks:       {', '.join(tasks) if tasks else '(none registered)'}",
    ]
    log.info(
        "\n".join(lines),
        extra={"event": "worker_ready", "worker": worker_id, "store": store,
               "queues": list(queues) if queues else None, "concurrency": concurrency,
               "tasks": list(manager.tasks)},
    )  # fmt: skip


def _duration(run: TaskRun) -> float | None:
    """Seconds the last attempt took (a retried run's `start` is its first attempt's)."""
    if run.state is TaskState.success and "elapsed" in run.metrics:
        return run.metrics["elapsed"]
    if run.attempts:
        last = run.attempts[-1]
        if last.start is not None and last.end is not None:
            return (last.end - last.start).total_seconds()
    return run.duration


class WorkerReport(RunHooks):
    """A hook logging one line per finished attempt (with the traceback on failure)."""

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        """Log the attempt's outcome."""
        seconds = _duration(run)
        took = f" in {format_seconds(seconds)}" if seconds is not None else ""
        head = run.task  # the run id is on the line already (record.run_id)
        fields: dict[str, Any] = {
            "event": "run_finished", "task": run.task, "run_id": run.id,
            "state": run.state.value, "duration": seconds, "attempt": run.retry_attempt,
        }  # fmt: skip
        if run.state is TaskState.success:
            log.info("success %s%s", head, took, extra=fields)
            return
        failure = run.failure
        detail = f"{failure.type_name}: {failure.message}" if failure else ""
        if failure is not None:
            fields["error"] = detail
            fields["traceback"] = failure.traceback or None
        if run.state is TaskState.queued:
            last = run.attempts[-1].state.value if run.attempts else "failure"
            wait = ""
            if run.execute_after is not None and run.attempts and run.attempts[-1].end:
                delay = (run.execute_after - run.attempts[-1].end).total_seconds()
                wait = f" in {format_seconds(max(delay, 0.0))}"
                fields["retry_in"] = max(delay, 0.0)
            fields["state"] = "retry" if last == "failure" else last
            fields.pop("traceback", None)  # the final failure prints it; a retry is one line
            # waiting out a rate limit counts no attempt and can repeat often: not a warning
            level = logging.DEBUG if last == "rate_limited" else logging.WARNING
            log.log(
                level,
                "%s %s%s: %s; queued again%s", fields["state"], head, took, detail, wait,
                extra=fields,
            )  # fmt: skip
            return
        log.error("%s %s%s: %s", run.state.value, head, took, detail, extra=fields)
