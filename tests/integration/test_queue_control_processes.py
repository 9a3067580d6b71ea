"""Queue control across real processes: two workers holding one start-rate limit together,
and a schedule added through the CLI firing once per tick with two schedulers running."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from tests.apps.control_app import capped, report
from tests.apps.workers import PYTHONPATH, spawn_worker
from tests.conftest import store_url

ROOT = Path(__file__).resolve().parents[2]
RUNS = 150
APP = "tests.apps.control_app:make"


def most_in_any_window(times: list[float], width: float = 1.0) -> int:
    """The largest number of `times` inside any half-open window [t, t + width)."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _both_serving(m: TaskManager) -> None:
    for _ in range(300):  # bounded: 30 s
        if len(await m.store.workers(time.time())) >= 2:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the two workers did not start")


async def _drop(m: TaskManager) -> None:
    drop = getattr(m.store, "drop", None)
    if drop is not None:
        await drop()


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
async def test_two_workers_hold_one_rate_limit(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    log = tmp_path / "starts.log"
    env = {**os.environ, "TASKLOOM_STORE": url, "CONTROL_LOG": str(log)}
    async with TaskManager(url, tasks=[capped]) as m:
        try:
            workers = [spawn_worker(APP, env, concurrency=16) for _ in range(2)]
            try:
                await _both_serving(m)  # so that both take part from the first window on
                runs = await m.queue_many("capped", [{"i": i} for i in range(RUNS)])
                done = [await m.wait(r.id, timeout=120) for r in runs]
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)
                codes = [w.wait(timeout=30) for w in workers]
            assert codes == [0, 0]
        finally:
            await _drop(m)
    assert all(r.state is TaskState.success and r.retry_attempt == 0 for r in done)
    recorded = [r.start.timestamp() for r in done if r.start is not None]
    assert len(recorded) == RUNS
    assert most_in_any_window(recorded) <= 50  # the store's guarantee, over every 1 s window
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len({pid for _i, pid, _t in lines}) == 2, "both workers started runs"
    assert sorted(int(i) for i, _pid, _t in lines) == list(range(RUNS))


def _scheduler(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskloom", "scheduler", "--app", APP, "--lock-ttl", "3",
         "--log-level", "WARNING"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskloom", *args, "--app", APP],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
async def test_cli_schedule_fires_once_per_tick_with_two_schedulers(
    kind: str, tmp_path: Path
) -> None:
    url = store_url(kind, tmp_path)
    env = {**os.environ, "TASKLOOM_STORE": url, "PYTHONPATH": PYTHONPATH}
    async with TaskManager(url, tasks=[report]) as m:
        schedulers = [_scheduler(env), _scheduler(env)]
        try:
            added = _cli("schedule", "add", "beat", "report", "--every", "1s", "day=7", env=env)
            assert added.returncode == 0, added.stderr
            with m.store.notifier.watch("queue") as queued:
                while len(await m.runs(task="report")) < 4:
                    queued.clear()
                    try:
                        await asyncio.wait_for(queued.wait(), timeout=1)
                    except TimeoutError:
                        pass
            listed = _cli("schedule", "ls", "--json", env=env)
            assert listed.returncode == 0 and '"stored"' in listed.stdout
            assert _cli("schedule", "rm", "beat", env=env).returncode == 0
            runs = await m.runs(task="report")
        finally:
            for p in schedulers:
                p.send_signal(signal.SIGTERM)
            codes = [p.wait(timeout=30) for p in schedulers]
            await _drop(m)
    assert codes == [0, 0]
    fires = Counter(datetime.fromisoformat((r.dedup_key or "").rsplit("@", 1)[1]) for r in runs)
    assert set(fires.values()) == {1}, f"a tick fired twice: {fires}"
    assert all(r.params == {"day": 7} for r in runs)
    ticks = sorted(fires)
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(ticks))
