"""Calls made in one event-loop turn, written to the store together.

A parent that gathers many children starts them all in the same turn of the loop; writing
each child's record on its own costs one store round trip (and one transaction) per child.
`TurnBatch.add` parks each item until the turn ends, then one write takes them all; every
caller gets its own item's answer, or the write's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class TurnBatch(Generic[Item, Answer]):
    """Batches `add(item)` calls of one loop turn into one `write(items)` call.

    `write` returns one answer per item, in order. Items added while a write is in flight
    form the next batch.
    """

    def __init__(self, write: Callable[[list[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._write = write
        # insertion-ordered: the write takes the items in the order they were added
        self._pending: dict[asyncio.Future[Answer], Item] = {}
        self._writing: set[asyncio.Task[None]] = set()

    async def add(self, item: Item) -> Answer:
        """Queue `item` for the write at the end of this turn and wait for its answer."""
        return await self.put(item)

    def put(self, item: Item) -> asyncio.Future[Answer]:
        """Queue `item` for the write at the end of this turn; its answer comes in the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after every other callback ready in this turn
        self._pending[future] = item
        return future

    def withdraw(self, future: asyncio.Future[Answer]) -> bool:
        """Take the item of `future` (from `put`) out of the batch if it was not sent yet.

        True if it was withdrawn: it will not be written, and `future` is cancelled.
        """
        if future not in self._pending:
            return False
        del self._pending[future]
        future.cancel()
        return True

    def _flush(self) -> None:
        batch, self._pending = list(self._pending.items()), {}
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._writing.add(task)  # keep a reference until it is done
            task.add_done_callback(self._writing.discard)

    async def _send(self, batch: list[tuple[asyncio.Future[Answer], Item]]) -> None:
        try:
            answers = await self._write([item for _, item in batch])
        except Exception as exc:  # every caller sees the write's own error
            for future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for future, _ in batch:
                future.cancel()
            raise
        for (future, _), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
