"""A small app for CLI tests: `--app tests.apps.cli_app:make` (store from TASKLOOM_STORE)."""

from __future__ import annotations

import logging
import os

from taskloom import RetryPolicy, TaskManager, TaskRun, task

log = logging.getLogger(__name__)


@task
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


@task
async def fails(why: str = "boom") -> None:
    """Always fails."""
    raise ValueError(why)


@task
async def aborts(ctx: TaskRun) -> None:
    """Aborts itself."""
    ctx.abort("stop here")


@task(retry=RetryPolicy(max_attempts=2, wait=0.05))
async def flaky(ctx: TaskRun) -> str:
    """Fails its first attempt [then succeeds]; logs each attempt."""
    ctx.logger.info("attempt %d of [flaky]", ctx.retry_attempt + 1)
    if ctx.retry_attempt == 0:
        log.warning("first attempt: failing on purpose")
        raise ConnectionError("flaky backend")
    return "ok"


def make() -> TaskManager:
    """Build the manager on the store named by TASKLOOM_STORE."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[add, fails, aborts, flaky])


def fixed_url() -> TaskManager:
    """A manager whose store URL is written in code (the CLI's --store overrides it)."""
    return TaskManager(os.environ["TASKLOOM_FIXED_URL"], tasks=[add])
