"""Queue control through the manager and a real consumer, on every store: pause and resume,
start-rate limits (fake clock), and schedules added at run time fired by the scheduler."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from taskloom import (
    ConfigError,
    InvalidParamsError,
    RateLimit,
    ScheduleError,
    ScheduleNotFoundError,
    TaskConsumer,
    TaskManager,
    TaskScheduler,
    TaskState,
    UnknownTaskError,
    crontab,
    every,
    task,
)
from taskloom.ratelimit import parse_rate_limit
from taskloom.store import Store
from taskloom.testing import FakeClock, run_burst

START = 1_800_000_000.0  # a multiple of every interval used here


@task(queue="mail")
async def send(to: str = "x") -> str:
    return to


@task(rate_limit="3/10s")
async def call_api(n: int = 0) -> int:
    return n


@task
async def report(day: int) -> int:
    return day


TASKS = [send, call_api, report]


def test_rate_limit_spellings() -> None:
    assert parse_rate_limit("100/m") == RateLimit(100, per=timedelta(minutes=1))
    assert parse_rate_limit("5/s") == RateLimit(5, per=timedelta(seconds=1))
    assert parse_rate_limit("10/30s") == RateLimit(10, per=timedelta(seconds=30))
    assert parse_rate_limit("2 / hour") == RateLimit(2, per=timedelta(hours=1))
    assert str(RateLimit(100, per=timedelta(minutes=1))) == "100/m"
    assert str(RateLimit(3, per=10)) == "3/10s"
    assert call_api.rate_limit == RateLimit(3, per=timedelta(seconds=10))
    for bad in ("100", "x/m", "0/s", "5/fortnight"):
        with pytest.raises(ConfigError):
            parse_rate_limit(bad)
    with pytest.raises(ConfigError, match="count"):
        RateLimit(0)


async def test_paused_queue_holds_runs_until_resumed(store: Store) -> None:
    async with TaskManager(store, tasks=TASKS) as m:
        info = await m.pause("mail")
        assert info.paused and info.name == "mail"
        held = await m.queue("send", to="a")  # a paused queue still accepts runs
        other = await m.queue("report", day=1)
        await run_burst(m)
        assert (await m.get_run(held.id)).state is TaskState.queued
        assert (await m.get_run(other.id)).state is TaskState.success
        listed = {q.name: q for q in await m.queues()}
        assert listed["mail"].paused and listed["mail"].depth["medium"] == 1
        assert listed["mail"].oldest_queued_age is not None
        assert not listed["default"].paused and listed["default"].depth["medium"] == 0
        assert not (await m.resume("mail")).paused
        await run_burst(m)
        assert (await m.get_run(held.id)).state is TaskState.success


async def test_resume_wakes_a_serving_worker(store: Store) -> None:
    async with TaskManager(store, tasks=TASKS, poll_interval=60) as m:
        await m.pause("mail")
        run = await m.queue("send", to="b")
        async with TaskConsumer(m) as consumer:
            await asyncio.sleep(0.2)  # the worker has claimed (nothing) and sleeps for 60 s
            assert (await m.get_run(run.id)).state is TaskState.queued
            await m.resume("mail")
            done = await m.wait(run.id, timeout=10)  # far less than the 60 s poll interval
            assert done.state is TaskState.success and consumer.processed == 1


async def test_rate_limited_runs_wait_queued_without_an_attempt(store: Store) -> None:
    clock = FakeClock(START)
    async with TaskManager(store, tasks=TASKS, clock=clock) as m:
        runs = await m.queue_many("call_api", [{"n": i} for i in range(7)])
        done = await run_burst(m)
        assert len(done) == 3
        waiting = [await m.get_run(r.id) for r in runs if r.id not in {d.id for d in done}]
        assert {r.state for r in waiting} == {TaskState.queued}
        assert all(r.retry_attempt == 0 and r.attempts == [] for r in waiting)
        assert sorted(r.execute_after.timestamp() for r in waiting if r.execute_after) == [
            START + 10, START + 10, START + 10, START + 20,
        ]  # fmt: skip
        clock.advance(10)
        assert len(await run_burst(m)) == 3
        clock.advance(10)
        assert len(await run_burst(m)) == 1
        starts = sorted(r.start.timestamp() for r in await m.runs(task="call_api") if r.start)
        assert Counter(starts) == {START: 3, START + 10: 3, START + 20: 1}


async def test_queue_rate_limit_through_the_manager(store: Store) -> None:
    clock = FakeClock(START)
    async with TaskManager(store, tasks=TASKS, clock=clock) as m:
        info = await m.set_queue_rate_limit("mail", "2/m")
        assert info.rate_limit == "2/m"
        await m.queue_many("send", [{"to": str(i)} for i in range(3)])
        assert len(await run_burst(m)) == 2
        clock.advance(60)
        assert len(await run_burst(m)) == 1
        assert (await m.set_queue_rate_limit("mail", None)).rate_limit is None


async def test_stored_schedule_fires_once_per_tick_across_schedulers(store: Store) -> None:
    clock = FakeClock(START + 0.5)
    async with TaskManager(store, tasks=TASKS, clock=clock) as m:
        added = await m.add_schedule("daily-report", "report", every(60), params={"day": 3})
        assert added.source == "stored" and added.enabled and added.task == "report"
        assert added.next_fire is not None and added.next_fire.timestamp() == START + 60
        first, second = TaskScheduler(m, holder_id="a"), TaskScheduler(m, holder_id="b")
        queued = []
        for _ in range(3):
            clock.advance(60)
            for sched in (first, second, first):
                queued += await sched.tick()
        assert len(queued) == 3  # one per tick, whoever leads
        runs = await m.runs(task="report")
        assert sorted(r.params["day"] for r in runs) == [3, 3, 3]
        assert len({r.id for r in runs}) == 3
        # the lead fails over: the new leader resumes after the last tick handled
        await store.release_lock("scheduler-leader", "a")
        clock.advance(60)
        assert len(await second.tick()) == 1
        assert len(await first.tick()) == 0
        listed = {s.name: s for s in await m.schedules()}
        assert listed["daily-report"].last_run_id == (await m.runs(task="report"))[0].id
        await m.remove_schedule("daily-report")
        clock.advance(60)
        assert await second.tick() == []
        with pytest.raises(ScheduleNotFoundError):
            await m.remove_schedule("daily-report")


async def test_stored_schedule_is_checked_when_added(store: Store) -> None:
    async with TaskManager(store, tasks=TASKS) as m:
        with pytest.raises(UnknownTaskError):
            await m.add_schedule("x", "nope", every(60))
        with pytest.raises(InvalidParamsError):
            await m.add_schedule("x", "report", every(60), params={"day": "monday"})
        with pytest.raises(InvalidParamsError):
            await m.add_schedule("x", "report", every(60))  # day is required
        with pytest.raises(ScheduleError, match="cron"):
            await m.add_schedule("x", "report", "not a cron", params={"day": 1})
        assert await m.schedules() == []
        # the schedule may carry the inputs itself, as on a task
        added = await m.add_schedule("y", "report", every(60, params={"day": 2}))
        assert added.params == {"day": 2}


async def test_disabled_stored_schedule_does_not_fire(store: Store) -> None:
    clock = FakeClock(START + 0.5)
    async with TaskManager(store, tasks=TASKS, clock=clock) as m:
        await m.add_schedule("r", report, crontab("* * * * *"), {"day": 1}, enabled=False)
        sched = TaskScheduler(m)
        clock.advance(60)
        assert await sched.tick() == []
        assert (await m.schedules())[0].next_fire is None
        on = await m.set_schedule_enabled("r", True)
        assert on.enabled and on.next_fire is not None
        clock.advance(60)
        assert len(await sched.tick()) == 1


async def test_scheduler_loop_picks_up_a_new_schedule_at_once() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        sched = TaskScheduler(m, lock_ttl=300)  # it would sleep 100 s between passes
        async with sched:
            await asyncio.sleep(0.05)
            with m.store.notifier.watch("queue") as queued:
                await m.add_schedule("fast", "report", every(0.2), {"day": 2})
                await asyncio.wait_for(queued.wait(), timeout=5)
        [run] = await m.runs(task="report")
        assert run.params == {"day": 2}


async def test_replacing_a_stored_schedule_starts_it_afresh(store: Store) -> None:
    clock = FakeClock(START + 0.5)
    async with TaskManager(store, tasks=TASKS, clock=clock) as m:
        await m.add_schedule("r", "report", every(3600), {"day": 1})
        sched = TaskScheduler(m)
        assert await sched.tick() == []
        clock.advance(1800)
        await m.add_schedule("r", "report", every(60), {"day": 2})  # no catch-up of the hour
        assert await sched.tick() == []
        clock.advance(60)
        [run] = await sched.tick()
        assert run.params == {"day": 2}


async def test_a_stored_schedule_of_an_unknown_task_is_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START + 0.5)
    async with TaskManager("memory://", tasks=TASKS, clock=clock) as m:
        await m.add_schedule("r", "report", every(60), {"day": 1})
        async with TaskManager(m.store, tasks=[send], clock=clock) as other:  # no `report`
            sched = TaskScheduler(other)
            for _ in range(3):
                clock.advance(60)
                assert await sched.tick() == []
    assert caplog.text.count("stored schedule 'r' skipped here") == 1


async def test_held_back_runs_leave_the_worker_asleep(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(START)  # frozen: the held-back runs stay 10 s away
    async with TaskManager("memory://", tasks=TASKS, clock=clock, poll_interval=60) as m:
        runs = await m.queue_many("call_api", [{"n": i} for i in range(5)])
        claims = 0
        claim = m.store.claim

        async def counting(*args: object, **kwargs: object) -> object:
            nonlocal claims
            claims += 1
            return await claim(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(m.store, "claim", counting)
        async with TaskConsumer(m):
            done = [await m.wait(r.id, timeout=10) for r in runs[:3]]
            settled = claims
            await asyncio.sleep(0.3)  # a busy loop would claim hundreds of times here
            assert claims <= settled + 1  # a wake-up already in flight may still claim
        assert all(r.state is TaskState.success for r in done)
        assert settled <= 5  # the first claim, then one per finished run at most
