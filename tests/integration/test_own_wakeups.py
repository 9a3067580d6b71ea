"""A store wakes the consumers of its own process once per enqueue: the echo of that wake-up
from the server (pub/sub, NOTIFY) is skipped, while another store's enqueue still wakes them."""

from __future__ import annotations

import asyncio
import os

import pytest

from taskloom.run import TaskRun, TaskState
from taskloom.store import open_store
from taskloom.store.base import Store, dt
from tests.conftest import PERSISTENT_KINDS, store_url

T0 = 1_800_000_000.0


def _queued() -> TaskRun:
    return TaskRun(task="t", state=TaskState.queued, queued=dt(T0))


@pytest.mark.parametrize("kind", PERSISTENT_KINDS)
async def test_an_enqueue_wakes_its_own_process_once(kind: str, tmp_path: os.PathLike[str]) -> None:
    url = store_url(kind, tmp_path)
    here: Store = open_store(url)
    other: Store = open_store(url)
    await here.connect()
    await other.connect()
    wakes: list[str] = []
    barrier = TaskRun(task="t", state=TaskState.success, queued=dt(T0), end=dt(T0 + 1))
    try:
        with here.notifier.watch("queue") as woke, here.notifier.watch(f"run:{barrier.id}") as seen:
            set_event = woke.set

            def counting() -> None:
                wakes.append("queue")
                set_event()

            woke.set = counting  # type: ignore[method-assign]
            await here.notifier.settle()
            await here.enqueue([_queued()])
            assert wakes == ["queue"]  # the enqueue's own, at once
            # a run event sent after the echo of that enqueue reaches this listener after it
            await other.save(barrier)
            await asyncio.wait_for(seen.wait(), 10)
            assert wakes == ["queue"]  # the echo was skipped
            woke.clear()
            await other.enqueue([_queued()])
            await asyncio.wait_for(woke.wait(), 10)  # another store's enqueue does wake
        assert wakes == ["queue", "queue"]
    finally:
        await here.drop()  # type: ignore[attr-defined]
        await here.close()
        await other.close()
