"""Importable tasks for the Flyte-option tests: a pool child imports them from here."""

from __future__ import annotations

import os

from taskloom import ReusePolicy, TaskRun, task

# Module state: a reusable task's warm process keeps it between runs.
CALLS: list[int] = []


@task(reusable=True)
def warm(n: int) -> dict[str, int]:
    """Say which process ran it and how many runs that process served."""
    CALLS.append(n)
    return {"pid": os.getpid(), "served": len(CALLS)}


@task(reusable=ReusePolicy(replicas=1, idle_ttl=0.2))
def short_lived(n: int) -> int:
    """Runs in a warm process that stops after 0.2 s without work."""
    return os.getpid()


@task(cpu_bound=True, report=True)
def charted(ctx: TaskRun, points: int) -> int:
    """Reports from a pool child; the parts travel back over the pipe."""
    ctx.report(f"# {points} points\n\n| x | y |\n|---|---|\n| 1 | {points} |")
    ctx.report("<figure><svg width='10' height='10'></svg></figure>")
    if points < 0:
        raise ValueError("no negative points")
    return points
