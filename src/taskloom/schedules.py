"""Schedules: `every(interval)` and `crontab(expr, tz)`, and their next fire times."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ScheduleError

RandomizeType = Callable[[], float] | float | int


@runtime_checkable
class Schedule(Protocol):
    """Anything that gives the next fire time strictly after a moment."""

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (aware datetimes)."""
        ...


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ScheduleError(f"schedules need timezone-aware datetimes, got naive {moment}")
    return moment


@dataclass(frozen=True)
class Every:
    """Fires at the multiples of `interval` since the Unix epoch, so every scheduler agrees."""

    interval: timedelta

    def next_fire(self, after: datetime) -> datetime:
        """The first multiple of the interval strictly after `after`."""
        step = self.interval.total_seconds()
        ts = _aware(after).timestamp()
        n = math.floor(ts / step) + 1
        return datetime.fromtimestamp(n * step, UTC)

    def __str__(self) -> str:
        return f"every {self.interval}"


@dataclass(frozen=True)
class CronTab:
    """Fires on a cron expression evaluated in time zone `tz` (DST-correct)."""

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        from croniter import croniter

        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"unknown time zone {self.tz!r} in crontab") from exc
        if not croniter.is_valid(self.expression):
            raise ScheduleError(f"invalid cron expression {self.expression!r}")

    def next_fire(self, after: datetime) -> datetime:
        """The next matching wall-clock time in `tz`, strictly after `after`, as UTC."""
        from croniter import croniter

        local = _aware(after).astimezone(ZoneInfo(self.tz))
        nxt = croniter(self.expression, local).get_next(datetime)
        assert isinstance(nxt, datetime)
        return nxt.astimezone(UTC)

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


def every(interval: timedelta | float | int) -> Every:
    """A schedule firing every `interval` (a timedelta or seconds)."""
    if not isinstance(interval, timedelta):
        interval = timedelta(seconds=float(interval))
    if interval.total_seconds() <= 0:
        raise ScheduleError(f"every() needs a positive interval, got {interval}")
    return Every(interval)


def crontab(expression: str, tz: str | None = None) -> CronTab:
    """A schedule from a cron expression; `tz` defaults to UTC."""
    return CronTab(expression, tz or "UTC")


def randomize_seconds(randomize: RandomizeType | None, rng: random.Random | None = None) -> float:
    """Seconds of jitter for one fire: a callable's value, or uniform in [0, randomize]."""
    if randomize is None:
        return 0.0
    if callable(randomize):
        return max(0.0, float(randomize()))
    return (rng or random).uniform(0.0, float(randomize))
