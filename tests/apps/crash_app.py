"""An app for the crash test: each execution is logged to a file before it returns."""

from __future__ import annotations

import asyncio
import os

from taskloom import TaskManager, TaskRun, task


@task
async def work(ctx: TaskRun, i: int) -> int:
    """Log the execution, take a little while, return i."""
    with open(os.environ["CRASH_LOG"], "a") as log:
        log.write(f"{i} {os.getpid()}\n")
    await asyncio.sleep(0.02)  # the work itself
    # With CRASH_HOLD=<n>, runs from n on never finish here: a worker killed while it holds
    # them is surely mid-run, however slow the machine (the worker that rescues them has no
    # CRASH_HOLD)
    hold = os.environ.get("CRASH_HOLD")
    if hold and i >= int(hold):
        await asyncio.Event().wait()
    return i


def make() -> TaskManager:
    """Manager on TASKLOOM_STORE with short leases so the test is quick."""
    return TaskManager(
        os.environ["TASKLOOM_STORE"], tasks=[work], lease_seconds=2.0, poll_interval=0.1
    )
