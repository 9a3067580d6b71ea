"""TaskScheduler: the leader queues every due schedule tick exactly once.

Exactly once rests on three things, each covering a gap the others leave open:

- a leader lock in the store (`scheduler-leader`), so one scheduler decides at a time;
- a record per schedule in the store's key/value space (`schedule-last:<key>`: the last tick
  handled and the run it queued), so a failover, a restart or a second scheduler resumes after
  that tick instead of firing it again, even once its run has finished;
- a deterministic run id and dedup key per tick, so a scheduler that dies between queueing a
  tick and recording it, or a deposed leader that has not noticed yet, meets the existing run
  instead of adding a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ConfigError, InvalidParamsError, ScheduleError
from .manager import TaskManager
from .run import TaskRun
from .schedules import (
    CatchUp,
    FirePlan,
    Schedule,
    as_schedule,
    plan_fire,
    randomize_seconds,
    schedule_params,
)
from .store.base import Store, dt
from .task import Task

log = logging.getLogger("taskloom.scheduler")

LEADER_LOCK = "scheduler-leader"
STATE_PREFIX = "schedule-last:"
MIN_SLEEP = 0.001  # a wall clock lagging the loop's timer must not make run() spin


@dataclass(frozen=True)
class ScheduleEntry:
    """One source of scheduled runs: a task's own `schedule`, or one of its `triggers`."""

    key: str  # the task name, or "<task>:<trigger>"
    task: Task
    schedule: Schedule
    params: Mapping[str, Any]
    active: bool = True  # False for Trigger(auto_activate=False)
    enabled: bool = True  # a stored schedule's own switch (code ones use manager.enable)
    since: datetime | None = None  # a stored schedule's creation: its first tick follows it

    def dedup_key(self, fire: datetime) -> str:
        """The same for every scheduler: entry key and UTC fire time."""
        return f"{self.key}@{fire.astimezone(UTC).isoformat()}"

    def run_id(self, fire: datetime) -> str:
        """A run id on `new_run_id()`'s 100 ns clock (so listings stay chronological) at the
        fire time, plus a hash of the tick: the same for every scheduler."""
        ticks = (fire - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10
        digest = hashlib.sha256(self.dedup_key(fire).encode()).hexdigest()
        return f"{ticks:014x}{digest[:18]}"


def schedule_entries(tasks: Mapping[str, Task]) -> list[ScheduleEntry]:
    """Every schedule and trigger of `tasks`; a trigger that is not a schedule raises."""
    out: list[ScheduleEntry] = []
    for task in tasks.values():
        if task.schedule is not None:
            sched = as_schedule(task.schedule)
            out.append(ScheduleEntry(task.name, task, sched, schedule_params(sched)))
        for trig in task.triggers:
            try:
                sched = as_schedule(trig.schedule)
            except ScheduleError as exc:
                raise ScheduleError(f"trigger {trig.name!r} of task {task.name!r}: {exc}") from exc
            out.append(
                ScheduleEntry(
                    f"{task.name}:{trig.name}", task, sched, dict(trig.inputs), trig.auto_activate
                )
            )
    return out


@dataclass
class _State:
    """What the store remembers per entry: ticks up to `cursor` are handled."""

    cursor: datetime
    run_id: str | None = None

    def encode(self) -> dict[str, Any]:
        return {"cursor": self.cursor.isoformat(), "run": self.run_id}

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> _State:
        return cls(datetime.fromisoformat(data["cursor"]), data.get("run"))


class TaskScheduler:
    """Queues the runs of scheduled tasks and triggers; safe to run several at once.

    Only the holder of the store's leader lock queues. `catch_up="one"` fires the latest
    missed tick once after downtime; `"skip"` moves on to the next future tick. Time comes
    from `manager.clock`, so a `FakeClock` drives `run()` as well as `tick()`.
    """

    def __init__(
        self,
        manager: TaskManager,
        *,
        lock_ttl: float = 30.0,
        catch_up: CatchUp = "one",
        holder_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if lock_ttl <= 0:
            raise ConfigError(f"lock_ttl must be positive, got {lock_ttl}")
        if catch_up not in ("one", "skip"):
            raise ConfigError(f"catch_up must be 'one' or 'skip', got {catch_up!r}")
        self.manager = manager
        self.lock_ttl = float(lock_ttl)
        self.renew_interval = self.lock_ttl / 3
        self.catch_up: CatchUp = catch_up
        self.holder_id = holder_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.is_leader = False
        self._rng = rng or random.Random()
        self._skipped: set[str] = set()  # stored schedules this process cannot fire, logged once
        self._leader_until = 0.0  # loop time until which our lock surely holds
        self._next_due: datetime | None = None
        self._tick_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._bg: asyncio.Task[None] | None = None
        self.entries()  # a bad trigger schedule fails here, not in the loop

    def entries(self) -> list[ScheduleEntry]:
        """The schedules and triggers of the manager's tasks, now."""
        return schedule_entries(self.manager.tasks)

    async def all_entries(self) -> list[ScheduleEntry]:
        """The schedules in code plus those stored (added at run time), now."""
        from . import stored_schedules

        stored = await stored_schedules.load(self.manager)
        return self.entries() + stored_schedules.entries(self.manager, stored, self._skipped)

    # -- one pass ---------------------------------------------------------------------------------
    async def tick(self, now: datetime | None = None) -> list[TaskRun]:
        """One pass: take or renew the lock; if leader, queue every due tick. Returns the runs
        this pass queued. `now` (an aware datetime) defaults to `manager.clock()`."""
        moment = self._moment(now)
        async with self._tick_lock:
            store = (await self.manager.connect()).store
            self._next_due = None
            if not await self._lead(store, moment):
                return []
            entries = await self.all_entries()
            states = await self._load(store, entries, moment)
            enabled: dict[str, bool] = {}
            queued: list[TaskRun] = []
            dues: list[datetime] = []
            for entry in entries:
                if not entry.active:
                    continue
                if not self._still_leader():
                    log.warning("%s: lock may have expired mid-pass; stopping", self.holder_id)
                    break
                if entry.task.name not in enabled:
                    enabled[entry.task.name] = await self.manager.is_enabled(entry.task.name)
                run, next_due = await self._visit(
                    store, entry, states, moment, enabled[entry.task.name] and entry.enabled
                )
                dues.append(next_due)
                if run is not None:
                    queued.append(run)
            self._next_due = min(dues, default=None)
            return queued

    async def _visit(
        self, store: Store, entry: ScheduleEntry, states: dict[str, _State], moment: datetime,
        enabled: bool,
    ) -> tuple[TaskRun | None, datetime]:  # fmt: skip
        """Handle one entry; return the run queued (if any) and the entry's next due tick."""
        state = states.get(entry.key)
        if state is None:  # first sight: the first fire is the first tick after now
            start = moment if entry.since is None else min(entry.since, moment)
            state = states[entry.key] = _State(start)
            await self._save(store, entry, state, moment)
        plan = plan_fire(entry.schedule, state.cursor, moment, self.catch_up)
        if plan.cursor == state.cursor:
            return None, plan.next_due
        run: TaskRun | None = None
        reason = self._hold_reason(plan, enabled) or await self._overlap(store, entry, states)
        if reason is None:
            assert plan.fire is not None
            run, run_id = await self._queue(store, entry, plan.fire)
            state.run_id = run_id or state.run_id
        else:
            level = logging.DEBUG if reason == "disabled" else logging.INFO
            log.log(level, "%s: tick %s not queued (%s)", entry.key, plan.cursor, reason)
        state.cursor = plan.cursor
        await self._save(store, entry, state, moment)
        return run, plan.next_due

    def _hold_reason(self, plan: FirePlan, enabled: bool) -> str | None:
        if not enabled:
            return "disabled"
        if plan.fire is None:
            return "missed ticks skipped (catch_up='skip')"
        if plan.missed:
            log.info("catching up: missed ticks before %s fire once", plan.fire)
        return None

    async def _overlap(
        self, store: Store, entry: ScheduleEntry, states: Mapping[str, _State]
    ) -> str | None:
        """With max_concurrency=1, a scheduled run of the task that is still active."""
        if entry.task.max_concurrency != 1:
            return None
        prefix = f"{entry.task.name}:"
        for key, state in states.items():
            if state.run_id and (key == entry.task.name or key.startswith(prefix)):
                run = await store.get(state.run_id)
                if run is not None and not run.is_done:
                    return f"previous run {run.id} still {run.state}"
        return None

    async def _queue(
        self, store: Store, entry: ScheduleEntry, fire: datetime
    ) -> tuple[TaskRun | None, str | None]:
        """Queue the tick's run unless it exists; return (run queued now, run id to record)."""
        run_id = entry.run_id(fire)
        if await store.get(run_id) is not None:
            log.info("%s: tick %s was queued already", entry.key, fire)
            return None, run_id
        execute_after = None
        if entry.task.randomize is not None:
            jitter = randomize_seconds(entry.task.randomize, self._rng)
            execute_after = fire + timedelta(seconds=jitter)
        try:
            run = await self.manager.enqueue(
                entry.task, entry.params, dedup_key=entry.dedup_key(fire), run_id=run_id,
                execute_after=execute_after,
            )  # fmt: skip
        except InvalidParamsError:
            log.exception("%s: tick %s not queued: bad params", entry.key, fire)
            return None, None
        log.info("%s: queued run %s for tick %s", entry.key, run.id, fire)
        return (run if run.id == run_id else None), run.id

    # -- leadership and state ------------------------------------------------------------------
    async def _lead(self, store: Store, moment: datetime) -> bool:
        started = asyncio.get_running_loop().time()
        got = await store.acquire_lock(
            LEADER_LOCK, self.holder_id, self.lock_ttl, moment.timestamp()
        )
        if got != self.is_leader:
            log.info("%s %s the scheduler lead", self.holder_id, "took" if got else "lost")
        self.is_leader = got
        if got:
            self._leader_until = started + self.lock_ttl
        return got

    def _still_leader(self) -> bool:
        return asyncio.get_running_loop().time() < self._leader_until

    async def _load(
        self, store: Store, entries: list[ScheduleEntry], moment: datetime
    ) -> dict[str, _State]:
        states: dict[str, _State] = {}
        for entry in entries:
            raw = await store.kv_get(STATE_PREFIX + entry.key, moment.timestamp())
            if raw is not None:
                states[entry.key] = _State.decode(self.manager.serde_loads(raw))
        return states

    async def _save(
        self, store: Store, entry: ScheduleEntry, state: _State, moment: datetime
    ) -> None:
        data = self.manager.serde_dumps(state.encode())
        await store.kv_set(STATE_PREFIX + entry.key, data, None, moment.timestamp())

    def _moment(self, now: datetime | None) -> datetime:
        if now is None:
            moment = dt(self.manager.clock())
            assert moment is not None
            return moment
        if now.tzinfo is None:
            raise ScheduleError(f"tick() needs a timezone-aware datetime, got naive {now}")
        return now.astimezone(UTC)

    # -- reading --------------------------------------------------------------------------------
    async def next_fires(self, now: datetime | None = None) -> dict[str, datetime | None]:
        """Each scheduled task's next fire time (its earliest over schedule and triggers);
        None when disabled. A time not after `now` is due and fires on the next pass."""
        moment = self._moment(now)
        store = (await self.manager.connect()).store
        entries = self.entries()
        states = await self._load(store, entries, moment)
        out: dict[str, datetime | None] = {}
        for entry in entries:
            name = entry.task.name
            out.setdefault(name, None)
            if not entry.active or not await self.manager.is_enabled(name):
                continue
            state = states.get(entry.key)
            plan = plan_fire(entry.schedule, state.cursor if state else moment, moment,
                             self.catch_up)  # fmt: skip
            when = plan.fire or plan.next_due
            current = out[name]
            out[name] = when if current is None else min(current, when)
        return out

    async def entry_fires(
        self, now: datetime | None = None
    ) -> dict[str, tuple[datetime | None, str | None]]:
        """Per entry key (code and stored): the next fire (None when disabled) and the id of
        the last run its ticks queued."""
        moment = self._moment(now)
        store = (await self.manager.connect()).store
        entries = await self.all_entries()
        states = await self._load(store, entries, moment)
        out: dict[str, tuple[datetime | None, str | None]] = {}
        for entry in entries:
            state = states.get(entry.key)
            last = state.run_id if state else None
            on = entry.active and entry.enabled and await self.manager.is_enabled(entry.task.name)
            if not on:
                out[entry.key] = (None, last)
                continue
            start = moment if entry.since is None else min(entry.since, moment)
            plan = plan_fire(entry.schedule, state.cursor if state else start, moment,
                             self.catch_up)  # fmt: skip
            out[entry.key] = (plan.fire or plan.next_due, last)
        return out

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick, then wait until the earliest next fire, the lock renewal or a change to the
        stored schedules, until `stop()`."""
        self._running = True  # before any await: stop() must see it
        self._done.clear()
        try:
            # the notifier exists before the store connects; tick() connects (and survives outages)
            with self.manager.store.notifier.watch("schedules") as changed:
                while not self._stopping.is_set():
                    changed.clear()
                    await self._safe_tick()
                    await self._pause(changed)
        finally:
            await self._release()
            self._running = False
            self._done.set()

    async def _pause(self, changed: asyncio.Event) -> None:
        """Sleep until the next pass is due, `stop()`, or a stored schedule changed."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, changed)]
        try:
            await asyncio.wait(waits, timeout=self._sleep_seconds(),
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for w in waits:
                w.cancel()

    async def _safe_tick(self) -> None:
        try:
            await self.tick()
        except Exception:
            # Logged at the loop boundary: a store outage must not end the scheduler.
            log.exception("scheduler pass failed; retrying in %.1fs", self.renew_interval)

    def _sleep_seconds(self) -> float:
        wait = self.renew_interval
        if self.is_leader and self._next_due is not None:
            wait = min(wait, self._next_due.timestamp() - self.manager.clock())
        return max(wait, MIN_SLEEP)

    async def _release(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            await self.manager.store.release_lock(LEADER_LOCK, self.holder_id)
        except Exception:
            log.exception("releasing the scheduler lock failed; it expires in %.0fs", self.lock_ttl)

    async def stop(self) -> None:
        """Stop the loop (final) and hand the lead over at once by releasing the lock."""
        self._stopping.set()
        if self._running:
            await self._done.wait()
        if self._bg is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._bg
        await self._release()

    async def __aenter__(self) -> TaskScheduler:
        self._bg = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # let run() mark itself running
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
