"""The chaos harness: real worker processes on a real store, faults, and the counts.

Every case ends by settling each run it queued against the state it must reach, within
`DEADLINE` seconds, and counts:

- lost: a run that is gone, or finished in another state than its task decides;
- stuck: a run still queued or running at the deadline;
- completed twice: a run whose history holds more than one finishing attempt;
- reclaimed: runs taken back from a dead worker (an `interrupted` attempt), for information;
- executed twice: runs whose function started more than once (at-least-once allows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from taskloom import CorruptRecordError, RunNotFoundError, TaskManager, TaskRun, TaskState
from tests.apps.workers import PYTHONPATH, spawn_worker
from tests.conftest import postgres_url, redis_url, store_url

from . import chaos_app

APP = "tests.chaos.chaos_app:make"
ROOT = Path(__file__).resolve().parents[2]
KINDS = ["sqlite", "redis", "postgres"]
DEADLINE = 90.0  # seconds for every run of a case to settle
FINISHING = {TaskState.success, TaskState.failure, TaskState.aborted, TaskState.rate_limited}
SQLITE_LOCK_SECONDS = 6.0  # past the store's 5 s busy timeout: claims and finishes fail


@dataclass
class Counts:
    """What one case saw; `assert_clean` demands 0 lost, 0 stuck, 0 completed twice."""

    store: str
    case: str
    runs: int = 0
    faults: int = 0
    lost: int = 0
    stuck: int = 0
    completed_twice: int = 0
    reclaimed: int = 0
    executed_twice: int = 0
    in_flight_at_faults: int = 0

    def line(self) -> str:
        return (
            f"chaos {self.case} [{self.store}]: runs={self.runs} faults={self.faults} "
            f"lost={self.lost} stuck={self.stuck} completed-twice={self.completed_twice} "
            f"reclaimed={self.reclaimed} executed-twice={self.executed_twice} "
            f"running-at-faults={self.in_flight_at_faults}"
        )

    def assert_clean(self) -> None:
        print(f"\n{self.line()}")
        assert (self.lost, self.stuck, self.completed_twice) == (0, 0, 0), self.line()


class Chaos:
    """One case's store, its workers and its faults (`async with`; everything stops at exit)."""

    def __init__(self, kind: str, tmp_path: Path, case: str) -> None:
        self.kind = kind
        self.case = case
        self.tag = f"chaos-{uuid.uuid4().hex[:10]}"
        self.url = store_url(kind, tmp_path)
        name_param = {"redis": "client_name", "postgres": "application_name"}.get(kind)
        # the workers' connections carry the tag, so a cut reaches them and nobody else
        self.worker_url = f"{self.url}&{name_param}={self.tag}" if name_param else self.url
        self.log = tmp_path / f"{self.tag}.log"
        self.log.touch()
        self.env = {**os.environ, "TASKLOOM_STORE": self.worker_url, "CHAOS_LOG": str(self.log)}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.manager = TaskManager(self.url, tasks=chaos_app.TASKS)
        self.faults = 0
        self.in_flight = 0  # runs running when the faults struck

    async def __aenter__(self) -> Chaos:
        await self.manager.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        drop = getattr(self.manager.store, "drop", None)
        if drop is not None:
            await drop()
        await self.manager.close()

    # -- workers ----------------------------------------------------------------------------------
    def spawn(self) -> subprocess.Popen[bytes]:
        proc = spawn_worker(APP, self.env, concurrency=8)
        self.workers.append(proc)
        return proc

    def spawn_caller(self, runs: int) -> subprocess.Popen[bytes]:
        """A process running `runs` runs with execute() that hold until it is killed."""
        env = {**self.env, "CHAOS_HOLD": "1", "PYTHONPATH": PYTHONPATH}
        self.caller_log = tempfile.TemporaryFile()  # never an unread pipe: it could fill
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.execute_here", str(runs)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.caller_log,
        )  # fmt: skip
        self.workers.append(proc)
        return proc

    def caller_errors(self) -> str:
        """What the execute() process wrote to stderr."""
        self.caller_log.seek(0)
        return self.caller_log.read().decode(errors="replace")

    async def note_in_flight(self) -> None:
        """Count the runs running right now (a fault is about to strike)."""
        self.in_flight += len(await self.manager.runs(state=TaskState.running, limit=1000))

    async def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        await self.note_in_flight()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.faults += 1

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.workers if p.poll() is None]

    # -- connection cuts --------------------------------------------------------------------------
    async def cut(self) -> None:
        """Drop every connection the workers hold (SQLite: lock them out past the busy
        timeout, the nearest thing a file has to a cut connection)."""
        self.faults += 1
        await self.note_in_flight()
        if self.kind == "redis":
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(str(redis_url()))
            try:
                for info in await client.client_list():
                    if info.get("name") == self.tag:
                        await client.client_kill_filter(_id=info["id"])
            finally:
                await client.aclose()
        elif self.kind == "postgres":
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(str(postgres_url()))
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    self.tag,
                )
            finally:
                await conn.close()
        else:
            await asyncio.to_thread(self._lock_sqlite, SQLITE_LOCK_SECONDS)

    def _lock_sqlite(self, seconds: float) -> None:
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- the verdict ------------------------------------------------------------------------------
    async def _wait_readable(self, run_id: str, deadline: float) -> TaskRun:
        """`manager.wait`, through the moment a damaged record is still unread: between the
        claim that takes it and the write that fails it, reading it raises. Its next write
        wakes the watch, so this waits on that, never on a guess."""
        loop = asyncio.get_running_loop()
        store = self.manager.store
        while True:
            with store.notifier.watch(f"run:{run_id}") as changed:
                await store.notifier.settle()
                try:
                    return await self.manager.wait(run_id, timeout=max(0.1, deadline - loop.time()))
                except CorruptRecordError:
                    if loop.time() >= deadline:
                        raise TimeoutError(f"run {run_id} still unreadable") from None
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.manager.poll_interval):
                            await changed.wait()

    async def settle(self, expected: dict[str, TaskState]) -> Counts:
        """Wait for every run (one shared deadline) and count what went wrong."""
        counts = Counts(self.kind, self.case, runs=len(expected), faults=self.faults)
        counts.in_flight_at_faults = self.in_flight
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        for run_id, want in expected.items():
            try:
                run = await self._wait_readable(run_id, deadline)
            except TimeoutError:
                counts.stuck += 1
                continue
            except RunNotFoundError:
                counts.lost += 1
                continue
            if run.state is not want:
                counts.lost += 1
            finishing = [a for a in run.attempts if a.state in FINISHING]
            if len(finishing) > 1:
                counts.completed_twice += 1
            if any(a.state is TaskState.interrupted for a in run.attempts):
                counts.reclaimed += 1
        executions = Counter(self.log.read_text().split())
        counts.executed_twice = sum(1 for n in executions.values() if n > 1)
        return counts
