"""Cancelling a run that another process executes reaches it through the store's events."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from tests.apps.cancel_app import sleepy
from tests.apps.workers import spawn_worker
from tests.conftest import store_url


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_cancel_reaches_another_process(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    env = {**os.environ, "TASKLOOM_STORE": url}
    async with TaskManager(url, tasks=[sleepy]) as m:
        worker = spawn_worker("tests.apps.cancel_app:make", env)
        try:
            run = await m.queue("sleepy")
            # a claim sends no event (stores only announce finished work): poll for it
            async with asyncio.timeout(60):
                while (await m.get_run(run.id)).state is not TaskState.running:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            asked = loop.time()
            await m.cancel(run.id)
            done = await m.wait(run.id, timeout=30)
            took = loop.time() - asked
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            drop = getattr(m.store, "drop", None)
            if drop is not None:
                await drop()
    assert done.state is TaskState.aborted
    # the worker's heartbeat interval is 60 s here: only the cancel event can be this quick
    assert took < 30
