"""Start-rate limits: `RateLimit(100, per=timedelta(minutes=1))`, written `"100/m"` for short.

A limit caps how many runs start in any window of length `per`, across every worker: the store
keeps a sliding log of start times per limited key (`task:<name>`, `queue:<name>`) and checks
it inside the claim. A run over the limit stays `queued` with `execute_after` set to when a
slot frees; the arithmetic for that time lives here, so every store computes the same one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import orjson

from .errors import ConfigError

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip
_SHORT = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most `count` runs start in any window of length `per` (a timedelta or seconds)."""

    count: int
    per: timedelta = timedelta(seconds=1)

    def __post_init__(self) -> None:
        per = self.per
        if not isinstance(per, timedelta):
            if isinstance(per, bool) or not isinstance(per, int | float):
                raise ConfigError(f"RateLimit per must be a timedelta or seconds, got {per!r}")
            object.__setattr__(self, "per", timedelta(seconds=per))
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"RateLimit count must be an int >= 1, got {self.count!r}")
        if self.per <= timedelta(0):
            raise ConfigError(f"RateLimit per must be positive, got {self.per}")

    @property
    def seconds(self) -> float:
        """The window length in seconds."""
        return self.per.total_seconds()

    def __str__(self) -> str:
        secs = self.seconds
        for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
            if secs >= size and secs % size == 0:
                n = int(secs // size)
                return f"{self.count}/{unit}" if n == 1 else f"{self.count}/{n}{unit}"
        return f"{self.count}/s" if secs == 1 else f"{self.count}/{secs:g}s"


def parse_rate_limit(value: RateLimit | str) -> RateLimit:
    """A RateLimit from itself or from `"N/unit"` (`s`, `m`, `h`, `d`; `"10/5s"` too)."""
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"rate_limit must be a RateLimit or a string like '100/m', got {value!r}")
    match = _SHORT.match(value.lower())
    size = _UNITS.get(match.group(3)) if match else None
    if match is None or size is None:
        raise ConfigError(
            f"invalid rate limit {value!r}: use 'N/s', 'N/m', 'N/h', 'N/d' or 'N/10s'"
        )
    factor = float(match.group(2)) if match.group(2) else 1.0
    return RateLimit(int(match.group(1)), timedelta(seconds=factor * size))


def free_at(starts: Sequence[float], count: int, per: float, k: int) -> float:
    """When the `k`-th (0-based) run held back by a full window may start.

    `starts` are the start times inside the window, oldest first (at least `count` of them).
    Held-back runs take the slots as they free, in order; beyond the slots the window holds
    now, they take the slots their predecessors took, one window later.
    """
    m = len(starts)
    return starts[m - count + k % count] + per * (k // count + 1)


def limits_json(limits: Mapping[str, RateLimit] | None) -> str:
    """Task limits as the claim scripts and statements take them: {task: [count, per]}."""
    return orjson.dumps({n: [lim.count, lim.seconds] for n, lim in (limits or {}).items()}).decode()


def key_for_task(name: str) -> str:
    """The sliding-log key of a task's limit."""
    return f"task:{name}"


def key_for_queue(name: str) -> str:
    """The sliding-log key of a queue's limit."""
    return f"queue:{name}"
