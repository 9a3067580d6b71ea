"""The cpu_bound example runs as a script: results from pool children, a killed timeout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu_bound.py"


def test_example_runs_in_pool_children() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "count_primes(limit=10000) = 1229" in out
    assert "in_cpu_process=True, OMP_NUM_THREADS=1" in out
    worker = re.search(r"worker pid (\d+)", out)
    assert worker is not None
    pids = set(re.findall(r"in pid (\d+)", out))
    assert pids and worker.group(1) not in pids
    for limit, primes in ((100_000, 9592), (400_000, 33860)):
        assert f"count_primes(limit={limit}) = {primes}" in out
    assert "too_slow: failure (TaskTimeoutError)" in out
