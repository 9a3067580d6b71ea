"""Runs examples/workflow_dag.py as a user would and checks what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflow_dag.py"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_workflow_dag_example_runs(store: str, tmp_path: Path) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/example.db"
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), url],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "crawl: success after 2 attempts -> 16.0" in out
    assert "fetch children: 4, attempts each: [1, 1, 1, 1]" in out  # replay: no fetch ran twice
    assert "second crawl: score cache hit = True" in out
    assert "dag: stats = {'count': 10.0, 'mean': 9.0}" in out
    assert "dag lifecycle: initialize load, cleanup load" in out
    assert out.count("fetch success") == 4
