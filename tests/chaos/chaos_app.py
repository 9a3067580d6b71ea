"""The app the chaos workers serve (`tests.chaos.chaos_app:make`, store from TASKLOOM_STORE)."""

from __future__ import annotations

import asyncio
import os

from taskloom import TaskManager, TaskRun, task
from taskloom.executors.process import ProcessExecutor


class Poison(BaseException):
    """A BaseException of the task's own."""


POISONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "Poison": Poison,
}


def _log(run_id: str) -> None:
    with open(os.environ["CHAOS_LOG"], "a") as log:
        log.write(f"{run_id}\n")


@task
async def work(ctx: TaskRun, i: int, pause: float = 0.02) -> int:
    """Log the execution, take `pause` seconds (so kills and cuts land mid-run), return i."""
    _log(ctx.id)
    if os.environ.get("CHAOS_HOLD"):  # this process is about to be killed: never finish here
        await asyncio.sleep(3600)
    await asyncio.sleep(pause)
    return i


@task
async def poison(kind: str) -> None:
    """Raise the named BaseException in the worker's event loop."""
    raise POISONS[kind]("poisoned")


@task
def sync_poison(kind: str) -> None:
    """Raise the named BaseException on a worker thread."""
    raise POISONS[kind]("poisoned")


@task(cpu_bound=True)
def exits(code: int) -> None:
    """End the pool child without a Python exception."""
    os._exit(code)


TASKS = [work, poison, sync_poison, exits]


def make() -> TaskManager:
    """Short leases, so a dead worker's runs come back within seconds."""
    return TaskManager(
        os.environ["TASKLOOM_STORE"],
        tasks=TASKS,
        lease_seconds=2.0,
        poll_interval=0.2,
        executors={"process": ProcessExecutor(size=1, kill_grace=0.2)},
    )
