"""Tasks for the Ray integration tests; Ray workers import them from here."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from taskloom import Resources, TaskRun, task


@task(executor="ray", env={"RAY_TASKS_MODE": "ray"})
def describe(ctx: TaskRun, n: int) -> dict[str, Any]:
    """Where and how the run executed."""
    return {
        "pid": os.getpid(),
        "double": n * 2,
        "mode": os.environ.get("RAY_TASKS_MODE"),
        "run_id": ctx.id,
    }


@task(executor="ray", resources=Resources(cpu="500m", memory="64Mi"))
def assigned() -> dict[str, float]:
    """The resources Ray granted this task."""
    import ray

    return dict(ray.get_runtime_context().get_assigned_resources())


@task(executor="ray", timeout_seconds=2.0)
def stall(marker: str, seconds: float = 60.0) -> int:
    """Write our pid to `marker`, then sleep `seconds`; returns the pid if it finishes."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


@task
def plain() -> int:
    """No executor of its own: runs wherever the manager's default says."""
    return os.getpid()


@task(executor="ray")
def fails(message: str) -> None:
    """Raise a KeyError."""
    raise KeyError(message)


@task(executor="ray")
def noop() -> None:
    """Nothing (round-trip latency)."""
