"""Two worker processes on one server store share the load, never run a run twice at once,
and honour max_concurrency together."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from tests.apps.multi_app import limited
from tests.apps.workers import spawn_worker, wait_workers
from tests.conftest import store_url

ROOT = Path(__file__).resolve().parents[2]
RUNS = 120


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return spawn_worker("tests.apps.multi_app:make", env, concurrency=4)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "redis-cluster", "redis-shards", "postgres"])
async def test_two_workers_share_and_limit(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    log = tmp_path / "multi.log"
    env = {**os.environ, "TASKLOOM_STORE": url, "MULTI_LOG": str(log), "PYTHONPATH": str(ROOT)}
    async with TaskManager(url, tasks=[limited], poll_interval=0.1) as m:
        try:
            workers = [_worker(env), _worker(env)]
            await wait_workers(m, 2)  # both serve before the runs exist, so both take part
            runs = await m.queue_many("limited", [{"i": i} for i in range(RUNS)])
            try:
                finished = [await m.wait(r.id, timeout=120) for r in runs]
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)
                codes = [w.wait(timeout=30) for w in workers]
            assert codes == [0, 0]
        finally:
            drop = getattr(m.store, "drop", None)
            if drop is not None:
                await drop()
    assert all(r.state is TaskState.success for r in finished)
    events = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(e[1]) for e in events if e[0] == "start")
    assert sorted(starts) == list(range(RUNS)) and set(starts.values()) == {1}
    assert len({e[2] for e in events}) == 2, "both workers took runs"
    # replay the start/end events in time order: never more than two inside at once
    inside = peak = 0
    for kind_, _i, _pid, _t in sorted(events, key=lambda e: (float(e[3]), e[0] == "start")):
        inside += 1 if kind_ == "start" else -1
        peak = max(peak, inside)
    assert peak <= 2
