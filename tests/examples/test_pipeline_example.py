"""examples/pipeline.py runs end to end, and a second run relaunches nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.py"


def run_example(workdir: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_pipeline_example(tmp_path: Path) -> None:
    first = run_example(tmp_path)
    assert "9 launched, 9 succeeded, 0 failed" in first
    assert "fruit: apple:3 banana:2 cherry:1" in first
    assert "pets: dog:4 cat:3 fish:1" in first
    assert (tmp_path / "reports" / "weather.txt").read_text() == "weather: rain:3 sun:2 cloud:1\n"
    second = run_example(tmp_path)  # runs are durable in SQLite: every job ran exactly once
    assert "0 launched, 0 succeeded, 0 failed" in second
    assert "weather: rain:3 sun:2 cloud:1" in second
