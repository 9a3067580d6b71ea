"""An app for the queue-control process tests: a rate-limited task that logs its starts, and
a task for schedules added through the CLI."""

from __future__ import annotations

import os
import time

from taskloom import TaskManager, task


@task(rate_limit="50/s")
async def capped(i: int) -> int:
    """At most 50 starts per second across every worker process."""
    with open(os.environ["CONTROL_LOG"], "a") as log:  # one short append per line: atomic
        log.write(f"{i} {os.getpid()} {time.time():.6f}\n")
    return i


@task(queue="steady")
async def steady(i: int) -> int:
    """Work on a queue that gets paused."""
    return i


@task
async def report(day: int) -> int:
    """Fired by a schedule added at run time."""
    return day


def make() -> TaskManager:
    """Manager on TASKLOOM_STORE."""
    return TaskManager(
        os.environ["TASKLOOM_STORE"], tasks=[capped, steady, report], poll_interval=0.5
    )
