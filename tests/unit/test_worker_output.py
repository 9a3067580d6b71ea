"""`taskloom worker` as a process: banner, one line per attempt (text or JSON), environment
variables for its options, cold shutdown on a second signal, leaving the live list on exit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskRun, TaskState
from taskloom.logs import TextFormatter, setup_logging
from taskloom.run import Attempt
from taskloom.worker_report import WorkerReport, redact_url
from tests.apps.cancel_app import sleepy
from tests.apps.cli_app import add, fails, flaky

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])


def worker_env(url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TASKLOOM_STORE": url, "PYTHONPATH": PYTHONPATH, **extra}
    env.pop("TASKLOOM_DEBUG", None)
    return env


def burst(url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskloom", "worker", "--app", "tests.apps.cli_app:make",
         "--burst", *args],
        env=worker_env(url, **extra), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_banner_and_one_line_per_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    async with TaskManager(url, tasks=[add, fails, flaky]) as m:
        ok = await m.queue("add", a=1)
        bad = await m.queue("fails", why="wanted list[int]")
        retried = await m.queue("flaky")
    out = burst(url, "--concurrency", "1")
    assert out.returncode == 0, out.stderr
    log = out.stderr
    assert "worker " in log and " ready" in log
    assert f"store:       {url}" in log and "queues:      all" in log
    assert "concurrency: 1" in log and "tasks:       add, fails, aborts, flaky" in log
    assert f"[run {ok.id[:12]}] success add in " in log
    assert f"[run {bad.id[:12]}] failure fails in " in log
    assert "ValueError: wanted list[int]" in log and "raise ValueError(why)" in log
    assert f"[run {retried.id[:12]}] retry flaky in " in log
    assert "ConnectionError: flaky backend; queued again in" in log
    # the task's own records carry the run id too
    assert f"taskloom.task.flaky [run {retried.id[:12]}] attempt 1 of [flaky]" in log


async def test_json_lines_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    async with TaskManager(url, tasks=[add, fails, flaky]) as m:
        ok = await m.queue("add", a=1)
        bad = await m.queue("fails")
    out = burst(url, TASKLOOM_WORKER_LOG_FORMAT="json", TASKLOOM_WORKER_CONCURRENCY="3")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    banner = next(rec for rec in lines if rec.get("event") == "worker_ready")
    assert banner["concurrency"] == 3 and banner["store"] == url
    done = {rec["run_id"]: rec for rec in lines if rec.get("event") == "run_finished"}
    assert done[ok.id]["state"] == "success" and done[ok.id]["task"] == "add"
    assert done[bad.id]["state"] == "failure" and done[bad.id]["level"] == "ERROR"
    assert "ValueError: boom" in done[bad.id]["error"]
    assert "Traceback" in done[bad.id]["traceback"]


def test_store_urls_are_printed_without_passwords() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redact_url("sqlite:///tmp/a.db") == "sqlite:///tmp/a.db"


def test_one_format_for_every_process(capsys: object) -> None:
    handler = setup_logging("info", "text")
    try:
        assert isinstance(handler.formatter, TextFormatter)
        assert [h.get_name() for h in logging.getLogger().handlers].count("taskloom") == 1
        setup_logging("INFO", "json")
        assert [h.get_name() for h in logging.getLogger().handlers].count("taskloom") == 1
    finally:
        for h in [h for h in logging.getLogger().handlers if h.get_name() == "taskloom"]:
            logging.getLogger().removeHandler(h)


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> None:
    """Read the process's stderr until a line contains `needle`."""
    assert proc.stderr is not None
    while needle not in (line := proc.stderr.readline()):
        assert line, f"the process ended before logging {needle!r}"


async def test_second_signal_stops_at_once_and_requeues(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cold.db"
    async with TaskManager(url, tasks=[sleepy]) as m:
        worker = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "taskloom", "worker", "--app", "tests.apps.cancel_app:make"],
            env=worker_env(url, TASKLOOM_WORKER_GRACE="300"), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            run = await m.queue("sleepy")
            async with asyncio.timeout(60):
                while (await m.get_run(run.id)).state is not TaskState.running:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert [w.info["pid"] for w in await m.store.workers(m.clock())] == [worker.pid]
            worker.send_signal(signal.SIGINT)
            await asyncio.wait_for(asyncio.to_thread(wait_for_line, worker, "signal again"), 30)
            worker.send_signal(signal.SIGINT)
            # well inside the 300 s grace: only a cold shutdown ends it this soon
            code = await asyncio.to_thread(worker.wait, 60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert code == 0
        after = await m.get_run(run.id)
        assert after.state is TaskState.queued
        assert after.attempts[-1].state is TaskState.interrupted
        assert after.retry_attempt == 0
        # a clean exit takes the worker off the live list at once (its lease is 180 s)
        assert await m.store.workers(m.clock()) == []


async def test_rate_limit_waits_are_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Waiting out a limit counts no attempt and can repeat hundreds of times: not a warning."""
    start = datetime(2027, 1, 1, tzinfo=UTC)
    run = TaskRun(task="limited", state=TaskState.queued, execute_after=start)
    run.attempts.append(Attempt(attempt=0, state=TaskState.rate_limited, start=start, end=start))
    run.error = {"type": "RateLimitError", "message": "max_concurrency=2 reached"}
    caplog.set_level(logging.DEBUG, logger="taskloom.worker")
    await WorkerReport().after_run(run, None)
    [record] = caplog.records
    assert record.levelno == logging.DEBUG and "rate_limited limited" in record.getMessage()
