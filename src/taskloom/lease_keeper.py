"""The lease of a run executing outside a consumer (`manager.execute()`, `taskloom run`).

Such a run is written `running` under a lease, like a claimed one, and `LeaseKeeper`
heartbeats it while this process works on it: progress reaches the store, a cancel request
stops the attempt (the run ends `aborted`), and if this process dies the lease expires and a
worker's reclaim puts the run back on the queue (at least once, as for any run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .run import TaskRun
from .runner import Stop, StopReason
from .store.base import Beat, Lease, Store

log = logging.getLogger("taskloom.lease_keeper")


class LeaseKeeper:
    """Heartbeats one leased run until `close()`; interrupts its attempt on cancel or loss."""

    def __init__(
        self, store: Store, lease: Lease, run: TaskRun, lease_seconds: float,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.store = store
        self.lease = lease
        self.run = run
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.interval = min(lease_seconds / 3, 5.0)
        self.lost = False
        self.cancel_requested = asyncio.Event()
        self.lock = asyncio.Lock()  # a heartbeat never races a re-lease between attempts
        self._beat_now = asyncio.Event()
        self._attempt: tuple[asyncio.Task[TaskRun], Stop] | None = None
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin heartbeating; progress reported by the run beats at once."""
        self.run._on_progress = lambda _run: self._beat_now.set()
        self._loop = asyncio.create_task(self._beats(), name=f"taskloom-lease-{self.run.id}")

    async def close(self) -> None:
        """Stop heartbeating (the lease itself is released by `finish`)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def guard(self, attempt: asyncio.Task[TaskRun], stop: Stop) -> None:
        """The attempt to interrupt if the run is cancelled or the lease is lost."""
        self._attempt = (attempt, stop)
        if self.cancel_requested.is_set():
            self._interrupt("abort")

    async def _beats(self) -> None:
        with self.store.notifier.watch("cancel") as cancel_topic:
            while True:
                beat = asyncio.create_task(self._beat_now.wait())
                cancel = asyncio.create_task(cancel_topic.wait())
                try:
                    await asyncio.wait([beat, cancel], timeout=self.interval,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                finally:
                    beat.cancel()
                    cancel.cancel()
                self._beat_now.clear()
                cancel_topic.clear()
                try:
                    async with self.lock:
                        beat_of = Beat(self.lease, self.run.progress, self.run.progress_note)
                        [reply] = await self.store.heartbeat(
                            [beat_of], self.lease_seconds, self.clock()
                        )
                except Exception:
                    log.warning("run %s: heartbeat failed; will retry", self.run.id, exc_info=True)
                    continue
                if not reply.alive:
                    log.warning("run %s: lease lost; another worker owns it now", self.run.id)
                    self.lost = True
                    self._interrupt("lease_lost")
                    return
                if reply.cancel_requested and not self.cancel_requested.is_set():
                    self.cancel_requested.set()
                    self.run.cancelled.set()
                    self._interrupt("abort")

    def _interrupt(self, reason: StopReason) -> None:
        if self._attempt is None:
            return
        task, stop = self._attempt
        if not task.done() and stop.reason is None:
            stop.reason = reason
            task.cancel()
