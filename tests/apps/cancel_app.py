"""An app whose task waits until it is cancelled; heartbeats are rare on purpose."""

from __future__ import annotations

import asyncio
import os

from taskloom import TaskManager, TaskRun, task


@task
async def sleepy(ctx: TaskRun) -> None:
    """Wait for a cancel (or a long time)."""
    await asyncio.wait_for(ctx.cancelled.wait(), 600)


def make() -> TaskManager:
    """Long leases: the worker beats every 60 s, so a quick cancel must come from an event."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[sleepy], lease_seconds=180)
