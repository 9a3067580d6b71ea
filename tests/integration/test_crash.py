"""kill -9 a real worker mid-run: every run finishes, none is lost, none completes twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from tests.apps.crash_app import work
from tests.apps.workers import spawn_worker, worker_errors
from tests.conftest import store_url

ROOT = Path(__file__).resolve().parents[2]
RUNS = 300
CONCURRENCY = 8


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return spawn_worker("tests.apps.crash_app:make", env, concurrency=CONCURRENCY)


@pytest.mark.parametrize("kind", ["sqlite", "redis-cluster", "redis-shards"])
async def test_kill_9_mid_run(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    log = tmp_path / "executions.log"
    env = {**os.environ, "TASKLOOM_STORE": url, "CRASH_LOG": str(log), "PYTHONPATH": str(ROOT)}
    async with TaskManager(url, tasks=[work], poll_interval=0.1) as m:
        runs = await m.queue_many("work", [{"i": i} for i in range(RUNS)])
        victim = _worker({**env, "CRASH_HOLD": str(RUNS // 4)})
        try:
            # the victim is mid-way: some runs done, and every slot holds a run it cannot
            # finish (so the set of running runs stands still until the kill)
            done_some = await m.wait(runs[RUNS // 4 - 1].id, timeout=60)
            assert done_some.state is TaskState.success
            deadline = time.monotonic() + 60
            while len(await m.runs(state=TaskState.running, limit=RUNS)) < CONCURRENCY:
                assert time.monotonic() < deadline, "the victim never filled its slots"
                await asyncio.sleep(0.05)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
        running = await m.runs(state=TaskState.running, limit=RUNS)
        rescuer = _worker(env)
        try:
            finished = [await m.wait(r.id, timeout=60) for r in runs]
        finally:
            rescuer.send_signal(signal.SIGTERM)
            assert rescuer.wait(timeout=30) == 0, worker_errors(rescuer)
            drop = getattr(m.store, "drop", None)
            if drop is not None:
                await drop()
    executions = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert all(r.state is TaskState.success for r in finished)
    assert [r.result for r in finished] == list(range(RUNS))
    # exactly one recorded success per run, however often it executed
    assert all(sum(a.state is TaskState.success for a in r.attempts) == 1 for r in finished)
    reclaimed = [r for r in finished if any(a.state is TaskState.interrupted for a in r.attempts)]
    assert len(reclaimed) == len(running) == CONCURRENCY
    assert set(executions) == set(range(RUNS))
    twice = sum(1 for n in executions.values() if n > 1)
    print(f"\ncrash test ({kind}): runs={RUNS} kills=1 running-at-kill={len(running)} lost=0 "
          f"completed-twice=0 executed-twice={twice}")  # fmt: skip
