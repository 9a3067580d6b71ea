"""An app for the multi-process test: every execution logs its start and end to a file."""

from __future__ import annotations

import asyncio
import os
import time

from taskloom import RetryPolicy, TaskManager, task


def _log(kind: str, i: int) -> None:
    with open(os.environ["MULTI_LOG"], "a") as log:  # one short append per line: atomic
        log.write(f"{kind} {i} {os.getpid()} {time.time():.6f}\n")


@task(max_concurrency=2, rate_limit_retry=RetryPolicy(max_attempts=None, wait=0.02, backoff=1))
async def limited(i: int) -> int:
    """At most two at a time across every worker process."""
    _log("start", i)
    await asyncio.sleep(0.01)  # the work: long enough for overlaps to be possible
    _log("end", i)
    return i


def make() -> TaskManager:
    """Manager on TASKLOOM_STORE."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[limited], poll_interval=0.1)
