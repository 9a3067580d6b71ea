"""The store seam: small protocols every backend implements, plus the in-process notifier.

Mechanism only. Retry decisions, backoff and state policy live in `manager.py` and
`consumer.py`; a store only records, claims, fences and notifies. Every time is a float of
Unix seconds passed in as `now`, so a fake clock drives every backend the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..ratelimit import RateLimit
from ..run import TaskPriority, TaskRun, TaskState

ACTIVE_STATES = (TaskState.init, TaskState.queued, TaskState.running)


def ts(moment: datetime | None) -> float | None:
    """Unix seconds of an aware datetime (None stays None)."""
    return None if moment is None else moment.timestamp()


def dt(seconds: float | None) -> datetime | None:
    """An aware UTC datetime from Unix seconds (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(slots=True)
class Lease:
    """A worker's claim on one running run; `token` fences every later write."""

    run: TaskRun
    token: str
    expires: float


class Claimed(list[Lease]):
    """The leases of one claim; `retry_at` is when to claim again for runs it held back
    (rate limits), None when it held none back. `taken` counts the runs it took, leased or
    not: a run whose record could not be read is taken, and failed, without a lease."""

    retry_at: float | None = None
    taken: int | None = None  # None: len(self)


def taken_count(leases: Sequence[Lease]) -> int:
    """How many runs a claim took (`Claimed.taken`, else one per lease)."""
    taken = getattr(leases, "taken", None)
    return len(leases) if taken is None else int(taken)


@dataclass(frozen=True)
class QueueSettings:
    """What is stored about one queue: paused, and its start-rate limit."""

    paused: bool = False
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class QueueStats:
    """One queue's queued runs: counts by priority and the oldest `queued` time."""

    name: str
    depth: dict[TaskPriority, int]
    oldest_queued: float | None


@dataclass(frozen=True, slots=True)
class RunCount:
    """How many runs of `task` in `queue` are in `state` at `priority` (a maintained counter)."""

    task: str
    queue: str
    state: TaskState
    priority: TaskPriority
    n: int


def queued_by_priority(counts: Sequence[RunCount], queue: str | None) -> dict[TaskPriority, int]:
    """Queued runs by priority, from maintained counts (of one queue, or all when None)."""
    out = dict.fromkeys(TaskPriority, 0)
    for c in counts:
        if c.state is TaskState.queued and (queue is None or c.queue == queue):
            out[c.priority] += c.n
    return out


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat item: extend this lease, store this progress."""

    lease: Lease
    progress: float | None = None
    progress_note: str | None = None


@dataclass(frozen=True, slots=True)
class BeatReply:
    """Whether the lease is still held, and whether the run was asked to cancel."""

    alive: bool
    cancel_requested: bool = False


@dataclass(frozen=True)
class RunQuery:
    """Filters for listing runs; results come newest first, paged by `cursor` (a run id)."""

    task: str | None = None
    state: TaskState | None = None
    queue: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    tags: tuple[str, ...] = ()
    parent_id: str | None = None
    root_run_id: str | None = None
    cursor: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as seen through its heartbeats."""

    worker: str
    last_seen: float
    info: dict[str, Any] = field(default_factory=dict)


def matches(run: TaskRun, q: RunQuery) -> bool:
    """True if `run` passes the filters of `q` (used by stores that filter in Python)."""
    if q.task is not None and run.task != q.task:
        return False
    if q.state is not None and run.state != q.state:
        return False
    if q.queue is not None and run.queue != q.queue:
        return False
    if q.parent_id is not None and run.parent_id != q.parent_id:
        return False
    if q.root_run_id is not None and run.root_run_id != q.root_run_id:
        return False
    if q.cursor is not None and run.id >= q.cursor:
        return False
    created = run.queued or run.start
    if q.since is not None and (created is None or created < q.since):
        return False
    if q.before is not None and (created is None or created >= q.before):
        return False
    return all(tag in run.tags for tag in q.tags)


class Notifier:
    """Topic wake-ups inside one event loop: `queue` (work may be due) and `run:<id>`.

    Backends publish here on local changes; server backends also republish what their
    listener (pub/sub, LISTEN/NOTIFY) receives from other processes.
    """

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        # a server store subscribes to a topic's channel while someone here watches it
        self.on_watch: Callable[[str], None] | None = None
        self.on_unwatch: Callable[[str], None] | None = None
        self.on_settle: Callable[[], Awaitable[None]] | None = None

    def publish(self, topic: str) -> None:
        """Wake everybody watching `topic`."""
        for event in self._watchers.get(topic, ()):
            event.set()

    def publish_run(self, run_id: str) -> None:
        """Wake watchers of one run."""
        self.publish(f"run:{run_id}")

    @contextmanager
    def watch(self, topic: str) -> Iterator[asyncio.Event]:
        """An event set on every publish to `topic` while the block runs (clear it yourself)."""
        event = asyncio.Event()
        watchers = self._watchers.get(topic)
        if watchers is None:
            watchers = self._watchers[topic] = set()
            if self.on_watch is not None:
                self.on_watch(topic)
        watchers.add(event)
        try:
            yield event
        finally:
            watchers.discard(event)
            if not watchers and self._watchers.get(topic) is watchers:
                del self._watchers[topic]
                if self.on_unwatch is not None:
                    self.on_unwatch(topic)

    async def settle(self) -> None:
        """Return once the watches made so far would see remote events (a server store
        confirms its subscriptions here; in-process notifiers are always settled)."""
        if self.on_settle is not None:
            await self.on_settle()

    @property
    def topics(self) -> list[str]:
        """Topics someone is watching (server backends subscribe to these)."""
        return list(self._watchers)


class QueueStore(Protocol):
    """Runs on the queue: enqueue, claim with a lease, heartbeat, fenced finish, reclaim."""

    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        """Insert runs in the state they carry (queued, or running for inline child runs).
        Inserted runs are returned as the very objects passed in; a run whose id exists, or
        whose `dedup_key` matches an active (init/queued/running) run, is not inserted and the
        stored run is returned in its place, so `returned is run` tells an insert. Publishes
        `queue`."""
        ...

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
        """Take up to `limit` due queued runs (execute_after <= now), by priority then FIFO
        (execute_after or queued time, then id); mark them running, set `worker`, `start` (first
        time only), and a fresh lease token expiring at now + lease_seconds.

        Runs of paused queues are skipped. A run whose task (a key of `rate_limits`) or queue
        (stored settings) has a full start window stays queued with `execute_after` set to when
        a slot frees (`free_at`); the result is a `Claimed` whose `retry_at` says when."""
        ...

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        """Extend leases (and slots the runs hold) and save progress, each only if the lease
        is still held; reply whether it was and whether a cancel was requested."""
        ...

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        """Write each run's new record if its lease is still held (fenced), releasing the
        lease. A new state of `queued` puts it back on the queue. False where the lease was
        lost: nothing is written. Publishes `run:<id>` (and `queue` for requeued runs)."""
        ...

    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        """Insert or replace `run` (state running, its `worker` set) unconditionally under a
        fresh lease expiring at now + lease_seconds: a run executed outside the queue, which
        heartbeat, finish, cancel and reclaim then treat like a claimed one. Publishes
        `run:<id>`."""
        ...

    async def reclaim(self, now: float) -> list[TaskRun]:
        """Requeue every running run whose lease expired before `now`, appending an
        `interrupted` attempt to its history; return the requeued runs."""
        ...


class RecordStore(Protocol):
    """Run records: direct writes, reads, queries, cancel requests, purge."""

    async def save(self, run: TaskRun) -> None:
        """Insert or replace a run record unconditionally (runs executed outside the queue)."""
        ...

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        """`save` for each run (distinct ids), in one round trip and one transaction."""
        ...

    async def get(self, run_id: str) -> TaskRun | None:
        """One run, or None."""
        ...

    async def query(self, q: RunQuery) -> list[TaskRun]:
        """Runs matching `q`, newest (highest id) first."""
        ...

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        """Queued runs by priority (all queues when `queue` is None)."""
        ...

    async def counts(self) -> list[RunCount]:
        """Every non-zero run count by task, queue, state and priority. Exact, and read from
        counters kept with each change, so the cost does not grow with the runs stored."""
        ...

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        """A queued/init run becomes `aborted` at once; a running one gets
        `cancel_requested`. Returns the updated run, None if unknown."""
        ...

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete up to `limit` finished runs that ended before `before` (only of `task`, not
        of `skip_tasks`, only in `state`, when given). A deleted root run takes its finished
        descendants with it, whatever their age; every deleted run takes its `runlog:<id>`
        key/value entry. Queued and running runs are never deleted. Return how many runs
        were deleted, descendants included."""
        ...


class CoordinationStore(Protocol):
    """Concurrency slots, leader locks, key/value entries (cache, flags), worker beats."""

    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        """Take one of `limit` slots of `name` for `holder` (idempotent per holder); slots of
        which the holder stopped beating expire after `ttl`."""
        ...

    async def release_slot(self, name: str, holder: str) -> None:
        """Give the slot back."""
        ...

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew a lock that expires after `ttl` unless renewed."""
        ...

    async def release_lock(self, name: str, holder: str) -> None:
        """Release the lock if `holder` has it."""
        ...

    async def kv_get(self, key: str, now: float) -> bytes | None:
        """A stored value that has not expired."""
        ...

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Store a value, expiring after `ttl` seconds if given."""
        ...

    async def kv_delete(self, key: str) -> None:
        """Forget a value."""
        ...

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        """Record that a worker is alive."""
        ...

    async def workers(self, now: float) -> list[WorkerInfo]:
        """Workers whose last beat has not expired."""
        ...

    async def worker_leave(self, worker: str) -> None:
        """Forget a worker that stopped cleanly (it is no longer live)."""
        ...


class ControlStore(Protocol):
    """Operator controls: queue settings (pause, rate limit) and schedules added at run time."""

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (claims skip paused queues); a resume publishes `queue`."""
        ...

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        """Cap the starts of a queue's runs per window (None removes the cap)."""
        ...

    async def queue_settings(self) -> dict[str, QueueSettings]:
        """Every queue with stored settings."""
        ...

    async def queue_stats(self) -> list[QueueStats]:
        """Every queue holding queued runs: depth by priority and the oldest queued time."""
        ...

    async def put_schedule(self, name: str, data: bytes) -> None:
        """Store (or replace) a schedule definition and publish `schedules`."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Forget a stored schedule; False if there was none. Publishes `schedules`."""
        ...

    async def stored_schedules(self) -> dict[str, bytes]:
        """Every stored schedule definition by name."""
        ...


class Store(QueueStore, RecordStore, CoordinationStore, ControlStore, Protocol):
    """Everything a backend provides; one class implements all of it."""

    url: str
    notifier: Notifier
    #: True if writes issued together run side by side (a pipelined connection, a pool):
    #: a large batch then goes in parts, one encoded while the server stores another.
    parallel_writes: bool

    async def connect(self) -> None:
        """Open connections, create or check the schema."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the backend answers."""
        ...
