"""Start real `taskloom worker` processes for integration tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# this tree's package before any installed copy, and the tests package
PYTHONPATH = os.pathsep.join((str(ROOT / "src"), str(ROOT)))


def spawn_worker(app: str, env: dict[str, str], concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A worker process serving `app` (module:callable) with the given environment.

    Its stderr goes to a temporary file (`worker_errors(proc)` reads it): a pipe nobody reads
    fills up during a long outage and blocks the worker in its next log line.
    """
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskloom", "worker", "--app", app,
         "--concurrency", str(concurrency), "--grace", "5", "--log-level", "WARNING"],
        env={**env, "PYTHONPATH": PYTHONPATH}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    proc.error_log = log  # type: ignore[attr-defined]
    return proc


def worker_errors(proc: subprocess.Popen[bytes]) -> str:
    """What a worker from `spawn_worker` wrote to stderr so far."""
    log = proc.error_log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read().decode(errors="replace"))


async def wait_workers(manager: Any, count: int, timeout: float = 60.0) -> None:
    """Until `count` workers beat into the manager's store (each has installed its signal
    handlers and is claiming), so a test's runs reach all of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(await manager.store.workers(manager.clock())) < count:
        if loop.time() > deadline:
            raise TimeoutError(f"fewer than {count} workers after {timeout}s")
        await asyncio.sleep(0.05)
