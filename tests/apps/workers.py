"""Start real `taskloom worker` processes for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# this tree's package before any installed copy, and the tests package
PYTHONPATH = os.pathsep.join((str(ROOT / "src"), str(ROOT)))


def spawn_worker(app: str, env: dict[str, str], concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A worker process serving `app` (module:callable) with the given environment.

    Its log goes to an unnamed temporary file, never to a pipe: nobody reads a pipe while
    the test runs, and a worker logging a line per attempt would fill it (64 KiB) and block.
    """
    log = tempfile.TemporaryFile()
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "taskloom", "worker", "--app", app,
             "--concurrency", str(concurrency), "--grace", "5", "--log-level", "WARNING"],
            env={**env, "PYTHONPATH": PYTHONPATH}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    finally:
        log.close()  # the worker holds its own descriptor
