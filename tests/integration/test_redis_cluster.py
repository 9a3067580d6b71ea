"""Redis Cluster: a master dies mid-run, its replica takes over, and no run is lost.

A private cluster of 3 masters and 3 replicas on loopback (tests/redis_cluster.py). A real
worker process serves a queue while the master that holds the app's hash slot is SIGKILLed.
Replication is asynchronous, so a finish the dead master acknowledged may not have reached
the replica: such a run is reclaimed after its lease and executed again, which at-least-once
allows; it is still recorded as finished exactly once. Runs are queued (and replicated, by
WAIT) before the kill, so none may vanish.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from tests.apps.crash_app import work
from tests.apps.workers import spawn_worker, wait_workers, worker_errors
from tests.conftest import IN_CI
from tests.redis_cluster import RedisCluster, start_cluster

pytest.importorskip("redis")
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    try:
        c = start_cluster(masters=3, replicas=1)
    except FileNotFoundError as exc:
        if IN_CI:
            pytest.fail(f"redis-server needed in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield c
    finally:
        c.stop()


async def test_master_killed_mid_run_loses_no_run(cluster: RedisCluster, tmp_path: Path) -> None:
    url = f"{cluster.url}?prefix=failover:"
    log = tmp_path / "executions.log"
    env = {**os.environ, "TASKLOOM_STORE": url, "CRASH_LOG": str(log), "PYTHONPATH": str(ROOT)}
    async with TaskManager(url, tasks=[work], poll_interval=0.1) as m:
        slot = key_slot(m.store.prefix.encode() + b"route")
        master = cluster.master_of_slot(slot)
        runs = await m.queue_many("work", [{"i": i} for i in range(RUNS)])
        # the queued runs are on the replica too before anything fails
        await asyncio.to_thread(cluster.wait_replicated, master)
        worker = spawn_worker("tests.apps.crash_app:make", env, concurrency=8)
        await wait_workers(m, 1)
        try:
            assert (await m.wait(runs[RUNS // 4].id, timeout=60)).state is TaskState.success
            master.kill()  # mid-run: the worker holds leases on runs of that slot
            await asyncio.to_thread(cluster.wait_failover, slot, master)  # a replica is promoted
            finished = [await m.wait(r.id, timeout=120) for r in runs]
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        assert code == 0, worker_errors(worker)
        # read back after the failover: what the new master holds is what counts
        stored = [await m.get_run(r.id) for r in runs]
        await m.store.drop()
    assert all(r.state is TaskState.success for r in finished + stored)
    assert [r.result for r in stored] == list(range(RUNS))
    assert all(sum(a.state is TaskState.success for a in r.attempts) == 1 for r in stored)
    executions = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert set(executions) == set(range(RUNS))
    again = sum(1 for n in executions.values() if n > 1)
    print(f"\nredis cluster failover: runs={RUNS} lost=0 executed-twice={again}")
