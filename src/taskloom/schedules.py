"""Schedules: `every(interval)` and `crontab(expr, tz)`, their fire times, and catch-up.

Everything here is pure computation on aware datetimes; `scheduler.py` adds the store, the
leader lock and the loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ScheduleError

RandomizeType = Callable[[], float] | float | int
CatchUp = Literal["one", "skip"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_HOURLY_ALIASES = frozenset({"@hourly"})


@runtime_checkable
class Schedule(Protocol):
    """Fire times of a schedule, as aware datetimes."""

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after `after`."""
        ...

    def last_fire(self, at: datetime) -> datetime | None:
        """The latest fire time at or before `at` (None if there is none)."""
        ...


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ScheduleError(f"schedules need timezone-aware datetimes, got naive {moment}")
    return moment


def _micros(moment: datetime) -> int:
    # Integer microseconds: float seconds would put fractional intervals one step off.
    return (_aware(moment) - _EPOCH) // _MICRO


@dataclass(frozen=True)
class Every:
    """Fires at the multiples of `interval` since the Unix epoch, so every scheduler agrees."""

    interval: timedelta
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def _step(self) -> int:
        return max(1, self.interval // _MICRO)

    def next_fire(self, after: datetime) -> datetime:
        """The first multiple of the interval strictly after `after`."""
        n = _micros(after) // self._step + 1
        return _EPOCH + n * self._step * _MICRO

    def last_fire(self, at: datetime) -> datetime:
        """The latest multiple of the interval at or before `at`."""
        n = _micros(at) // self._step
        return _EPOCH + n * self._step * _MICRO

    def __str__(self) -> str:
        return f"every {self.interval}"


@dataclass(frozen=True)
class CronTab:
    """Fires on a cron expression evaluated in time zone `tz`, DST-correct.

    croniter does the matching. Around DST changes (what croniter 7 does, and what we add):
    a wall-clock time inside the hour skipped in spring fires once, at the first instant
    after the gap (croniter); in the hour repeated in autumn croniter matches both
    occurrences, so we keep the second only when the hour field is a wildcard (`*`, `*/2`,
    `@hourly`): `0 * * * *` fires every real hour, `30 2 * * *` fires once a day.
    """

    expression: str
    tz: str = "UTC"
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from croniter import croniter

        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"unknown time zone {self.tz!r} in crontab") from exc
        if not croniter.is_valid(self.expression):
            raise ScheduleError(f"invalid cron expression {self.expression!r}")
        object.__setattr__(self, "_zone", zone)

    @property
    def _hour_is_wild(self) -> bool:
        expr = self.expression.strip().lower()
        if expr.startswith("@"):
            return expr in _HOURLY_ALIASES
        fields = expr.split()
        return len(fields) > 1 and fields[1].startswith("*")

    def _dropped(self, instant: datetime) -> bool:
        """True for the second occurrence of a repeated wall-clock time in a fixed hour."""
        local = instant.astimezone(self._zone)
        repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        return repeated and not self._hour_is_wild

    def next_fire(self, after: datetime) -> datetime:
        """The next matching wall-clock time in `tz`, strictly after `after`, as UTC."""
        from croniter import croniter

        start = _aware(after).astimezone(self._zone)
        while True:
            nxt = croniter(self.expression, start).get_next(datetime)
            assert isinstance(nxt, datetime)
            instant = nxt.astimezone(UTC)
            if not self._dropped(instant):
                return instant
            start = instant.astimezone(self._zone)

    def last_fire(self, at: datetime) -> datetime | None:
        """The latest matching time at or before `at`, as UTC."""
        from croniter import CroniterBadDateError, croniter

        at = _aware(at).astimezone(UTC)
        it = croniter(self.expression, at.astimezone(self._zone))
        for _ in range(1000):  # a dropped repeat costs one more step; bounded all the same
            try:
                prev = it.get_prev(datetime)
            except CroniterBadDateError:
                return None
            assert isinstance(prev, datetime)
            # croniter's get_prev is strictly before `at`; `at` itself may be a fire time.
            following = self.next_fire(prev)
            if following <= at:
                return following
            if not self._dropped(prev.astimezone(UTC)):
                return prev.astimezone(UTC)
        return None

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


def every(interval: timedelta | float | int, *, params: Mapping[str, Any] | None = None) -> Every:
    """A schedule firing every `interval` (a timedelta or seconds) with these task inputs."""
    if not isinstance(interval, timedelta):
        interval = timedelta(seconds=float(interval))
    if interval < _MICRO:
        raise ScheduleError(f"every() needs a positive interval, got {interval}")
    return Every(interval, dict(params or {}))


def crontab(
    expression: str, tz: str | None = None, *, params: Mapping[str, Any] | None = None
) -> CronTab:
    """A schedule from a cron expression (`tz` defaults to UTC) with these task inputs."""
    return CronTab(expression, tz or "UTC", dict(params or {}))


def schedule_params(schedule: object) -> dict[str, Any]:
    """The task inputs a schedule queues its runs with (none for a bare schedule)."""
    return dict(getattr(schedule, "params", None) or {})


def as_schedule(value: object) -> Schedule:
    """A Schedule from a schedule, a cron string, a timedelta or seconds; else ScheduleError."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        return crontab(value)
    if isinstance(value, timedelta | int | float) and not isinstance(value, bool):
        return every(value)
    raise ScheduleError(f"not a schedule: {value!r} (use every(...) or crontab(...))")


@dataclass(frozen=True)
class FirePlan:
    """What one scheduler pass does with one schedule.

    `fire` is the tick to queue (None: nothing to queue now), `cursor` the tick handled up to
    (store it), `next_due` the first tick after `cursor`, `missed` whether ticks before
    `cursor` were due too (downtime).
    """

    fire: datetime | None
    cursor: datetime
    next_due: datetime
    missed: bool = False


def plan_fire(schedule: Schedule, cursor: datetime, now: datetime, catch_up: CatchUp) -> FirePlan:
    """Decide the pass at `now` for a schedule whose ticks up to `cursor` are handled.

    A tick is due when `now >= tick`. When several are due the scheduler was away for a whole
    period: `catch_up="one"` queues the latest due tick once; `"skip"` queues none and moves
    on to the next future tick. One due tick is only late, and fires in both modes.
    """
    due = schedule.next_fire(cursor)
    if due > now:
        return FirePlan(None, cursor, due)
    latest = schedule.last_fire(now)
    if latest is None or latest < due:
        latest = due
    missed = latest > due
    fire = None if missed and catch_up == "skip" else latest
    return FirePlan(fire, latest, schedule.next_fire(latest), missed)


def randomize_seconds(randomize: RandomizeType | None, rng: random.Random | None = None) -> float:
    """Seconds of jitter for one fire: a callable's value, or uniform in [0, randomize]."""
    if randomize is None:
        return 0.0
    if callable(randomize):
        return max(0.0, float(randomize()))
    return (rng or random).uniform(0.0, float(randomize))
