"""TaskScheduler on the memory store, driven by a fake clock: exactly-once fires, leader
failover, DST, catch-up, randomize, disable, overlap, triggers, bad definitions."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskloom import (
    ConfigError,
    RunHooks,
    ScheduleError,
    TaskManager,
    TaskRun,
    TaskState,
    Trigger,
    crontab,
    every,
    task,
)
from taskloom.scheduler import LEADER_LOCK, STATE_PREFIX, TaskScheduler
from taskloom.schedules import as_schedule, plan_fire
from taskloom.store.memory import MemoryStore
from taskloom.testing import FakeClock, run_burst

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a multiple of 5 minutes and of an hour
ROME = ZoneInfo("Europe/Rome")


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def fire_of(run: TaskRun) -> datetime:
    """The tick a scheduled run was queued for, read back from its dedup key."""
    assert run.dedup_key is not None
    return datetime.fromisoformat(run.dedup_key.rsplit("@", 1)[1])


async def runs_of(m: TaskManager, name: str) -> list[TaskRun]:
    return await m.runs(task=name, limit=100_000)


@task(schedule=every(timedelta(minutes=5)))
async def five() -> None:
    """Every five minutes."""


@task(schedule=crontab("0 * * * *"))
async def hourly() -> None:
    """At the top of each hour (UTC)."""


# -- exactly once across schedulers ------------------------------------------------------------


async def test_24h_two_schedulers_with_failover_fire_each_tick_once() -> None:
    """Two schedulers tick alternately for 24 simulated hours; the leader dies at 12h (its lock
    is never released), comes back as a new process at 18h, and the other stops cleanly at
    20h. Runs are finished every hour, so only the stored per-schedule record prevents
    refiring. Every tick fires exactly once."""
    clock, store, ttl, step = FakeClock(START), MemoryStore(), 60.0, 20.0
    a_mgr = TaskManager(store, tasks=[five, hourly], clock=clock)
    b_mgr = TaskManager(store, tasks=[five, hourly], clock=clock)
    a = TaskScheduler(a_mgr, lock_ttl=ttl, holder_id="a")
    b = TaskScheduler(b_mgr, lock_ttl=ttl, holder_id="b")
    died, took_over, b_first_fire = START + 12 * 3600, None, None
    await a.tick()  # a starts first and leads; b has not started yet
    assert a.is_leader
    for i in range(1, int(86400 / step) + 1):
        now = clock.advance(step)
        if now < died:
            ticking = a if i % 2 else b
        elif now < START + 18 * 3600:
            ticking = b  # a is dead: it never ticks (nor releases) again
        elif now < START + 20 * 3600:
            if a.holder_id == "a":
                a = TaskScheduler(a_mgr, lock_ttl=ttl, holder_id="a-restarted")
            ticking = a if i % 2 else b
        else:
            if b.is_leader:
                await b.stop()  # a clean stop releases the lock at once
            ticking = a
        queued = await ticking.tick()
        if ticking is b and b.is_leader and took_over is None and now >= died:
            took_over = now
        if ticking is b and queued and b_first_fire is None and now >= died:
            b_first_fire = now
        if now % 3600 == 0:
            await run_burst(a_mgr)
    await run_burst(a_mgr)

    fives, hours = await runs_of(a_mgr, "five"), await runs_of(a_mgr, "hourly")
    assert len(fives) == 288 and len(hours) == 24
    assert sorted(fire_of(r) for r in fives) == [utc(START + 300 * k) for k in range(1, 289)]
    assert sorted(fire_of(r) for r in hours) == [utc(START + 3600 * k) for k in range(1, 25)]
    assert all(r.state is TaskState.success for r in fives + hours)
    # b took the lead once a's lock expired, at most one step after expiry
    assert took_over is not None and died <= took_over <= died + ttl + step
    assert b_first_fire is not None and b_first_fire - died <= ttl + step + 300
    assert a.is_leader and a.holder_id == "a-restarted"


async def test_clock_skew_restart_never_refires_a_finished_tick() -> None:
    """b's clock is 30 s behind a's. After a fired a tick (and the run finished), b takes over
    while its own clock is still before that tick: it must not fire it again."""
    store = MemoryStore()
    a_clock, b_clock = FakeClock(START), FakeClock(START - 30)
    a = TaskScheduler(TaskManager(store, tasks=[five], clock=a_clock), lock_ttl=10, holder_id="a")
    b_mgr = TaskManager(store, tasks=[five], clock=b_clock)
    b = TaskScheduler(b_mgr, lock_ttl=10, holder_id="b")
    await a.tick()
    a_clock.advance(305)
    assert len(await a.tick()) == 1  # fires START+300
    await run_burst(b_mgr)
    await a.stop()
    b_clock.advance(305)  # b's now: START+275, before the tick a fired
    assert await b.tick() == []
    b_clock.advance(30)  # START+305 on b's clock: the tick is due for b too
    assert await b.tick() == []
    assert len(await runs_of(b_mgr, "five")) == 1


async def test_crash_between_queue_and_record_does_not_refire() -> None:
    """The scheduler dies after queueing a tick but before recording it; the run finishes;
    the next leader meets the tick's run (its id is fixed per tick) instead of adding one."""

    class FlakyStore(MemoryStore):
        fail_state_writes = False

        async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
            if self.fail_state_writes and key.startswith(STATE_PREFIX):
                raise ConnectionError("store went away")
            await super().kv_set(key, value, ttl, now)

    clock, store = FakeClock(START), FlakyStore()
    m = TaskManager(store, tasks=[five], clock=clock)
    a = TaskScheduler(m, lock_ttl=10, holder_id="a")
    await a.tick()
    clock.advance(300)
    store.fail_state_writes = True
    with pytest.raises(ConnectionError):
        await a.tick()
    store.fail_state_writes = False
    await run_burst(m)  # the run finishes: its dedup key no longer protects
    clock.advance(20)  # a's lock has expired
    b = TaskScheduler(m, lock_ttl=10, holder_id="b")
    assert await b.tick() == []
    [run] = await runs_of(m, "five")
    assert run.state is TaskState.success and fire_of(run) == utc(START + 300)
    assert (await b.next_fires())["five"] == utc(START + 600)


async def test_only_the_leader_queues_and_stop_hands_over() -> None:
    clock = FakeClock(START)
    m = TaskManager("memory://", tasks=[five], clock=clock)
    a = TaskScheduler(m, lock_ttl=600, holder_id="a")
    b = TaskScheduler(m, lock_ttl=600, holder_id="b")
    await a.tick()
    await b.tick()
    assert a.is_leader and not b.is_leader
    clock.advance(300)
    assert await b.tick() == []  # due, but b does not lead
    assert len(await a.tick()) == 1
    await a.stop()
    assert not a.is_leader
    clock.advance(300)
    assert len(await b.tick()) == 1 and b.is_leader
    assert await m.store.acquire_lock(LEADER_LOCK, "other", 600, clock.now) is False


async def test_first_fire_is_the_first_tick_after_start_and_due_at_now() -> None:
    clock = FakeClock(START)  # START is itself a multiple of 5 minutes
    m = TaskManager("memory://", tasks=[five], clock=clock)
    s = TaskScheduler(m)
    assert await s.tick() == []  # never at start
    clock.advance(299.999)
    assert await s.tick() == []
    clock.advance(0.001)  # now == due: due
    [run] = await s.tick()
    assert fire_of(run) == utc(START + 300)
    assert run.dedup_key == "five@2027-01-15T08:05:00+00:00"
    assert await s.tick() == []


# -- DST ------------------------------------------------------------------------------------------


@task(schedule=crontab("30 2 * * *", tz="Europe/Rome"))
async def nightly() -> None:
    """At 02:30 Rome time."""


@task(schedule=crontab("0 * * * *", tz="Europe/Rome"))
async def rome_hourly() -> None:
    """Every hour, Rome time."""


async def _fires_between(first: datetime, last: datetime) -> dict[str, list[datetime]]:
    clock = FakeClock(first.timestamp())
    m = TaskManager("memory://", tasks=[nightly, rome_hourly], clock=clock)
    s = TaskScheduler(m)
    while clock.now < last.timestamp():
        await s.tick()
        clock.advance(300)
    return {
        # sorted as UTC instants: same-zone datetimes compare by wall time, ignoring fold
        name: [f.astimezone(ROME) for f in sorted(fire_of(r) for r in await runs_of(m, name))]
        for name in ("nightly", "rome_hourly")
    }


def _local_day(fires: list[datetime], day: int) -> list[datetime]:
    return [f for f in fires if f.day == day]


async def test_dst_spring_forward_europe_rome() -> None:
    """2026-03-29 02:00 CET jumps to 03:00 CEST. croniter fires a wall time inside the skipped
    hour once, at the first instant after the gap (03:00 CEST = 01:00 UTC); the hourly cron
    has 23 fires that day."""
    fires = await _fires_between(
        datetime(2026, 3, 28, tzinfo=ROME), datetime(2026, 3, 30, 12, tzinfo=ROME)
    )
    nightly_utc = [f.astimezone(UTC) for f in fires["nightly"]]
    assert nightly_utc == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST: moved out of the gap
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]
    day = _local_day(fires["rome_hourly"], 29)
    assert len(day) == 23
    assert [f.hour for f in day] == [h for h in range(24) if h != 2]


async def test_dst_fall_back_europe_rome() -> None:
    """2026-10-25 03:00 CEST falls back to 02:00 CET. croniter matches 02:30 in both passes;
    the scheduler fires a fixed-hour cron once (the first pass) and a wildcard-hour cron every
    real hour, 25 times that day."""
    fires = await _fires_between(
        datetime(2026, 10, 24, tzinfo=ROME), datetime(2026, 10, 26, 12, tzinfo=ROME)
    )
    nightly_utc = [f.astimezone(UTC) for f in fires["nightly"]]
    assert nightly_utc == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, first pass only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]
    day = _local_day(fires["rome_hourly"], 25)
    assert len(day) == 25
    twos = [f.astimezone(UTC) for f in day if f.hour == 2]
    assert twos == [datetime(2026, 10, 25, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)]


def test_croniter_raw_behaviour_we_rely_on() -> None:
    """Pins what croniter itself does, so an upgrade that changes it fails here first."""
    from croniter import croniter

    def nxt(expr: str, start: datetime) -> datetime:
        value = croniter(expr, start).get_next(datetime)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    spring = datetime(2026, 3, 29, 1, 0, tzinfo=ROME)
    assert nxt("30 2 * * *", spring) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).astimezone(ROME)
    assert nxt("30 2 * * *", first) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # the repeat


def test_crontab_last_fire_matches_next_fire() -> None:
    sched = crontab("30 2 * * *", tz="Europe/Rome")
    repeat = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, after the dropped repeat
    assert sched.last_fire(repeat) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    tick = datetime(2026, 10, 24, 0, 30, tzinfo=UTC)
    assert sched.last_fire(tick) == tick  # at or before
    assert sched.next_fire(tick) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_every_is_exact_for_fractional_intervals() -> None:
    sched = every(0.1)
    at = utc(START + 0.3)
    assert sched.next_fire(at) == utc(START) + timedelta(milliseconds=400)
    assert sched.last_fire(at) == utc(START) + timedelta(milliseconds=300)


# -- catch-up -----------------------------------------------------------------------------------


@pytest.mark.parametrize("catch_up", ["one", "skip"])
async def test_catch_up_after_3_hour_outage(catch_up: str) -> None:
    clock = FakeClock(START)
    m = TaskManager("memory://", tasks=[five, hourly], clock=clock)
    s = TaskScheduler(m, catch_up=catch_up)  # type: ignore[arg-type]
    await s.tick()
    clock.advance(300)
    assert len(await s.tick()) == 1
    clock.advance(3 * 3600 + 60)  # down from START+300 to START+11160
    restarted = TaskScheduler(m, catch_up=catch_up)  # type: ignore[arg-type]
    queued = await restarted.tick()
    if catch_up == "one":
        assert sorted((r.task, fire_of(r)) for r in queued) == [
            ("five", utc(START + 11100)),  # the latest missed tick, once
            ("hourly", utc(START + 10800)),
        ]
    else:
        assert queued == []
    assert await restarted.next_fires() == {
        "five": utc(START + 11400),
        "hourly": utc(START + 14400),
    }
    clock.set(START + 11400)
    [run] = await restarted.tick()  # back to normal in both modes
    assert fire_of(run) == utc(START + 11400)
    assert len(await runs_of(m, "five")) == (3 if catch_up == "one" else 2)


def test_plan_fire_one_late_tick_fires_in_both_modes() -> None:
    sched, cursor = every(300), utc(START)
    late = utc(START + 400)  # one tick due, 100 s late: not a missed period
    for mode in ("one", "skip"):
        plan = plan_fire(sched, cursor, late, mode)
        assert plan.fire == utc(START + 300) and not plan.missed
        assert plan.next_due == utc(START + 600)
    plan = plan_fire(sched, cursor, utc(START + 299), "one")
    assert plan.fire is None and plan.cursor == cursor


# -- randomize ----------------------------------------------------------------------------------


async def test_randomize_delays_execute_after_never_the_fire_time() -> None:
    @task(schedule=every(60), randomize=20)
    async def jittery() -> None: ...

    @task(schedule=every(60), randomize=lambda: 7.5)
    async def fixed_jitter() -> None: ...

    @task(schedule=every(60))
    async def plain() -> None: ...

    clock = FakeClock(START)
    m = TaskManager("memory://", tasks=[jittery, fixed_jitter, plain], clock=clock)
    s = TaskScheduler(m)
    for _ in range(101):
        await s.tick()
        clock.advance(60)
    runs = await runs_of(m, "jittery")
    assert len(runs) == 100
    assert sorted(fire_of(r) for r in runs) == [utc(START + 60 * k) for k in range(1, 101)]
    delays = [(r.execute_after - fire_of(r)).total_seconds() for r in runs if r.execute_after]
    assert len(delays) == 100 and all(0 <= d <= 20 for d in delays)
    assert max(delays) - min(delays) > 5  # spread, not a constant
    for r in await runs_of(m, "fixed_jitter"):
        assert r.execute_after == fire_of(r) + timedelta(seconds=7.5)
    assert all(r.execute_after is None for r in await runs_of(m, "plain"))


# -- switches and limits --------------------------------------------------------------------------


async def test_disabled_task_is_skipped_by_every_scheduler() -> None:
    clock, store = FakeClock(START), MemoryStore()
    a_mgr = TaskManager(store, tasks=[five], clock=clock)
    b_mgr = TaskManager(store, tasks=[five], clock=clock)
    a = TaskScheduler(a_mgr, lock_ttl=30, holder_id="a")
    await a.tick()
    await b_mgr.disable("five")  # through another manager: the switch is stored
    assert (await a.next_fires())["five"] is None
    for _ in range(5):
        clock.advance(300)
        assert await a.tick() == []
    await a.stop()
    b = TaskScheduler(b_mgr, lock_ttl=30, holder_id="b")
    clock.advance(300)
    assert await b.tick() == []
    await a_mgr.enable("five")
    # ticks passed while disabled are not caught up on enable
    assert (await b.next_fires())["five"] == utc(clock.now + 300)
    clock.advance(300)
    [run] = await b.tick()
    assert fire_of(run) == utc(clock.now)
    assert len(await runs_of(b_mgr, "five")) == 1


async def test_max_concurrency_1_never_overlaps(caplog: pytest.LogCaptureFixture) -> None:
    @task(
        schedule=every(60),
        max_concurrency=1,
        triggers=(Trigger("also", every(90), {}),),
    )
    async def single() -> None: ...

    @task(schedule=every(60))
    async def many() -> None: ...

    clock = FakeClock(START)
    m = TaskManager("memory://", tasks=[single, many], clock=clock)
    s = TaskScheduler(m)
    await s.tick()
    clock.set(START + 60)
    [first] = [r for r in await s.tick() if r.task == "single"]
    caplog.set_level(logging.INFO, logger="taskloom.scheduler")
    clock.set(START + 90)  # the trigger's tick: the schedule's run is still queued
    assert [r.task for r in await s.tick()] == []
    clock.set(START + 120)
    assert [r.task for r in await s.tick()] == ["many"]
    assert f"previous run {first.id} still queued" in caplog.text
    await run_burst(m)
    clock.set(START + 180)  # both entries due; the first one queued blocks the second
    fired = [r for r in await s.tick() if r.task == "single"]
    assert len(fired) == 1
    singles = await runs_of(m, "single")
    assert len(singles) == 2
    assert len(await runs_of(m, "many")) == 3  # no limit: overlapping runs are fine


# -- triggers ----------------------------------------------------------------------------------


async def test_triggers_fire_with_their_inputs(caplog: pytest.LogCaptureFixture) -> None:
    @task(
        triggers=(
            Trigger("hourly", crontab("0 * * * *"), {"n": 1}),
            Trigger("half", every(timedelta(minutes=30)), {"n": 2}),
            Trigger("cron-string", "15 * * * *", {"n": 3}),
            Trigger("dormant", every(60), {"n": 4}, auto_activate=False),
            Trigger("bad-inputs", every(timedelta(hours=1)), {"n": "not a number"}),
        )
    )
    async def report(n: int) -> int:
        return n

    clock = FakeClock(START)
    m = TaskManager("memory://", tasks=[report], clock=clock)
    s = TaskScheduler(m)
    assert (await s.next_fires())["report"] == utc(START + 900)
    caplog.set_level(logging.ERROR, logger="taskloom.scheduler")
    for _ in range(12 + 1):
        await s.tick()
        clock.advance(600)
    runs = await runs_of(m, "report")
    by_trigger = Counter(r.dedup_key.split("@")[0] for r in runs if r.dedup_key)
    assert by_trigger == {"report:hourly": 2, "report:half": 4, "report:cron-string": 2}
    assert {r.params["n"] for r in runs if "hourly" in (r.dedup_key or "")} == {1}
    assert {r.params["n"] for r in runs if "half" in (r.dedup_key or "")} == {2}
    assert "report:bad-inputs" in caplog.text  # logged; the others were not held up
    await run_burst(m)
    assert sorted(r.result for r in await runs_of(m, "report")) == [1, 1, 2, 2, 2, 2, 3, 3]


def test_trigger_with_a_bad_schedule_fails_at_definition() -> None:
    with pytest.raises(ScheduleError, match="not a schedule"):
        Trigger("odd", object(), {})
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        Trigger("typo", "61 * * * *", {})
    with pytest.raises(ScheduleError, match="invalid cron expression"):

        @task(schedule="61 * * * *")
        async def typo() -> None: ...


# -- definitions and arguments -------------------------------------------------------------------


def test_bad_schedules_raise_at_definition() -> None:
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        crontab("61 * * * *")
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        crontab("every day")
    with pytest.raises(ScheduleError, match="unknown time zone"):
        crontab("0 * * * *", tz="Mars/Olympus_Mons")
    with pytest.raises(ScheduleError):
        every(0)
    with pytest.raises(ScheduleError):
        every(timedelta(seconds=-5))
    with pytest.raises(ScheduleError, match="not a schedule"):
        as_schedule([1, 2])
    assert as_schedule(timedelta(minutes=1)) == every(60)
    assert as_schedule("0 * * * *") == crontab("0 * * * *")


async def test_bad_scheduler_arguments() -> None:
    m = TaskManager("memory://", tasks=[five])
    with pytest.raises(ConfigError):
        TaskScheduler(m, catch_up="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TaskScheduler(m, lock_ttl=0)
    with pytest.raises(ScheduleError, match="timezone-aware"):
        await TaskScheduler(m).tick(datetime(2027, 1, 1))


async def test_next_fires_lists_scheduled_tasks_only() -> None:
    @task
    async def unscheduled() -> None: ...

    clock = FakeClock(START + 10)
    m = TaskManager("memory://", tasks=[five, hourly, unscheduled], clock=clock)
    fires = await TaskScheduler(m).next_fires()
    assert fires == {"five": utc(START + 300), "hourly": utc(START + 3600)}
    in_rome = datetime(2027, 1, 15, 9, 10, tzinfo=ROME)  # any aware datetime works
    assert (await TaskScheduler(m).next_fires(in_rome))["hourly"] == utc(START + 3600)


# -- the loop ------------------------------------------------------------------------------------


class _Queued(RunHooks):
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.runs: list[TaskRun] = []

    async def on_queued(self, run: TaskRun) -> None:
        self.runs.append(run)
        self.event.set()


async def test_run_loop_follows_the_fake_clock_and_stops_at_once() -> None:
    clock, hook = FakeClock(START), _Queued()
    m = TaskManager("memory://", tasks=[five], clock=clock, hooks=[hook])
    s = TaskScheduler(m, lock_ttl=0.3)  # renews every 0.1 s of real time
    async with m:
        await s.tick()  # first sight at START: the first fire is START+300
        loop_task = asyncio.create_task(s.run())
        for k in (1, 2):
            hook.event.clear()
            clock.set(START + 300 * k)  # fake time: the next pass sees the tick due
            await asyncio.wait_for(hook.event.wait(), timeout=5)
        assert [fire_of(r) for r in hook.runs] == [utc(START + 300), utc(START + 600)]
        await asyncio.wait_for(s.stop(), timeout=1)
        await asyncio.wait_for(loop_task, timeout=1)
        assert not s.is_leader
        assert await m.store.acquire_lock(LEADER_LOCK, "next", 1, clock.now)


async def test_stop_wakes_a_long_sleep() -> None:
    m = TaskManager("memory://", tasks=[hourly])
    s = TaskScheduler(m, lock_ttl=600)  # sleeps up to 200 s between passes
    async with m:
        await s.tick()
        assert s.is_leader
        loop_task = asyncio.create_task(s.run())
        await asyncio.sleep(0)
        await asyncio.wait_for(s.stop(), timeout=1)  # an event wakes it, not a poll
        await asyncio.wait_for(loop_task, timeout=1)
    assert not s.is_leader


async def test_failing_pass_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class DownStore(MemoryStore):
        down = False

        async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
            if self.down:
                self.down = False
                raise ConnectionError("store unreachable")
            return await super().acquire_lock(name, holder, ttl, now)

    hook, clock, store = _Queued(), FakeClock(START), DownStore()
    m = TaskManager(store, tasks=[five], clock=clock, hooks=[hook])
    s = TaskScheduler(m, lock_ttl=0.3)
    caplog.set_level(logging.ERROR, logger="taskloom.scheduler")
    async with m:
        await s.tick()
        store.down = True  # the loop's first pass fails
        async with s:
            clock.set(START + 300)
            await asyncio.wait_for(hook.event.wait(), timeout=5)
    assert "scheduler pass failed" in caplog.text
    assert [fire_of(r) for r in hook.runs] == [utc(START + 300)]


def test_a_schedule_must_give_required_inputs() -> None:
    with pytest.raises(ScheduleError, match=r"'needs_n'.*n: Field required.*params="):

        @task(schedule=every(timedelta(minutes=5)))
        def needs_n(n: int) -> int: ...

    with pytest.raises(ScheduleError, match="n: Input should be a valid integer"):

        @task(schedule=crontab("0 * * * *", params={"n": "many"}))
        def bad_n(n: int) -> int: ...

    @task(schedule=every(60))
    def has_default(n: int = 2) -> int: ...

    assert has_default.schedule is not None


async def test_schedule_params_reach_the_queued_runs() -> None:
    @task(schedule=every(timedelta(minutes=5), params={"n": 7}))
    async def crunch(n: int, scale: float = 1.0) -> float:
        return n * scale

    clock = FakeClock(START)
    async with TaskManager("memory://", tasks=[crunch], clock=clock) as m:
        sched = TaskScheduler(m)
        await sched.tick()
        clock.advance(300)
        [run] = await sched.tick()
        assert run.params == {"n": 7, "scale": 1.0}


async def test_scheduled_and_queued_ids_share_one_clock() -> None:
    """A tick's id sorts by its fire time at 100 ns, like a queued run's, and is fixed per tick."""
    clock = FakeClock(START)
    async with TaskManager("memory://", tasks=[five], clock=clock) as m:
        sched = TaskScheduler(m)
        await sched.tick()
        before = await m.queue("five")  # made with the real clock: long before START
        clock.advance(300)
        [scheduled] = await sched.tick()
        entry = sched.entries()[0]
        assert scheduled.id == entry.run_id(fire_of(scheduled))
        assert len(scheduled.id) == len(before.id) == 32
        assert int(scheduled.id[:14], 16) == int((START + 300) * 10_000_000)
        assert [r.id for r in await m.runs()] == [scheduled.id, before.id]
