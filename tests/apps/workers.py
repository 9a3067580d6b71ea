"""Start real `taskloom worker` processes for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# this tree's package before any installed copy, and the tests package
PYTHONPATH = os.pathsep.join((str(ROOT / "src"), str(ROOT)))


def spawn_worker(app: str, env: dict[str, str], concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A worker process serving `app` (module:callable) with the given environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskloom", "worker", "--app", app,
         "--concurrency", str(concurrency), "--grace", "5", "--log-level", "WARNING"],
        env={**env, "PYTHONPATH": PYTHONPATH}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
