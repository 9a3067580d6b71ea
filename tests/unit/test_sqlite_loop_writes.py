"""SQLite producer calls run on the event loop's own connection while the file is free, and
wait on the store's thread (never on the loop) while another connection holds the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from taskloom.run import TaskRun, TaskState
from taskloom.store.base import dt
from taskloom.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0


def _run() -> TaskRun:
    return TaskRun(task="t", state=TaskState.queued, queued=dt(T0))


async def test_enqueue_and_get_skip_the_thread_when_the_file_is_free(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}")
    await store.connect()
    hops = 0
    threaded = store._run

    async def counting(work):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await threaded(work)

    store._run = counting  # type: ignore[method-assign]
    try:
        run = _run()
        assert await store.enqueue([run]) == [run]
        got = await store.get(run.id)
        assert got is not None and got.id == run.id
        assert hops == 0
    finally:
        await store.close()


async def test_a_locked_file_sends_the_write_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.connect()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        run = _run()
        writing = asyncio.ensure_future(store.enqueue([run]))
        beat = 0
        while not writing.done() and beat < 5:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            beat += 1
        assert beat == 5 and not writing.done()
        other.execute("COMMIT")
        assert await writing == [run]
        assert (await store.get(run.id)) is not None
    finally:
        other.close()
        await store.close()
