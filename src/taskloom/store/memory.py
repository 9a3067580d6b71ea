"""The in-memory store: the protocol's meaning in plain Python (tests, eager mode)."""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..ratelimit import RateLimit
from ..run import Attempt, TaskPriority, TaskRun, TaskState
from .base import (
    ACTIVE_STATES,
    Beat,
    BeatReply,
    Claimed,
    Lease,
    Notifier,
    QueueSettings,
    QueueStats,
    RunCount,
    RunQuery,
    WorkerInfo,
    dt,
    matches,
    ts,
)
from .gate import StartGate


def _due_key(run: TaskRun) -> tuple[int, float, str]:
    at = ts(run.execute_after) or ts(run.queued) or 0.0
    return (run.priority.rank, at, run.id)


class MemoryStore:
    """Keeps everything in dicts of this process; copies on the way in and out."""

    parallel_writes = False  # all in this process: nothing to overlap

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.notifier = Notifier()
        self._runs: dict[str, TaskRun] = {}
        # parent id -> its children's ids: a parent's first child asks whether it has any
        self._children: dict[str, set[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # run id -> (token, expires)
        self._dedup: dict[str, str] = {}  # dedup key -> active run id
        self._slots: dict[str, dict[str, float]] = {}  # name -> holder -> expires
        self._locks: dict[str, tuple[str, float]] = {}
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._workers: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._queues: dict[str, QueueSettings] = {}
        self._starts: dict[str, list[float]] = {}  # rate-limit key -> start times
        self._schedules: dict[str, bytes] = {}

    def _put(self, run: TaskRun) -> None:
        """Store `run` (a copy already), keeping the parent index."""
        old = self._runs.get(run.id)
        if old is not None and old.parent_id != run.parent_id:
            self._unlink(old)
        self._runs[run.id] = run
        if run.parent_id is not None:
            self._children.setdefault(run.parent_id, set()).add(run.id)

    def _unlink(self, run: TaskRun) -> None:
        siblings = self._children.get(run.parent_id or "")
        if siblings is not None:
            siblings.discard(run.id)
            if not siblings:
                del self._children[run.parent_id or ""]

    async def connect(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    # -- queue ------------------------------------------------------------------------------
    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        out: list[TaskRun] = []
        for run in runs:
            existing = self._runs.get(run.id)
            if existing is None and run.dedup_key:
                other = self._dedup.get(run.dedup_key)
                if other in self._runs and self._runs[other].state in ACTIVE_STATES:
                    existing = self._runs[other]
            if existing is not None:
                out.append(existing.record())
                continue
            stored = run.record()
            self._put(stored)
            if run.dedup_key:
                self._dedup[run.dedup_key] = run.id
            out.append(run)
        self.notifier.publish("queue")
        return out

    async def claim(
        self,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
        now: float,
        *,
        rate_limits: Mapping[str, RateLimit] | None = None,
    ) -> list[Lease]:
        paused = {q for q, s in self._queues.items() if s.paused}
        due = [
            r for r in self._runs.values()
            if r.state is TaskState.queued
            and (r.execute_after is None or r.execute_after.timestamp() <= now)
            and (queues is None or r.queue in queues) and r.queue not in paused
        ]  # fmt: skip
        due.sort(key=_due_key)
        queue_limits = {q: s.rate_limit for q, s in self._queues.items() if s.rate_limit}
        gate = StartGate(now, rate_limits, queue_limits, self._window)
        leases = Claimed()
        for run in due:
            if len(leases) >= limit:
                break
            if gate.active and (wait := gate.check(run.task, run.queue)) is not None:
                run.execute_after = dt(wait)
                continue
            run.state = TaskState.running
            run.worker = worker
            if run.start is None:
                run.start = dt(now)
            token = secrets.token_hex(8)
            self._leases[run.id] = (token, now + lease_seconds)
            leases.append(Lease(run.record(), token, now + lease_seconds))
        self._starts.update(gate.windows)
        leases.retry_at = gate.retry_at
        return leases

    def _window(self, key: str, since: float) -> list[float]:
        return [s for s in self._starts.get(key, ()) if s > since]

    def _held(self, lease: Lease) -> bool:
        current = self._leases.get(lease.run.id)
        run = self._runs.get(lease.run.id)
        return (
            current is not None and current[0] == lease.token and run is not None
            and run.state is TaskState.running
        )  # fmt: skip

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        replies = []
        for beat in beats:
            if not self._held(beat.lease):
                replies.append(BeatReply(False))
                continue
            run_id = beat.lease.run.id
            self._leases[run_id] = (beat.lease.token, now + lease_seconds)
            beat.lease.expires = now + lease_seconds
            for holders in self._slots.values():
                if run_id in holders:
                    holders[run_id] = now + lease_seconds
            run = self._runs[run_id]
            if beat.progress is not None:
                run.progress = beat.progress
                run.progress_note = beat.progress_note
            replies.append(BeatReply(True, run.cancel_requested))
        return replies

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        results = []
        requeued = False
        for lease, new in items:
            if not self._held(lease):
                results.append(False)
                continue
            del self._leases[new.id]
            stored = new.record()
            stored.cancel_requested = self._runs[new.id].cancel_requested and not new.is_done
            self._put(stored)
            if new.state is TaskState.queued:
                requeued = True
            elif new.is_done and new.dedup_key and self._dedup.get(new.dedup_key) == new.id:
                del self._dedup[new.dedup_key]
            self.notifier.publish_run(new.id)
            results.append(True)
        if requeued:
            self.notifier.publish("queue")
        return results

    async def reclaim(self, now: float) -> list[TaskRun]:
        out = []
        for run_id, (_token, expires) in list(self._leases.items()):
            if expires >= now:
                continue
            del self._leases[run_id]
            run = self._runs[run_id]
            run.attempts.append(
                Attempt(
                    attempt=run.retry_attempt, state=TaskState.interrupted, start=run.start,
                    end=dt(now), worker=run.worker,
                    error={"type": "LeaseExpired", "message": "worker lost its lease"},
                )
            )  # fmt: skip
            run.state = TaskState.queued
            run.worker = None
            out.append(run.record())
            self.notifier.publish_run(run_id)
        if out:
            self.notifier.publish("queue")
        return out

    # -- records ----------------------------------------------------------------------------
    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        await self.save(run)
        token = secrets.token_hex(8)
        self._leases[run.id] = (token, now + lease_seconds)
        return Lease(run.record(), token, now + lease_seconds)

    async def save(self, run: TaskRun) -> None:
        self._put(run.record())
        self._leases.pop(run.id, None)
        if run.dedup_key and run.state in ACTIVE_STATES:
            self._dedup[run.dedup_key] = run.id
        self.notifier.publish_run(run.id)
        if run.state is TaskState.queued:
            self.notifier.publish("queue")

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        for run in runs:
            await self.save(run)

    async def get(self, run_id: str) -> TaskRun | None:
        run = self._runs.get(run_id)
        return None if run is None else run.record()

    async def query(self, q: RunQuery) -> list[TaskRun]:
        pool: Iterable[TaskRun] = self._runs.values()
        if q.parent_id is not None:  # children by the index, not a scan of every run
            pool = [self._runs[i] for i in self._children.get(q.parent_id, ())]
        found = [r for r in pool if matches(r, q)]
        found.sort(key=lambda r: r.id, reverse=True)
        return [r.record() for r in found[: q.limit]]

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        counts = dict.fromkeys(TaskPriority, 0)
        for r in self._runs.values():
            if r.state is TaskState.queued and (queue is None or r.queue == queue):
                counts[r.priority] += 1
        return counts

    async def counts(self) -> list[RunCount]:
        # the reference meaning: a full count (the other stores keep counters that match it)
        tally = Counter((r.task, r.queue, r.state, r.priority) for r in self._runs.values())
        return [RunCount(*key, n) for key, n in tally.items()]

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        if run.state in (TaskState.init, TaskState.queued):
            run.state = TaskState.aborted
            run.end = dt(now)
            run.error = {"type": "CancelledRunError", "message": "cancelled before it ran"}
            if run.dedup_key and self._dedup.get(run.dedup_key) == run.id:
                del self._dedup[run.dedup_key]
        elif run.state is TaskState.running:
            run.cancel_requested = True
        self.notifier.publish_run(run_id)
        return run.record()

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        picked = [
            r for r in self._runs.values()
            if r.is_done and r.end is not None and r.end.timestamp() < before
            and (task is None or r.task == task) and r.task not in skip_tasks
            and (state is None or r.state is state)
        ][:limit]  # fmt: skip
        roots = {r.id for r in picked if r.parent_id is None}
        gone = {r.id for r in picked} | {
            r.id for r in self._runs.values() if r.is_done and r.root_run_id in roots
        }
        for rid in gone:
            run = self._runs.pop(rid)
            self._unlink(run)
            self._kv.pop(f"runlog:{rid}", None)
            if run.dedup_key and self._dedup.get(run.dedup_key) == rid:
                del self._dedup[run.dedup_key]
        return len(gone)

    # -- coordination -----------------------------------------------------------------------
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        holders = self._slots.setdefault(name, {})
        for h, exp in list(holders.items()):
            if exp < now:
                del holders[h]
        if holder in holders or len(holders) < limit:
            holders[holder] = now + ttl
            return True
        return False

    async def release_slot(self, name: str, holder: str) -> None:
        self._slots.get(name, {}).pop(holder, None)

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        current = self._locks.get(name)
        if current is None or current[0] == holder or current[1] < now:
            self._locks[name] = (holder, now + ttl)
            return True
        return False

    async def release_lock(self, name: str, holder: str) -> None:
        if self._locks.get(name, ("", 0.0))[0] == holder:
            del self._locks[name]

    async def kv_get(self, key: str, now: float) -> bytes | None:
        item = self._kv.get(key)
        if item is None or (item[1] is not None and item[1] < now):
            return None
        return item[0]

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        self._kv[key] = (value, None if ttl is None else now + ttl)

    async def kv_delete(self, key: str) -> None:
        self._kv.pop(key, None)

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        self._workers[worker] = (now, now + ttl, dict(info))

    async def worker_leave(self, worker: str) -> None:
        self._workers.pop(worker, None)

    async def workers(self, now: float) -> list[WorkerInfo]:
        return [
            WorkerInfo(w, seen, info)
            for w, (seen, exp, info) in sorted(self._workers.items())
            if exp >= now
        ]

    # -- operator controls ------------------------------------------------------------------
    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        current = self._queues.get(queue, QueueSettings())
        self._queues[queue] = dataclasses.replace(current, paused=paused)
        if not paused:
            self.notifier.publish("queue")

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        current = self._queues.get(queue, QueueSettings())
        self._queues[queue] = dataclasses.replace(current, rate_limit=rate_limit)
        self.notifier.publish("queue")

    async def queue_settings(self) -> dict[str, QueueSettings]:
        return dict(self._queues)

    async def queue_stats(self) -> list[QueueStats]:
        depth: dict[str, dict[TaskPriority, int]] = {}
        oldest: dict[str, float] = {}
        for r in self._runs.values():
            if r.state is TaskState.queued:
                counts = depth.setdefault(r.queue, dict.fromkeys(TaskPriority, 0))
                counts[r.priority] += 1
                at = ts(r.queued)
                if at is not None and (r.queue not in oldest or at < oldest[r.queue]):
                    oldest[r.queue] = at
        return [QueueStats(q, depth[q], oldest.get(q)) for q in sorted(depth)]

    async def put_schedule(self, name: str, data: bytes) -> None:
        self._schedules[name] = data
        self.notifier.publish("schedules")

    async def delete_schedule(self, name: str) -> bool:
        found = self._schedules.pop(name, None) is not None
        self.notifier.publish("schedules")
        return found

    async def stored_schedules(self) -> dict[str, bytes]:
        return dict(self._schedules)
