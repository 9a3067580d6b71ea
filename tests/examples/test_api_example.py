"""The API example runs as a real server process: queue a run over HTTP, see it finish."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "api_server.py"
DEADLINE = 30.0


def _lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line)


def _wait_for_port(lines: queue.Queue[str], proc: subprocess.Popen[str]) -> int:
    seen = []
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match[1])
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(seen))


def _finished(client: httpx.Client, run_id: str) -> dict[str, object]:
    """The run once done; the worker runs in the server process, so poll its state over HTTP."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        run: dict[str, object] = client.get(f"/taskloom/api/runs/{run_id}").json()
        if run["state"] not in ("queued", "running"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} not done after {DEADLINE}s")


def test_example_serves_api_dashboard_and_metrics(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TASKLOOM_API_TOKEN"}
    env["TASKLOOM_STORE"] = f"sqlite:///{tmp_path}/example.db"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        port = _wait_for_port(lines, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/").json()["dashboard"] == "/taskloom/"
            assert '<base href="/taskloom/">' in client.get("/taskloom/").text
            names = [t["name"] for t in client.get("/taskloom/api/tasks").json()]
            assert names == ["charge", "crawl", "resize"]

            queued = client.post("/taskloom/api/tasks/crawl/runs", json={"params": {"pages": 3}})
            assert queued.status_code == 201
            done = _finished(client, queued.json()["id"])
            assert done["state"] == "success" and done["result"] == 3 and done["progress"] == 1.0

            failed = client.post("/taskloom/api/tasks/charge/runs", json={"params": {"order": "7"}})
            run = _finished(client, failed.json()["id"])
            assert run["state"] == "failure"
            assert run["error"]["message"] == "card declined for order 7"  # type: ignore[index]

            metrics = client.get("/taskloom/metrics").text
            assert 'taskloom_runs_finished_total{state="success",task="crawl"} 1.0' in metrics
            assert 'taskloom_runs_finished_total{state="failure",task="charge"} 1.0' in metrics
            workers = client.get("/taskloom/api/workers").json()
            assert len(workers) == 1 and workers[0]["info"]["pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
        reader.join(DEADLINE)  # every line read: the pipe reached EOF
    # uvicorn shuts down gracefully (lifespan exit: the worker drains, the manager closes),
    # then re-raises SIGTERM, so the exit status is the signal's
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "Application shutdown complete." in "".join(rest), "".join(rest)
