"""An app for runs started by `taskloom run`: the first execution stalls until it is killed
or cancelled; a later one (a worker's, after reclaim) finishes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from taskloom import TaskManager, TaskRun, task


def _log_execution(log: Path) -> bool:
    """Append this process's id; True if it is the first execution."""
    first = not log.exists()
    with log.open("a") as out:
        out.write(f"{os.getpid()}\n")
    return first


@task
async def stall(ctx: TaskRun, tag: str) -> str:
    """Log this execution; the first one waits (for a kill or a cancel), later ones return."""
    first = await asyncio.to_thread(_log_execution, Path(os.environ["EXEC_LOG"]))
    if first:
        await asyncio.wait_for(ctx.cancelled.wait(), 600)
    return f"{tag} by {os.getpid()}"


def make() -> TaskManager:
    """Short leases so a dead process's run is reclaimed quickly."""
    return TaskManager(
        os.environ["TASKLOOM_STORE"], tasks=[stall], lease_seconds=2.0, poll_interval=0.1
    )
