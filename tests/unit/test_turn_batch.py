"""Children a parent starts in one event-loop turn are written to the store together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskloom import TaskManager, task
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
        original = store.enqueue
        sizes: list[int] = []

        async def counting(runs: Sequence[TaskRun]) -> list[TaskRun]:
            sizes.append(len(runs))
            return await original(runs)

        store.enqueue = counting  # type: ignore[method-assign]
        run = await manager.execute("parent", n=20)
        assert run.result == sum(i * 2 for i in range(20))
        assert sizes == [20]  # execute() saves the parent; the 20 children: one enqueue
        children = await manager.runs(parent_id=run.id, limit=100)
        assert len(children) == 20


@pytest.mark.parametrize("n", [1, 3])
async def test_replayed_children_come_back_from_the_batch(n: int) -> None:
    async with TaskManager("memory://", tasks=[leaf, parent]) as manager:
        first = await manager.execute("parent", n=n)
        again = await manager.lifecycle.submit_child(
            (await manager.runs(parent_id=first.id, limit=10))[0].model_copy()
        )
        assert again.state.value == "success"  # the stored child, not a new record
