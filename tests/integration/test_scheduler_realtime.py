"""The scheduler loop on the real clock: every(1 s) through a TaskConsumer on the memory store.

A few seconds in total; every wait is on a run state or an event, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime

from taskloom import RunHooks, TaskConsumer, TaskManager, TaskRun, TaskState, every, task
from taskloom.scheduler import TaskScheduler

WANTED = 3


class _Finished(RunHooks):
    """Sets `event` once `WANTED` runs have finished an attempt."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0

    async def after_run(self, run: TaskRun, error: object) -> None:
        self.count += 1
        if self.count >= WANTED:
            self.event.set()


@task(schedule=every(1))
async def tick_tock(ctx: TaskRun) -> str:
    """Runs once a second."""
    return ctx.id


async def test_every_second_runs_end_to_end() -> None:
    hook = _Finished()
    manager = TaskManager("memory://", tasks=[tick_tock], hooks=[hook])
    # lock_ttl 30 s: a pass renews every 10 s, so one-second fires prove the loop sleeps
    # until the next fire time rather than until the next renewal.
    scheduler = TaskScheduler(manager, lock_ttl=30)
    async with manager, TaskConsumer(manager, grace_seconds=2):
        async with scheduler:
            await asyncio.wait_for(hook.event.wait(), timeout=WANTED + 3)
        runs = await manager.runs(task="tick_tock")
        done = [await manager.wait(r.id, timeout=3) for r in runs]

    assert len(done) >= WANTED
    assert all(r.state is TaskState.success and r.result == r.id for r in done)
    fires = sorted(datetime.fromisoformat((r.dedup_key or "").rsplit("@", 1)[1]) for r in done)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    assert all(g >= 1 and g == int(g) for g in gaps)  # distinct ticks, whole seconds apart
    assert all(f.microsecond == 0 for f in fires)  # multiples of 1 s since the epoch
    for run in done:  # queued promptly after its tick: loose bound, CI machines are slow
        assert run.queued is not None and run.dedup_key is not None
        fire = datetime.fromisoformat(run.dedup_key.rsplit("@", 1)[1])
        assert 0 <= (run.queued - fire).total_seconds() < 0.5
    assert not scheduler.is_leader  # stopped, lock released
