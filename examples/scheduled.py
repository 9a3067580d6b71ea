"""Scheduled tasks: every(), a time-zoned crontab, Flyte-style triggers, two schedulers.

    python examples/scheduled.py

Two schedulers share one SQLite store, as two processes would; only the leader queues. A
consumer executes what is queued. After a few ticks the leader stops cleanly and the other
takes over at once; every tick is still queued exactly once.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

from taskloom import (
    RunHooks,
    TaskConsumer,
    TaskManager,
    TaskRun,
    TaskState,
    Trigger,
    crontab,
    every,
    task,
)
from taskloom.scheduler import TaskScheduler


@task(schedule=every(timedelta(seconds=1)), max_concurrency=1)
async def heartbeat(ctx: TaskRun) -> str:
    """Once a second, never overlapping itself."""
    return f"beat {ctx.dedup_key}"


@task(schedule=crontab("30 2 * * *", tz="Europe/Rome"), randomize=300)
async def nightly_report() -> None:
    """At 02:30 in Rome, started up to five minutes later to spread load."""


@task(
    triggers=(
        Trigger("eu", every(2), {"region": "eu"}),
        Trigger("us", every(2), {"region": "us"}),
    )
)
async def sync(region: str) -> str:
    """Sync one region; each trigger passes its own inputs."""
    return f"synced {region}"


class Progress(RunHooks):
    """Sets `event` each time `wanted` more heartbeats have finished."""

    def __init__(self) -> None:
        self.beats = 0
        self.wanted = 0
        self.event = asyncio.Event()

    def expect(self, more: int) -> None:
        self.wanted = self.beats + more
        self.event.clear()

    async def after_run(self, run: TaskRun, error: object) -> None:
        if run.task == "heartbeat" and run.state is TaskState.success:
            self.beats += 1
            if self.beats >= self.wanted:
                self.event.set()


async def main(db: Path) -> None:
    tasks = [heartbeat, nightly_report, sync]
    progress = Progress()
    url = f"sqlite:///{db}"
    first, second = TaskManager(url, tasks=tasks, hooks=[progress]), TaskManager(url, tasks=tasks)
    async with first, second:
        a = TaskScheduler(first, lock_ttl=1.5, holder_id="scheduler-a")
        b = TaskScheduler(second, lock_ttl=1.5, holder_id="scheduler-b")
        print("next fires:")
        for name, when in sorted((await a.next_fires()).items()):
            print(f"  {name:15s} {when:%Y-%m-%d %H:%M:%S %Z}" if when else f"  {name} disabled")

        # Runs queued through `second` wake a consumer of `first` only on its fallback poll
        # (the SQLite store notifies within one process), hence a short poll_interval here.
        async with TaskConsumer(first, grace_seconds=2, poll_interval=0.2):
            await a.tick()  # a takes the lead first
            async with b:
                async with a:
                    progress.expect(2)
                    await asyncio.wait_for(progress.event.wait(), timeout=10)
                    print(f"leader: scheduler-a={a.is_leader} scheduler-b={b.is_leader}")
                print("scheduler-a stopped; lock released")
                progress.expect(2)
                await asyncio.wait_for(progress.event.wait(), timeout=10)
                print(f"leader: scheduler-a={a.is_leader} scheduler-b={b.is_leader}")
        await TaskConsumer(first).run(burst=True)  # what was queued last, then return
        finished = await first.runs(limit=1000)

    print("runs:")
    for run in sorted(finished, key=lambda r: r.dedup_key or ""):
        print(f"  {run.dedup_key:45s} {run.state:8s} {run.result}")
    keys = Counter(r.dedup_key for r in finished)
    print(f"each tick queued once: {all(n == 1 for n in keys.values())}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "scheduled.db"))
