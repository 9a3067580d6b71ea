"""Run logs: what a task logs while it runs, kept with the run.

Records from `ctx.logger` (the `taskloom.task.<name>` loggers) and from the logger of the
module that defines the task are captured while the run executes (inline and thread executors
here; a process-pool child sends its records to the worker, which logs them as the run's),
attributed by the current run, and stored when the attempt ends as the
kv entry `runlog:<run id>` (a JSON list; later attempts append). A run keeps at most
`MAX_RECORDS` records and `MAX_BYTES` of text; what goes over is dropped and counted in a last
record. A record is captured only if its logger lets it through (its effective level).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import TaskFailedError
from .hooks import RunHooks
from .run import TaskRun, current_run, reset_current_run, set_current_run

if TYPE_CHECKING:
    from .manager import TaskManager
    from .task import Task

RUNLOG_PREFIX = "runlog:"
MAX_RECORDS = 500
MAX_BYTES = 64 * 1024
MAX_MESSAGE = 4096  # characters of one message; longer ones are cut


def runlog_key(run_id: str) -> str:
    """The kv key holding a run's log records."""
    return f"{RUNLOG_PREFIX}{run_id}"


def log_sources(tasks: Iterable[Task]) -> set[str]:
    """The loggers whose records belong to runs of `tasks`: ctx.logger's and their modules'."""
    return {"taskloom.task"} | {t.fn.__module__ for t in tasks if getattr(t.fn, "__module__", None)}


def _size(entry: dict[str, str]) -> int:
    return len(entry["message"]) + len(entry["logger"]) + 48


class _Buffer:
    __slots__ = ("dropped", "entries", "size")

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.size = 0
        self.dropped = 0


class _Handler(logging.Handler):
    """Appends records made while one of `capture`'s runs executes to that run's buffer."""

    def __init__(self, capture: RunLogCapture) -> None:
        super().__init__()
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        # one record reaches this handler once per attached ancestor logger: keep it once
        if getattr(record, "_runlog", None) is self:
            return
        run = current_run()
        if run is None or run._manager is not self.capture.manager:
            return
        record._runlog = self
        record.run_id = run.id
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": message[:MAX_MESSAGE],
        }
        self.capture.add(run.id, entry)


class RunLogCapture(RunHooks):
    """The manager's run-log capture: a logging handler plus the hook that stores records."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self._handler = _Handler(self)
        self._buffers: dict[str, _Buffer] = {}
        self._lock = threading.Lock()  # thread-executor tasks log from worker threads
        self._attached: set[str] = set()

    def attach(self, logger_names: set[str]) -> None:
        """Listen on these loggers (and their children) too."""
        for name in logger_names - self._attached:
            logging.getLogger(name).addHandler(self._handler)
            self._attached.add(name)

    def detach(self) -> None:
        """Stop listening everywhere."""
        for name in self._attached:
            logging.getLogger(name).removeHandler(self._handler)
        self._attached.clear()

    def add(self, run_id: str, entry: dict[str, str]) -> None:
        """Keep one record of a run, within the caps."""
        with self._lock:
            buf = self._buffers.setdefault(run_id, _Buffer())
            size = _size(entry)
            if len(buf.entries) >= MAX_RECORDS or buf.size + size > MAX_BYTES:
                buf.dropped += 1
                return
            buf.entries.append(entry)
            buf.size += size

    async def before_run(self, run: TaskRun) -> None:
        """Forget leftovers of an attempt that never finished here (its lease was lost)."""
        with self._lock:
            self._buffers.pop(run.id, None)

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        """Store what the attempt logged, after what earlier attempts logged."""
        with self._lock:
            buf = self._buffers.pop(run.id, None)
        if buf is None or not (buf.entries or buf.dropped):
            return
        store = self.manager.store
        key = runlog_key(run.id)
        now = self.manager.clock()
        old = await store.kv_get(key, now)
        entries: list[dict[str, str]] = json.loads(old) if old else []
        dropped = 0
        if entries and entries[-1].get("logger") == DROPPED_LOGGER:
            dropped = int(entries.pop().get("dropped", 0))
        size = sum(_size(e) for e in entries)
        for entry in buf.entries:
            if len(entries) >= MAX_RECORDS or size + _size(entry) > MAX_BYTES:
                dropped += 1
                continue
            entries.append(entry)
            size += _size(entry)
        dropped += buf.dropped
        if dropped:
            entries.append(_dropped_note(dropped))
        await store.kv_set(key, json.dumps(entries).encode(), None, now)


DROPPED_LOGGER = "taskloom.runlog"


def _dropped_note(count: int) -> dict[str, Any]:
    return {
        "ts": datetime.now(UTC).isoformat(),
        "level": "WARNING",
        "logger": DROPPED_LOGGER,
        "message": f"{count} more record(s) dropped: a run keeps at most {MAX_RECORDS} "
        f"records and {MAX_BYTES // 1024} KiB of log text",
        "dropped": count,
    }


async def read_run_logs(manager: TaskManager, run_id: str) -> list[dict[str, str]]:
    """The stored log records of a run, oldest first (empty when it logged nothing)."""
    data = await manager.store.kv_get(runlog_key(run_id), manager.clock())
    if not data:
        return []
    return [
        {k: str(v) for k, v in e.items() if k in ("ts", "level", "logger", "message")}
        for e in json.loads(data)
    ]


# -- runs in another process (the process executor) ------------------------------------------------
class _Forwarder(logging.Handler):
    """In a pool child: sends each record of the run's loggers to the worker over the pipe."""

    def __init__(self, run_id: str, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.run_id = run_id
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_runlog", None) is self:
            return
        record._runlog = self
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.send({
                "kind": "log", "run_id": self.run_id, "name": record.name,
                "levelno": record.levelno, "created": record.created, "message": message,
            })  # fmt: skip
        except Exception:
            self.handleError(record)


@contextmanager
def forwarded_records(
    task: Task, run_id: str | None, send: Callable[[dict[str, Any]], None]
) -> Iterator[None]:
    """While a run executes in a pool child, send its loggers' records to the worker.

    Every level is sent; the worker keeps what its own logger levels let through.
    """
    if run_id is None:
        yield
        return
    handler = _Forwarder(run_id, send)
    loggers = [logging.getLogger(name) for name in log_sources([task])]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


def replay_record(run: TaskRun, message: Mapping[str, Any]) -> None:
    """In the worker: log a record a pool child sent, as if `run` had logged it here."""
    logger = logging.getLogger(str(message.get("name", "taskloom.task")))
    level = int(message.get("levelno", logging.INFO))
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(
        logger.name, level, "(process)", 0, str(message.get("message", "")), (), None
    )
    record.created = float(message.get("created", record.created))
    record.msecs = (record.created - int(record.created)) * 1000
    token = set_current_run(run)
    try:
        logger.handle(record)
    finally:
        reset_current_run(token)
