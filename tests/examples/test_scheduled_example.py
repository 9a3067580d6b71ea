"""The scheduling example runs as a script: two schedulers, one handover, each tick once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scheduled.py"


def test_example_hands_over_and_queues_each_tick_once() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert re.search(r"nightly_report\s+\d{4}-\d\d-\d\d (00|01):30:00 UTC", out)  # 02:30 Rome
    leaders = re.findall(r"leader: scheduler-a=(\w+) scheduler-b=(\w+)", out)
    assert leaders == [("True", "False"), ("False", "True")]
    assert "scheduler-a stopped; lock released" in out
    beats = re.findall(r"heartbeat@(\S+)\s+success", out)
    assert len(beats) >= 4 and len(set(beats)) == len(beats)
    assert re.search(r"sync:eu@\S+\s+success\s+synced eu", out)
    assert re.search(r"sync:us@\S+\s+success\s+synced us", out)
    assert "each tick queued once: True" in out
