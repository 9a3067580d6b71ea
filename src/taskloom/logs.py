"""One console log format for the worker, the scheduler and the server: text or JSON lines.

`setup_logging(level, fmt)` installs a single stderr handler on the root logger. Records
emitted while a run executes carry its id (`record.run_id`), whatever logger emitted them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from .errors import ConfigError
from .run import current_run

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into JSON.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "run_id"}


def short_id(run_id: str) -> str:
    """The part of a run id printed in log lines: its 12 leading characters."""
    return run_id[:12]


class RunIdFilter(logging.Filter):
    """Stamps `record.run_id` with the id of the run executing where the record was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            run = current_run()
            record.run_id = run.id if run is not None else None
        return True


class TextFormatter(logging.Formatter):
    """`2026-01-01 12:00:00.123 INFO  taskloom.worker [run 0190ab12cd34] message`."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # a worker logs a line per run: format each second once
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")
            self._second = second
        stamp = self._stamp
        run_id = getattr(record, "run_id", None)
        where = f" [run {short_id(run_id)}]" if run_id else ""
        line = (
            f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}{where} "
            f"{record.getMessage()}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        traceback = getattr(record, "traceback", None)
        if traceback:
            line += "\n" + str(traceback).rstrip()
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, run_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None)
        if run_id:
            out["run_id"] = run_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str)


def parse_level(level: str) -> str:
    """An upper-case level name; ConfigError for anything else."""
    name = level.strip().upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return name


def parse_format(fmt: str) -> LogFormat:
    """`text` or `json`; ConfigError for anything else."""
    name = fmt.strip().lower()
    for known in LOG_FORMATS:
        if name == known:
            return known
    raise ConfigError(f"log format must be text or json, got {fmt!r}")


def setup_logging(
    level: str = "INFO", fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Log to stderr in the shared format; replaces handlers an earlier call installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if parse_format(fmt) == "json" else TextFormatter())
    handler.addFilter(RunIdFilter())
    handler.set_name("taskloom")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "taskloom"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return handler
