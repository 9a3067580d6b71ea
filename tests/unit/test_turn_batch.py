"""Children a parent starts in one event-loop turn are written to the store together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskloom import Task, TaskManager, task
from taskloom.run import TaskRun
from taskloom.turn_batch import TurnBatch


async def test_one_turn_of_adds_is_one_write_and_each_caller_gets_its_answer() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        await asyncio.sleep(0)
        return [i * 10 for i in items]

    batch: TurnBatch[int, int] = TurnBatch(write)
    assert await asyncio.gather(*(batch.add(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await batch.add(7) == 70
    assert writes == [[0, 1, 2, 3, 4], [7]]


async def test_a_failed_write_fails_every_caller_of_that_batch() -> None:
    async def write(items: list[int]) -> list[int]:
        raise RuntimeError(f"store down for {items}")

    batch: TurnBatch[int, int] = TurnBatch(write)
    results = await asyncio.gather(batch.add(1), batch.add(2), return_exceptions=True)
    assert [str(r) for r in results] == ["store down for [1, 2]"] * 2


@task
async def leaf(i: int) -> int:
    return i * 2


@task
async def parent(n: int) -> int:
    return sum(await asyncio.gather(*(leaf.aio(i) for i in range(n))))


async def test_gathered_children_are_recorded_in_one_store_write() -> None:
    async with TaskManager("memory://", tasks=[leaf, parent]) as manager:
        store = manager.store
        enqueue, save_many = store.enqueue, store.save_many
        writes: list[tuple[str, int]] = []

        async def counting_enqueue(runs: Sequence[TaskRun]) -> list[TaskRun]:
            writes.append(("enqueue", len(runs)))
            return await enqueue(runs)

        async def counting_save_many(runs: Sequence[TaskRun]) -> None:
            writes.append(("save_many", len(runs)))
            await save_many(runs)

        store.enqueue = counting_enqueue  # type: ignore[method-assign]
        store.save_many = counting_save_many  # type: ignore[method-assign]
        run = await manager.execute("parent", n=20)
        assert run.result == sum(i * 2 for i in range(20))
        # the 20 children ended in the turn they started: one write of their final records
        assert writes == [("save_many", 20)]
        children = await manager.runs(parent_id=run.id, limit=100)
        assert [c.state.value for c in children] == ["success"] * 20


def slow_child(release: asyncio.Event) -> tuple[Task[..., int], Task[..., int]]:
    """A child that waits for `release`, and a parent that calls it once."""

    @task
    async def slow() -> int:
        await release.wait()
        return 1

    @task
    async def holder() -> int:
        return int(await slow.aio())

    return slow, holder


async def test_a_child_still_running_at_the_end_of_its_turn_is_recorded_running() -> None:
    release = asyncio.Event()
    async with TaskManager("memory://", tasks=slow_child(release)) as manager:
        original, written = manager.store.enqueue, asyncio.Event()

        async def enqueue(runs: Sequence[TaskRun]) -> list[TaskRun]:
            stored = await original(runs)
            written.set()
            return stored

        manager.store.enqueue = enqueue  # type: ignore[method-assign]
        outer = asyncio.ensure_future(manager.execute("holder"))
        await written.wait()  # the start record, written while the child waits
        [running] = await manager.runs(task="slow")
        assert running.state.value == "running"
        release.set()
        assert (await outer).result == 1
        [child] = await manager.runs(task="slow")
        assert child.state.value == "success"


async def test_a_failed_start_write_reaches_the_parent() -> None:
    release = asyncio.Event()
    async with TaskManager("memory://", tasks=slow_child(release)) as manager:

        async def down(runs: Sequence[TaskRun]) -> list[TaskRun]:
            release.set()
            raise ConnectionError("store down")

        manager.store.enqueue = down  # type: ignore[method-assign]
        run = await manager.execute("holder")
    assert run.state.value == "failure" and run.error is not None
    assert "store down" in run.error["message"]


@pytest.mark.parametrize("n", [1, 3])
async def test_replayed_children_come_back_from_the_batch(n: int) -> None:
    async with TaskManager("memory://", tasks=[leaf, parent]) as manager:
        first = await manager.execute("parent", n=n)
        again = await manager.lifecycle.submit_child(
            (await manager.runs(parent_id=first.id, limit=10))[0].model_copy()
        )
        assert again.state.value == "success"  # the stored child, not a new record
