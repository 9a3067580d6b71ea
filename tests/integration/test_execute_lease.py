"""Runs started by `taskloom run` (`manager.execute()`) hold a lease like a worker's runs:
a worker finishes them when their process dies, and `cancel` stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskRun, TaskState
from tests.apps.execute_app import stall
from tests.apps.workers import PYTHONPATH, ROOT, spawn_worker
from tests.conftest import store_url

APP = "tests.apps.execute_app:make"


def run_here(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`taskloom run stall tag=x` in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskloom", "run", "stall", "tag=x", "--app", APP],
        env={**env, "PYTHONPATH": PYTHONPATH}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def manager(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[TaskManager, dict[str, str]]]:
    url = store_url(request.param, tmp_path)
    env = {**os.environ, "TASKLOOM_STORE": url, "EXEC_LOG": str(tmp_path / "executions.log")}
    async with TaskManager(url, tasks=[stall], poll_interval=0.1) as m:
        try:
            yield m, env
        finally:
            drop = getattr(m.store, "drop", None)
            if drop is not None:
                await drop()


async def running_stall(
    m: TaskManager, proc: subprocess.Popen[bytes], env: dict[str, str]
) -> TaskRun:
    """The run the process executes, once its body has started: the record says `running`
    as soon as it is leased, before the body logs its execution, and a process killed in
    between would leave the stalling first execution to the worker (seen on a loaded
    machine). No event announces either: poll."""
    log = Path(env["EXEC_LOG"])
    async with asyncio.timeout(60):
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            runs = await m.runs(task="stall", state=TaskState.running)
            started = await asyncio.to_thread(log.exists) and str(proc.pid) in (
                await asyncio.to_thread(log.read_text)
            )
            if runs and started:
                return runs[0]
            await asyncio.sleep(0.05)


async def test_a_worker_finishes_the_run_of_a_killed_process(
    manager: tuple[TaskManager, dict[str, str]],
) -> None:
    m, env = manager
    proc = run_here(env)
    try:
        run = await running_stall(m, proc, env)
        assert run.worker == f"local-{proc.pid}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    worker = spawn_worker(APP, env)
    try:
        done = await m.wait(run.id, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.stderr.read() if worker.stderr else ""
    assert done.state is TaskState.success, done.error
    assert done.result == f"x by {worker.pid}"
    assert [a.state for a in done.attempts] == [TaskState.interrupted, TaskState.success]
    assert sum(a.state is TaskState.success for a in done.attempts) == 1
    pids = (await asyncio.to_thread(Path(env["EXEC_LOG"]).read_text)).split()
    assert pids == [str(proc.pid), str(worker.pid)]


async def test_cancel_stops_a_run_executing_in_another_process(
    manager: tuple[TaskManager, dict[str, str]],
) -> None:
    m, env = manager
    proc = run_here(env)
    try:
        run = await running_stall(m, proc, env)
        await m.cancel(run.id)
        done = await m.wait(run.id, timeout=30)
        assert proc.wait(timeout=30) == 1  # the CLI's exit code for an aborted run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert done.state is TaskState.aborted
    assert done.error is not None and "cancel" in done.error["message"]
