"""Per-run options checked before a run is built: a bad one is an `InvalidParamsError`.

The error names the option (`priority`, `delay`) as its field, like a bad input would, so
the CLI exits 2 and the HTTP API answers 422 instead of a bare ValueError.
"""

from __future__ import annotations

import math
from datetime import timedelta

from .errors import InvalidParamsError
from .run import TaskPriority


def _refuse(task: str, option: str, msg: str) -> InvalidParamsError:
    return InvalidParamsError(task, [{"loc": (option,), "msg": msg, "type": "run_option"}])


def checked_priority(task: str, value: TaskPriority | str) -> TaskPriority:
    """`value` as a TaskPriority; raises InvalidParamsError naming `priority`."""
    try:
        return TaskPriority(value)
    except ValueError:
        allowed = ", ".join(p.value for p in TaskPriority)
        raise _refuse(task, "priority", f"must be one of {allowed}, got {value!r}") from None


def checked_delay(task: str, value: float | timedelta | None) -> float | None:
    """`value` in seconds (None for none); raises InvalidParamsError naming `delay` unless it
    is a finite number of seconds, zero or more."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise _refuse(task, "delay", f"must be seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise _refuse(task, "delay", f"must be a finite number of seconds >= 0, got {seconds!r}")
    return float(seconds)
