"""Schedules added while the system runs: stored in the store, fired by the leader scheduler.

A stored schedule becomes one more `ScheduleEntry` (key `stored:<name>`), so it shares the
scheduler's exactly-once machinery with schedules in code: the leader lock, the per-entry
cursor, and the fixed run id and dedup key per tick. It is checked when added (known task,
valid params, valid schedule), not at every tick. Its first tick is the first one after it
was added, as for a code schedule the first after the scheduler starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .errors import ScheduleError, ScheduleNotFoundError
from .schedules import CronTab, Every, Schedule, as_schedule, crontab, every, schedule_params
from .store.base import dt

if TYPE_CHECKING:
    from .manager import TaskManager
    from .scheduler import ScheduleEntry

log = logging.getLogger("taskloom.schedules")

KEY_PREFIX = "stored:"  # entry key of a stored schedule; code entries are task[:trigger]
MAX_NAME = 200
MAX_EVERY = timedelta(days=3660)  # ten years: beyond that an interval is a typo


class StoredSchedule(BaseModel):
    """A schedule definition as stored: one of `every` (seconds) or `cron` (+ `tz`)."""

    name: str
    task: str
    every: float | None = None
    cron: str | None = None
    tz: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    created: float  # Unix seconds: the first tick is the first one after this

    @property
    def key(self) -> str:
        """The scheduler entry key (cursor, dedup key and run ids derive from it)."""
        return KEY_PREFIX + self.name

    def schedule(self) -> Schedule:
        """The schedule object (raises ScheduleError if the stored form is invalid)."""
        if self.every is not None:
            return every(self.every)
        if self.cron is not None:
            return crontab(self.cron, self.tz)
        raise ScheduleError(f"stored schedule {self.name!r} has neither every nor cron")


class ScheduleInfo(BaseModel):
    """One schedule, from code or stored, as `schedule ls` and `GET /api/schedules` show it."""

    name: str
    task: str
    schedule: str
    source: Literal["code", "stored"]
    enabled: bool
    next_fire: datetime | None
    last_run_id: str | None
    params: dict[str, Any]


def to_fields(schedule: object) -> dict[str, Any]:
    """The stored form (`every` or `cron`/`tz`) of a schedule, a cron string or an interval."""
    sched = as_schedule(schedule)
    if isinstance(sched, Every):
        return {"every": sched.interval.total_seconds(), "cron": None, "tz": None}
    if isinstance(sched, CronTab):
        return {"every": None, "cron": sched.expression, "tz": sched.tz}
    raise ScheduleError(f"only every(...) and crontab(...) schedules can be stored, got {sched!r}")


def from_request(every_seconds: float | None, cron: str | None, tz: str | None) -> Every | CronTab:
    """The schedule of an API or CLI request: exactly one of `every` and `cron`."""
    if (every_seconds is None) == (cron is None):
        raise ScheduleError("give exactly one of every (seconds) and cron (an expression)")
    if every_seconds is not None:
        if tz is not None:
            raise ScheduleError("tz applies to cron schedules only")
        if not 0 < every_seconds <= MAX_EVERY.total_seconds():
            raise ScheduleError(f"every must be > 0 and at most {MAX_EVERY}, got {every_seconds}")
        return every(timedelta(seconds=every_seconds))
    assert cron is not None
    return crontab(cron, tz)


def _decode(raw: bytes) -> StoredSchedule | None:
    try:
        return StoredSchedule.model_validate_json(raw)
    except ValidationError:
        log.exception("a stored schedule could not be decoded; ignored")
        return None


async def load(manager: TaskManager) -> dict[str, StoredSchedule]:
    """Every stored schedule by name."""
    store = (await manager.connect()).store
    out = {}
    for raw in (await store.stored_schedules()).values():
        item = _decode(raw)
        if item is not None:
            out[item.name] = item
    return out


def _code_keys(manager: TaskManager) -> set[str]:
    from .scheduler import schedule_entries

    return {e.key for e in schedule_entries(manager.tasks)}


async def add(
    manager: TaskManager,
    name: str,
    task: str,
    schedule: object,
    params: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> ScheduleInfo:
    """Check and store a schedule (replacing one of the same name)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ScheduleError(f"a schedule name must be 1 to {MAX_NAME} characters, got {name!r}")
    if name in _code_keys(manager):
        raise ScheduleError(f"a schedule in code is named {name!r}; pick another name")
    t = manager.get_task(task)  # UnknownTaskError
    if params is None:  # every(..., params=...) carries them too
        params = schedule_params(schedule)
    t.validate_params(dict(params or {}))  # InvalidParamsError
    fields = to_fields(schedule)  # ScheduleError
    item = StoredSchedule(
        name=name, task=t.name, params=dict(params or {}), enabled=enabled,
        created=manager.clock(), **fields,
    )  # fmt: skip
    from .scheduler import STATE_PREFIX

    store = (await manager.connect()).store
    # A replaced schedule starts afresh after `created`, not from the old one's cursor (which
    # would fire a catch-up tick at once); a tick fired already keeps its run id, so no double.
    await store.kv_delete(STATE_PREFIX + item.key)
    await store.put_schedule(name, item.model_dump_json().encode())
    return await info(manager, name)


async def remove(manager: TaskManager, name: str) -> None:
    """Forget a stored schedule and its cursor; ScheduleNotFoundError if there is none."""
    from .scheduler import STATE_PREFIX

    store = (await manager.connect()).store
    if not await store.delete_schedule(name):
        if name in _code_keys(manager):
            raise ScheduleError(f"schedule {name!r} is defined in code; it cannot be removed")
        raise ScheduleNotFoundError(name)
    await store.kv_delete(STATE_PREFIX + KEY_PREFIX + name)


async def set_enabled(manager: TaskManager, name: str, enabled: bool) -> ScheduleInfo:
    """Switch a schedule on or off; a code schedule switches its task (`manager.enable`)."""
    stored = (await load(manager)).get(name)
    if stored is not None:
        store = (await manager.connect()).store
        changed = stored.model_copy(update={"enabled": enabled})
        await store.put_schedule(name, changed.model_dump_json().encode())
    else:
        code = {e.key: e for e in _entries_in_code(manager)}
        if name not in code:
            raise ScheduleNotFoundError(name)
        switch = manager.enable if enabled else manager.disable
        await switch(code[name].task.name)
    return await info(manager, name)


def _entries_in_code(manager: TaskManager) -> list[ScheduleEntry]:
    from .scheduler import schedule_entries

    return schedule_entries(manager.tasks)


def entries(
    manager: TaskManager, stored: Mapping[str, StoredSchedule], warned: set[str] | None = None
) -> list[ScheduleEntry]:
    """Scheduler entries of stored schedules whose task this process knows; one that cannot be
    used here is logged once per name in `warned`."""
    from .errors import UnknownTaskError
    from .scheduler import ScheduleEntry

    out = []
    for item in stored.values():
        try:
            task = manager.get_task(item.task)
            sched = item.schedule()
        except (UnknownTaskError, ScheduleError) as exc:
            if warned is None or item.name not in warned:
                log.warning("stored schedule %r skipped here: %s", item.name, exc)
            if warned is not None:
                warned.add(item.name)
            continue
        out.append(
            ScheduleEntry(
                item.key, task, sched, item.params, enabled=item.enabled, since=dt(item.created)
            )
        )
    return out


async def list_all(manager: TaskManager, now: datetime | None = None) -> list[ScheduleInfo]:
    """Code and stored schedules together, each with its source, next fire and last run."""
    from .scheduler import TaskScheduler

    stored = await load(manager)
    scheduler = TaskScheduler(manager)
    fires = await scheduler.entry_fires(now)
    out = []
    for entry in _entries_in_code(manager):
        if not entry.active:
            continue
        nxt, last = fires.get(entry.key, (None, None))
        out.append(
            ScheduleInfo(
                name=entry.key, task=entry.task.name, schedule=str(entry.schedule), source="code",
                enabled=await manager.is_enabled(entry.task.name), next_fire=nxt,
                last_run_id=last, params=dict(entry.params),
            )
        )  # fmt: skip
    for item in sorted(stored.values(), key=lambda s: s.name):
        nxt, last = fires.get(item.key, (None, None))
        try:
            text = str(item.schedule())
        except ScheduleError as exc:
            text = f"invalid: {exc}"
        out.append(
            ScheduleInfo(
                name=item.name, task=item.task, schedule=text, source="stored",
                enabled=item.enabled, next_fire=nxt, last_run_id=last, params=item.params,
            )
        )  # fmt: skip
    return out


async def info(manager: TaskManager, name: str) -> ScheduleInfo:
    """One schedule by name; ScheduleNotFoundError if unknown."""
    for item in await list_all(manager):
        if item.name == name:
            return item
    raise ScheduleNotFoundError(name)
