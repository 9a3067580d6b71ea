"""cpu_bound tasks for the process-executor tests; a pool child imports them from here."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from taskloom import Resources, RetryPolicy, Secret, TaskRun, is_in_cpu_process, task

LIMIT = "256Mi"
_log = logging.getLogger(__name__)


@task(cpu_bound=True, env={"PROC_TASKS_MODE": "fast"})
def where(ctx: TaskRun, token: str = "") -> dict[str, Any]:
    """Report the process it ran in and whether `token` shows in its argv or environment."""
    pid = os.getpid()
    return {
        "pid": pid,
        "mode": os.environ.get("PROC_TASKS_MODE"),
        "cpu_process": is_in_cpu_process(),
        "run_id": ctx.id,
        "token_in_cmdline": token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes(),
        "token_in_environ": token.encode() in Path(f"/proc/{pid}/environ").read_bytes(),
    }


@task(cpu_bound=True)
def noop() -> None:
    """Do nothing (dispatch latency)."""


@task(cpu_bound=True)
def square(n: int) -> int:
    """n squared."""
    return n * n


@task(cpu_bound=True, timeout_seconds=0.5)
def sleeper(marker: str) -> None:
    """Write our pid to `marker`, then sleep far past the timeout."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(60)


@task(cpu_bound=True)
def crash(how: str) -> None:
    """Die without a Python exception: `exit` (os._exit(3)) or `segv` (SIGSEGV to self)."""
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # the signal is delivered before this returns


@task(cpu_bound=True, retry=RetryPolicy(max_attempts=2, wait=0.0))
def flaky(marker: str) -> int:
    """Fail the first attempt (by crashing the child), succeed on the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        os._exit(7)
    return os.getpid()


@task(cpu_bound=True, resources=Resources(cpu=1, memory=LIMIT))
def hog(factor: float = 2.0) -> int:
    """Allocate `factor` times the memory limit."""
    from taskloom.policies import parse_memory

    size = int((parse_memory(LIMIT) or 0) * factor)
    block = bytearray(size)
    return len(block)


@task(cpu_bound=True, resources=Resources(cpu=1))
def affinity() -> list[int]:
    """The cores this run may use."""
    return sorted(os.sched_getaffinity(0))


@task(cpu_bound=True, secrets=[Secret("proc-token", env_var="PROC_TASKS_SECRET")])
def uses_secret(ctx: TaskRun) -> bool:
    """True if the secret reached the run context (never returns the value itself)."""
    return ctx.secrets["proc-token"] == os.environ["PROC_TASKS_SECRET"]


@task(cpu_bound=True)
def raises(message: str) -> None:
    """Raise a ValueError."""
    raise ValueError(message)


@task(cpu_bound=True)
def aborts(ctx: TaskRun) -> None:
    """Abort from inside the child."""
    ctx.abort("no thanks")


@task(cpu_bound=True)
def progress(ctx: TaskRun) -> str:
    """Report progress twice."""
    ctx.set_progress(0.5, "half")
    ctx.set_progress(0.9, "almost")
    return "done"


@task(cpu_bound=True)
def allocate(nbytes: int) -> int:
    """Allocate `nbytes` (no memory limit of its own)."""
    return len(bytearray(nbytes))


@task(cpu_bound=True)
def blocker(ctx: TaskRun) -> None:
    """Say it started (progress), then block far longer than any test waits."""
    ctx.set_progress(0.0, "started")
    time.sleep(60)


@task(cpu_bound=True)
async def async_square(n: int) -> int:
    """An async cpu_bound task: the child runs it to completion in its own event loop."""
    return n * n


@task(cpu_bound=True, retry=2, secrets=[Secret("absent", env_var="PROC_TASKS_ABSENT")])
def needs_absent_secret() -> None:
    """Its secret is never set: the run fails in the child before the function runs."""


class Poison(BaseException):
    """A BaseException of a task's own, outside the Exception tree."""


@task(cpu_bound=True, retry=RetryPolicy(max_attempts=2, wait=0.0))
def poison(how: str) -> None:
    """Never return: `exit` kills the child with os._exit, else raise the named BaseException."""
    if how == "exit":
        os._exit(5)
    raise {"system_exit": SystemExit(4), "interrupt": KeyboardInterrupt(), "own": Poison("x")}[how]


@task(cpu_bound=True)
def chatty(ctx: TaskRun) -> int:
    """Logs through ctx.logger and its module's logger in the pool child."""
    ctx.logger.info("in the child [pid %d]", os.getpid())
    _log.debug("a debug record the worker's level drops")
    _log.warning("module logger in the child")
    return os.getpid()
