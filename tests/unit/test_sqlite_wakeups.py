"""Two processes' worth of stores on one SQLite file wake each other without polling."""

from __future__ import annotations

import asyncio
from pathlib import Path

from taskloom.run import TaskRun, TaskState
from taskloom.store.sqlite import SQLiteStore
from taskloom.store.wakeups import PeerNotifier, wake_folder


async def test_a_write_through_one_store_wakes_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = SQLiteStore(url), SQLiteStore(url)  # stand-ins for two processes
    await a.connect()
    await b.connect()
    try:
        assert isinstance(b.notifier, PeerNotifier)
        with b.notifier.watch("queue") as woke:
            await a.enqueue([TaskRun(task="t", state=TaskState.queued)])
            await asyncio.wait_for(woke.wait(), 5)
        run = TaskRun(task="t", state=TaskState.queued)
        with a.notifier.watch(f"run:{run.id}") as changed:
            await b.save(run)
            await asyncio.wait_for(changed.wait(), 5)
    finally:
        await a.close()
        await b.close()
    assert not wake_folder(f"{tmp_path}/shared.db").exists()  # sockets and folder removed


async def test_a_dead_peer_socket_is_cleaned_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    folder = wake_folder(f"{tmp_path}/x.db")
    store = SQLiteStore(url)
    await store.connect()
    try:
        stale = folder / "999999-dead"
        stale.touch()  # a socket file left by a killed process (not bound by anyone)
        assert isinstance(store.notifier, PeerNotifier)
        await store.enqueue([TaskRun(task="t", state=TaskState.queued)])
        await asyncio.sleep(0)  # the send happens at the end of this loop turn
        assert not stale.exists()
    finally:
        await store.close()
