"""One run's life above the store: built, submitted, run here, finished.

Every path that makes or ends a run comes through `RunLifecycle`: `queue`/`enqueue`/
`queue_many`, scheduler ticks, pipeline launches, workflow children, DAG nodes, `execute()`
and the consumer's acks. So validation, ids and lineage are made one way, `before_queue` runs
for every run before its first write, and no caller above the store writes a run record itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import CancelledRunError, LeaseLostError
from .executors.base import RunEnv
from .lease_keeper import LeaseKeeper
from .options import checked_delay, checked_priority
from .outcome import StoreOutcomes
from .run import TaskPriority, TaskRun, TaskState, made_run, utcnow
from .runner import AttemptEnv, Stop, attempt, decide, run_env
from .store.base import Lease, RunQuery, dt
from .turn_batch import TurnBatch

if TYPE_CHECKING:
    from .manager import TaskManager
    from .task import Task


# What a caller may pass to `build` as it is, besides None: anything else goes through
# pydantic, which converts it (an ISO string to a datetime) or names the problem.
_PLAIN: dict[str, type] = {
    "task": str, "priority": TaskPriority, "state": TaskState, "execute_after": datetime,
    "queue": str, "dedup_key": str, "from_run_id": str, "id": str, "parent_id": str,
    "root_run_id": str, "worker": str,
}  # fmt: skip


def _run_of(fields: dict[str, Any]) -> TaskRun:
    """The run record of `fields`, validated only where a caller's value may need it."""
    for name, kind in _PLAIN.items():
        value = fields.get(name)
        if value is not None and type(value) is not kind:
            return TaskRun(**fields)
    if not all(type(tag) is str for tag in fields["tags"]) or type(fields["params"]) is not dict:
        return TaskRun(**fields)
    return made_run(fields)


#: Final records of runs that ended in one turn, per store write (see `_write_ended`).
ENDED_CHUNK = 256


class _Answer:
    """One store read that many callers wait for (`RunLifecycle.children_fresh`)."""

    __slots__ = ("error", "ready", "task", "value")

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.value = False
        self.error: Exception | None = None
        self.task: asyncio.Future[None] | None = None  # held so the read is not collected


class RunLifecycle:
    """Builds, submits, runs here and finishes the runs of one manager (`manager.lifecycle`)."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self._env: AttemptEnv | None = None
        # the children a parent starts in one loop turn share one store write
        self._children: TurnBatch[TaskRun, TaskRun] = TurnBatch(self._write_children)
        # and the final records of the runs that end in one turn (gathered children) share one
        self._ended: TurnBatch[TaskRun, None] = TurnBatch(self._write_ended)

    @property
    def env(self) -> AttemptEnv:
        """What `runner.attempt` gets from this manager: no more than that."""
        m = self.manager
        if self._env is None or self._env.store is not m.store:
            self._env = AttemptEnv(
                clock=m.clock, store=m.store, hooks=m.hooks, executor_for=m.executor_for,
                slot_seconds=m.lease_seconds, outcomes=StoreOutcomes(m.store, m.store.url, m.clock),
                dumps=m.serde_dumps, loads=m.serde_loads, secrets=m.secret_box,
            )  # fmt: skip
        return self._env

    def run_env(self, run: TaskRun) -> RunEnv:
        """What an executor gets for an attempt of `run` (for callers that hand one on)."""
        return run_env(self.env, run)

    async def attempt(self, task: Task, run: TaskRun, stop: Stop | None = None) -> TaskRun:
        """One attempt of a running run (see `runner.attempt`)."""
        return await attempt(self.env, task, run, stop)

    # -- building -------------------------------------------------------------------------------
    def build(
        self,
        task: str | Task,
        params: Mapping[str, Any],
        *,
        priority: TaskPriority | str | None = None,
        queue: str | None = None,
        dedup_key: str | None = None,
        delay: float | timedelta | None = None,
        execute_after: datetime | None = None,
        tags: Sequence[str] | None = None,
        parent: TaskRun | None = None,
        run_id: str | None = None,
        from_run_id: str | None = None,
    ) -> TaskRun:
        """Validate params and build a queued run record (nothing is written)."""
        t = self.manager.get_task(task)
        secret = t.interface.secret_fields
        box = self.manager.secret_box
        if secret:  # a retried or stored run brings its secret inputs sealed
            params = box.open_params(params, secret, task=t.name)
        model, stored = t.validate_params(params)
        if secret:
            stored = box.seal_params(stored, model, secret)
        now = self.manager.clock()
        delay = checked_delay(t.name, delay)
        if delay:
            execute_after = dt(now + delay)
        fields: dict[str, Any] = {
            "task": t.name,
            "priority": checked_priority(t.name, priority or t.priority),
            "params": stored,
            "state": TaskState.queued,
            "queued": dt(now),
            "execute_after": execute_after,
            "queue": queue or t.queue,
            "dedup_key": dedup_key,
            "tags": list(tags if tags is not None else t.tags),
            "from_run_id": from_run_id,
        }
        if run_id:
            fields["id"] = run_id
        if parent is not None:
            fields["parent_id"] = parent.id
            fields["root_run_id"] = parent.root_run_id
        return _run_of(fields)

    def build_many(
        self, task: str | Task, params: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[TaskRun]:
        """`build` for many runs of one task with the same options (`queue_many`): options
        checked once, params validated in one pydantic call, each run its own id and time."""
        t = self.manager.get_task(task)
        items = list(params)
        if len(items) < 2 or t.interface.secret_fields or options.get("run_id"):
            return [self.build(t, p, **options) for p in items]
        stored = t.validate_many(items)
        first = self.build(t, items[0], **options)  # the options, checked and converted
        delay = checked_delay(t.name, options.get("delay"))
        clock, after = self.manager.clock, first.execute_after
        runs = [first]
        for values in stored[1:]:
            now = clock()
            fields: dict[str, Any] = {
                "task": first.task, "priority": first.priority, "params": values,
                "state": TaskState.queued, "queued": dt(now),
                "execute_after": dt(now + delay) if delay else after, "queue": first.queue,
                "dedup_key": first.dedup_key, "tags": list(first.tags),
                "from_run_id": first.from_run_id,
            }  # fmt: skip
            if first.parent_id is not None:
                fields["parent_id"], fields["root_run_id"] = first.parent_id, first.root_run_id
            runs.append(made_run(fields))
        return runs

    def build_here(
        self,
        task: Task,
        params: dict[str, Any],
        *,
        parent: TaskRun | None,
        worker: str | None,
        run_id: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> TaskRun:
        """A run record of `task` (validated `params`) that starts here now, as `running`."""
        now = dt(self.manager.clock())
        fields: dict[str, Any] = {
            "task": task.name, "priority": task.priority, "params": params,
            "state": TaskState.running, "queued": now, "start": now, "queue": task.queue,
            "tags": list(tags if tags is not None else task.tags), "worker": worker,
        }  # fmt: skip
        if run_id:
            fields["id"] = run_id
        if parent is not None:
            fields["parent_id"], fields["root_run_id"] = parent.id, parent.root_run_id
        return _run_of(fields)

    # -- submitting -----------------------------------------------------------------------------
    async def submit(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        """Write built runs (queued, or running for runs that start here) in one round trip.

        `before_queue` sees every run first (it may still change it, e.g. a trace context);
        `on_queued` follows for each run put on the queue. A run whose id or pending
        `dedup_key` exists already comes back as the stored run instead.
        """
        store = await self.manager._ready()
        hooks = self.manager.hooks
        if hooks.hooks:
            for run in runs:
                await hooks.before_queue(run)
        stored = await store.enqueue(runs)
        if hooks.hooks:
            for sent, got in zip(runs, stored, strict=True):
                if got is sent and got.state is TaskState.queued:
                    await hooks.on_queued(got)
        return stored

    async def submit_child(self, run: TaskRun) -> TaskRun:
        """`submit([run])` for a workflow child: the children started in one event-loop turn
        (a parent's `asyncio.gather`) are written in one store call. Hooks run in the caller,
        as in `submit`; the stored run comes back in place of one whose id exists."""
        await self.manager._ready()
        hooks = self.manager.hooks
        if hooks.hooks:
            await hooks.before_queue(run)
        stored = await self._children.add(run)
        if hooks.hooks and stored is run and stored.state is TaskState.queued:
            await hooks.on_queued(stored)
        return stored

    async def children_fresh(self, parent: TaskRun) -> bool:
        """True if no child of `parent` was in the store when its first child started.

        Asked once per parent execution (one indexed read that every child of a gather
        shares). Only a first attempt asks: a retried or reclaimed parent finds each earlier
        child by id. A parent id run again from scratch finds its children here and replays
        them through the enqueue's answer, as before.
        """
        live = parent._ctx()
        gate: _Answer | None = live.fresh_children
        if gate is None:
            gate = live.fresh_children = _Answer()
            gate.task = asyncio.ensure_future(self._no_children(parent.id, gate))
        if not gate.ready.is_set():
            # an Event, not the task itself: a cancelled child must not cancel its siblings' read
            await gate.ready.wait()
        if gate.error is not None:
            raise gate.error
        return gate.value

    async def _no_children(self, parent_id: str, gate: _Answer) -> None:
        try:
            page = await self.manager.store.query(RunQuery(parent_id=parent_id, limit=1))
            gate.value = not page
        except Exception as exc:  # every child waiting on it raises the read's error
            gate.error = exc
        finally:
            gate.ready.set()

    async def start_child(self, run: TaskRun) -> asyncio.Future[TaskRun]:
        """Record a child of a fresh parent (`children_fresh`) at the end of this turn, without
        waiting: its body runs meanwhile. `run_inline(..., started=)` takes the future back:
        a child that ended before its record was sent is written once, finished."""
        await self.manager._ready()
        hooks = self.manager.hooks
        if hooks.hooks:
            await hooks.before_queue(run)
        return self._children.put(run)

    async def _settle_start(self, started: asyncio.Future[TaskRun]) -> None:
        """The start record of a child is withdrawn if unsent, else written: before any later
        write of that child, so the later one lands last. A failed write raises here."""
        if not self._children.withdraw(started):
            await started

    async def _write_children(self, runs: list[TaskRun]) -> list[TaskRun]:
        return await self.manager.store.enqueue(runs)

    async def _write_ended(self, runs: list[TaskRun]) -> list[None]:
        # each caller waits on its add() until this is written: no run changes meanwhile
        store = self.manager.store
        if len(runs) <= ENDED_CHUNK or not store.parallel_writes:
            await store.save_many(runs)
        else:
            # a fan-out's thousands of records in several writes at once: each encodes its
            # part and sends it, so the server works on one part while the next is encoded
            parts = (runs[i : i + ENDED_CHUNK] for i in range(0, len(runs), ENDED_CHUNK))
            await asyncio.gather(*(store.save_many(part) for part in parts))
        return [None] * len(runs)

    async def reopen(self, prior: TaskRun, *, on_queue: bool, worker: str | None) -> TaskRun:
        """A finished (or stranded) run of an earlier attempt, reset to run again."""
        prior.state = TaskState.queued if on_queue else TaskState.running
        prior.worker = None if on_queue else worker
        prior.retry_attempt, prior.rate_limit_attempt = 0, 0
        prior.error, prior.result, prior.end, prior.execute_after = None, None, None, None
        prior.cache_hit = False
        await self.manager.store.save(prior)
        return prior

    # -- running here ---------------------------------------------------------------------------
    async def execute(self, run: TaskRun) -> TaskRun:
        """Execute a built run here until it is done (retries wait here), recording it.

        The run is held under a lease while it executes, as a worker holds a claimed run:
        heartbeats save its progress, `cancel` aborts it, and if this process dies a worker
        reclaims it. Cancelling the caller records it `aborted` and re-raises.
        """
        manager = self.manager
        t = manager.get_task(run.task)
        store = await manager._ready()
        run.state, run.worker = TaskState.running, f"local-{os.getpid()}"
        run.start = run.start or utcnow()
        if manager.hooks.hooks:
            await manager.hooks.before_queue(run)
        run._manager = manager
        lease = await store.save_leased(run, manager.lease_seconds, manager.clock())
        keeper = LeaseKeeper(store, lease, run, manager.lease_seconds, manager.clock)
        keeper.start()
        try:
            run = await self._attempts_here(t, run, keeper)
            [held] = await store.finish([(keeper.lease, run)])
        finally:
            await keeper.close()
        if not held:
            raise LeaseLostError(f"run {run.id}: lease lost before its end was written")
        return run

    async def _attempts_here(self, task: Task, run: TaskRun, keeper: LeaseKeeper) -> TaskRun:
        """Attempts of a leased run until one is final; the record stays `running` between."""
        manager = self.manager
        while True:
            stop = Stop()
            step = asyncio.create_task(self.attempt(task, run, stop))
            keeper.guard(step, stop)
            try:
                run = await step
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if keeper.lost and (current is None or current.cancelling() == 0):
                    raise LeaseLostError(
                        f"run {run.id}: lease lost while executing here; a worker owns it now"
                    ) from None
                reason = str(exc.args[0]) if exc.args else "cancelled with its caller"
                run = decide(task, run, CancelledRunError(reason), manager.clock())
                with contextlib.suppress(Exception):
                    await manager.store.finish([(keeper.lease, run)])
                raise
            if run.state is not TaskState.queued:
                return run
            wait = run.execute_after.timestamp() - manager.clock() if run.execute_after else 0.0
            run.state, run.execute_after = TaskState.running, None
            async with keeper.lock:  # the failed attempt is recorded, the lease renewed
                keeper.lease = await manager.store.save_leased(
                    run, manager.lease_seconds, manager.clock()
                )
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(keeper.cancel_requested.wait(), wait)
            if keeper.cancel_requested.is_set():
                return decide(task, run, CancelledRunError("cancelled by request"), manager.clock())

    async def start_here(self, task: Task, run: TaskRun) -> TaskRun:
        """Submit a run built with `build_here` and execute it here until it is done."""
        await self.submit([run])
        return await self.run_inline(task, run)

    async def run_inline(
        self, task: Task, run: TaskRun, started: asyncio.Future[TaskRun] | None = None
    ) -> TaskRun:
        """Execute a recorded run of `task` here until it is done and save its final record.

        Attempts go through `runner.attempt` (executors, cache, retry policy); waits between
        retries happen here. Between attempts the record stays `running`, so no worker claims
        it. Cancelling the caller records the run `aborted` (with the cancel message) and
        re-raises. `started`: the pending start record of `start_child`, settled before the
        run's next write.
        """
        manager = self.manager
        store = manager.store
        while True:
            run._manager = manager
            try:
                run = await attempt(self.env, task, run)
            except asyncio.CancelledError as exc:
                reason = str(exc.args[0]) if exc.args else "cancelled with its caller"
                run = decide(task, run, CancelledRunError(reason), manager.clock())
                if started is not None:
                    await self._settle_start(started)
                await store.save(run)
                raise
            if started is not None:
                await self._settle_start(started)
                started = None
            if run.state is not TaskState.queued:
                await self._ended.put(run)  # the future itself: no coroutine per waiting child
                return run
            wait = run.execute_after.timestamp() - manager.clock() if run.execute_after else 0.0
            run.state, run.execute_after = TaskState.running, None
            await store.save(run)
            if wait > 0:
                await asyncio.sleep(wait)

    # -- finishing ------------------------------------------------------------------------------
    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        """Write leased runs' new records, fenced by their leases (False: the lease was lost)."""
        return await self.manager.store.finish(items)
