"""TaskConsumer: claim due runs in batches, execute each on its executor, ack in batches.

At-least-once: a run is leased, its lease heartbeated, and every write after the claim is
fenced by the lease token, so a run completes exactly once even if a lost worker executed it
too. On stop (or SIGTERM) the consumer stops claiming, waits `grace_seconds`, then records the
remaining runs `interrupted` and requeues them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass, field

from .errors import StoreUnavailableError, UnknownTaskError
from .manager import TaskManager
from .queues import rate_limits
from .retention import RetentionSweeper
from .run import TaskRun, TaskState
from .runner import Stop, unknown_task_record
from .store.base import Beat, Lease, taken_count

log = logging.getLogger("taskloom.consumer")

STORE_RETRY = (0.1, 5.0)  # backoff bounds (seconds) while the store does not answer


@dataclass
class _Active:
    lease: Lease
    stop: Stop
    task: asyncio.Task[None] = field(init=False)


class TaskConsumer:
    """A worker: serves the manager's queues until `stop()` (or `run(burst=True)` runs dry)."""

    def __init__(
        self,
        manager: TaskManager,
        queues: list[str] | None = None,
        max_concurrent_tasks: int = 10,
        lease_seconds: float | None = None,
        *,
        grace_seconds: float = 30.0,
        poll_interval: float | None = None,
        heartbeat_interval: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.manager = manager
        self.queues = list(queues) if queues else None
        self.max_concurrent_tasks = max(1, max_concurrent_tasks)
        self.lease_seconds = lease_seconds or manager.lease_seconds
        self.grace_seconds = grace_seconds
        self.poll_interval = poll_interval or manager.poll_interval
        self.heartbeat_interval = heartbeat_interval or min(self.lease_seconds / 3, 5.0)
        self.worker_id = worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        )
        self.processed = 0
        self.lost_leases = 0
        self._active: dict[str, _Active] = {}
        self._acks: list[tuple[Lease, TaskRun]] = []
        self._ack_wake = asyncio.Event()
        self._acks_idle = asyncio.Event()
        self._acks_idle.set()
        self._wake = asyncio.Event()
        # whether due runs may be left unclaimed (the last claim filled every free slot, or
        # none was free): only then does a finished run wake the loop to claim again
        self._more = True
        self._burst = False
        self._beat_now = asyncio.Event()
        self._cancel_topic = asyncio.Event()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        # set once the loop has drained: the background loops end by it, not by cancel alone
        # (a cancel that lands as a Redis reply arrives can be swallowed inside redis-py)
        self._side_stop = asyncio.Event()
        self._running = False
        self._bg: asyncio.Task[None] | None = None
        self._down_for = 0.0
        self.retention = RetentionSweeper(manager, self.worker_id)
        self._flusher: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, burst: bool = False, handle_signals: bool = False) -> None:
        """Serve until `stop()`; with `burst=True`, return once nothing is due or running.

        If a background task (heartbeats, the ack flusher) dies, the consumer stops claiming,
        drains and raises that task's error.
        """
        store = (await self.manager.connect()).store
        self._running, self._stopping, self._done = True, asyncio.Event(), asyncio.Event()
        self._side_stop = asyncio.Event()
        self._failure = None
        self._more, self._burst = True, burst
        if handle_signals:
            self._install_signals()
        await self._announce()
        side = [
            asyncio.create_task(self._heartbeats(), name=f"taskloom-heartbeats-{self.worker_id}"),
            asyncio.create_task(self._flush_acks(), name=f"taskloom-acks-{self.worker_id}"),
        ]
        self._flusher = side[1]
        for t in side:
            t.add_done_callback(self._supervise)
        if not burst:  # a long-lived worker also purges runs past their retention
            side.append(asyncio.create_task(self.retention.run(self._stopping)))
        try:
            with store.notifier.watch("queue") as queued, store.notifier.watch("cancel") as cxl:
                self._wake, self._cancel_topic = queued, cxl
                while not self._stopping.is_set():
                    self._wake.clear()
                    free = self.max_concurrent_tasks - len(self._active)
                    try:
                        leases = await store.claim(
                            self.worker_id, self.queues, free, self.lease_seconds,
                            self.manager.clock(), rate_limits=rate_limits(self.manager),
                        ) if free > 0 else []  # fmt: skip
                    except StoreUnavailableError:
                        await self._store_down()
                        continue
                    self._down_for = 0.0
                    # a claim that left slots free took every due run: the next are announced
                    # by their enqueue's wake-up, so a finished run need not claim again (on
                    # a trickle that halves the claims, each a store round trip)
                    taken = taken_count(leases)  # unreadable runs are taken, not leased
                    self._more = free == 0 or taken >= free
                    for lease in leases:
                        self._start(lease)
                    self._wake_at(getattr(leases, "retry_at", None))
                    if burst and not leases and not self._active:
                        if not taken and self._acks_idle.is_set():
                            break
                        await self._acks_written()  # a retry may be written back as due
                        continue
                    if free > 0 and taken >= free:
                        continue  # more may be due: claim again once a slot frees
                    # a timer, not wait_for's extra task: this runs once per claim round
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval):
                            await self._wake.wait()
        finally:
            await self._drain()
            self._side_stop.set()
            self._ack_wake.set()
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self._leave()
            self._running = False
            self._done.set()
        if self._failure is not None:
            raise self._failure

    def _supervise(self, side: asyncio.Task[None]) -> None:
        """A background task ended: unless it was stopped on the way out, stop with its error."""
        if side.cancelled() or (self._side_stop.is_set() and side.exception() is None):
            return
        error = side.exception() or RuntimeError(f"{side.get_name()} ended unexpectedly")
        log.error("%s died; stopping the consumer", side.get_name(), exc_info=error)
        if self._failure is None:
            self._failure = error
        self._stopping.set()
        self._wake.set()

    async def _acks_written(self) -> None:
        """Wait until every finished run is written, or until the flusher is gone."""
        flusher = self._flusher
        if self._acks_idle.is_set():
            return
        if flusher is None or flusher.done():
            # let its done callback (`_supervise`) run and stop the loop: a store whose claim
            # never suspends (memory) would otherwise spin on an empty queue here
            await asyncio.sleep(0)
            return
        idle = asyncio.create_task(self._acks_idle.wait())
        try:
            await asyncio.wait([idle, flusher], return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()

    def _wake_at(self, when: float | None) -> None:
        """Claim again at `when` (Unix s) if that comes before the next poll: runs held back
        by a rate limit, or a retry, are due then; the worker sleeps until that moment."""
        if when is None:
            return
        due = when - self.manager.clock()
        if due < self.poll_interval:
            asyncio.get_running_loop().call_later(max(due, 0.0), self._wake.set)

    async def _store_down(self) -> None:
        """The store stopped answering: keep the runs in hand, retry with backoff."""
        self._down_for = min(max(self._down_for * 2, STORE_RETRY[0]), STORE_RETRY[1])
        log.warning("store unavailable; claiming again in %.1fs", self._down_for, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._down_for)

    def _start(self, lease: Lease) -> None:
        run = lease.run
        live = run._ctx()
        live.manager = self.manager
        live.on_progress = self._on_progress
        active = _Active(lease, Stop())
        active.task = asyncio.create_task(self._process(active), name=f"run-{run.id}")
        self._active[run.id] = active

    def _on_progress(self, _run: TaskRun) -> None:
        self._beat_now.set()

    async def _process(self, active: _Active) -> None:
        lease, run = active.lease, active.lease.run
        try:
            try:
                task = self.manager.get_task(run.task)
            except UnknownTaskError:
                new = unknown_task_record(run, self.manager.clock(), list(self.manager.tasks))
            else:
                try:
                    new = await self.manager.lifecycle.attempt(task, run, active.stop)
                except asyncio.CancelledError:
                    self.lost_leases += 1
                    return  # lease lost: another worker owns the run now
            self._acks.append((lease, new))
            self._acks_idle.clear()
            self._ack_wake.set()
            if new.execute_after is not None and new.state is TaskState.queued:
                # a retry we scheduled ourselves: wake when it is due instead of at the next poll
                self._wake_at(new.execute_after.timestamp())
        finally:
            self._active.pop(run.id, None)
            self.processed += 1
            if self._more or (self._burst and not self._active):
                self._wake.set()

    async def _flush_acks(self) -> None:
        """Write finished runs in batches: whatever piled up while the last write ran."""
        lifecycle = self.manager.lifecycle
        while not self._side_stop.is_set() or self._acks:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            while self._acks:
                batch, self._acks = self._acks, []
                try:
                    ok = await lifecycle.finish(batch)
                except Exception:
                    log.exception("finishing %d runs failed; retrying", len(batch))
                    self._acks[:0] = batch
                    await asyncio.sleep(self.poll_interval)
                    continue
                for (lease, _), held in zip(batch, ok, strict=True):
                    if not held:
                        self.lost_leases += 1
                        log.warning("run %s: lease lost before finish; not written", lease.run.id)
            self._acks_idle.set()

    async def _heartbeats(self) -> None:
        """Extend leases, save progress, learn of cancels, reclaim crashed workers' runs."""
        store = self.manager.store
        while not self._side_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._next_beat(), self.heartbeat_interval)
            if self._side_stop.is_set():
                return
            self._beat_now.clear()
            try:
                await self._beat_once()
                await store.reclaim(self.manager.clock())
                await self._announce()
            except Exception:
                log.exception("heartbeat failed; will retry")

    async def _announce(self) -> None:
        """Tell the store this worker is alive (dashboards, /health, liveness probes)."""
        info = {"pid": os.getpid(), "active": len(self._active), "queues": self.queues}
        await self.manager.store.worker_beat(
            self.worker_id, info, self.lease_seconds, self.manager.clock()
        )

    async def _leave(self) -> None:
        """A clean exit: take this worker off the live list at once, not when its beat expires."""
        try:
            await self.manager.store.worker_leave(self.worker_id)
        except Exception:
            log.warning("could not remove worker %s from the store", self.worker_id, exc_info=True)

    async def _next_beat(self) -> None:
        beat = asyncio.create_task(self._beat_now.wait())
        cancel = asyncio.create_task(self._cancel_topic.wait())
        stop = asyncio.create_task(self._side_stop.wait())
        try:
            await asyncio.wait([beat, cancel, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            beat.cancel()
            cancel.cancel()
            stop.cancel()
            self._cancel_topic.clear()

    async def _beat_once(self) -> None:
        actives = list(self._active.values())
        if not actives:
            return
        beats = [Beat(a.lease, a.lease.run.progress, a.lease.run.progress_note) for a in actives]
        replies = await self.manager.store.heartbeat(
            beats, self.lease_seconds, self.manager.clock()
        )
        for active, reply in zip(actives, replies, strict=True):
            if active.task.done():
                continue
            if not reply.alive:
                active.stop.reason = "lease_lost"
                active.task.cancel()
            elif reply.cancel_requested and active.stop.reason is None:
                active.stop.reason = "abort"
                active.lease.run.cancelled.set()
                active.task.cancel()

    # -- stopping ---------------------------------------------------------------------------------
    async def _drain(self) -> None:
        if self._active:
            pending = [a.task for a in self._active.values()]
            _done, late = await asyncio.wait(pending, timeout=self.grace_seconds)
            for active in list(self._active.values()):
                if not active.task.done():
                    active.stop.reason = "drain"
                    active.lease.run.cancelled.set()
                    active.task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        self._ack_wake.set()
        await self._acks_written()
        if self._acks:
            # the flusher died: these runs keep their leases until they expire and are reclaimed
            log.error("%d finished runs not written; other workers will run them again",
                      len(self._acks))  # fmt: skip

    async def stop(self) -> None:
        """Stop claiming, drain (up to `grace_seconds`), and return once the loop has ended."""
        self._stopping.set()
        self._wake.set()
        if self._running:
            await self._done.wait()
        if self._bg is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._bg

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._signal_stop)

    def _signal_stop(self) -> None:
        if self._stopping.is_set():
            self.interrupt()
            return
        log.info(
            "signal received: draining (grace %.0fs); signal again to stop at once",
            self.grace_seconds,
        )
        self._stopping.set()
        self._wake.set()

    def interrupt(self) -> None:
        """Cold shutdown: stop claiming and interrupt every run now; each is requeued."""
        log.warning("stopping at once: interrupting %d run(s), requeued", len(self._active))
        self._stopping.set()
        self._wake.set()
        for active in list(self._active.values()):
            if not active.task.done() and active.stop.reason is None:
                # no ctx.cancelled: a task that saw it could return and end as a success
                active.stop.reason = "drain"
                active.task.cancel()

    async def __aenter__(self) -> TaskConsumer:
        self._bg = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # let run() take its first step
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def active(self) -> int:
        """Runs executing now."""
        return len(self._active)
