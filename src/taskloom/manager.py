"""TaskManager: the task registry plus the store; queue, execute, wait, cancel, retry."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import queues, serde, stored_schedules
from .errors import (
    ConfigError,
    RunNotFoundError,
    TaskTimeoutError,
    UnknownTaskError,
)
from .executors.base import Executor
from .hooks import HookSet, RunHooks
from .lifecycle import RunLifecycle
from .queues import QueueInfo
from .ratelimit import RateLimit
from .retention import DEFAULT_RETENTION, finished_state, retention_seconds
from .retention import purge as purge_runs
from .run import TaskPriority, TaskRun, TaskState
from .runlog import RunLogCapture, log_sources, read_run_logs
from .secret_inputs import SecretBox
from .serializers import SerializerName, get_serializer
from .store import RunQuery, Store, WorkerInfo, open_store
from .store.base import RunCount
from .stored_schedules import ScheduleInfo
from .task import Task, TaskFactory, make_task, task_factory

if TYPE_CHECKING:
    from .sync import SyncManager

DEFAULT_URL = "sqlite:///taskloom.db"


def _executor_factories() -> dict[str, Callable[[], Executor]]:
    def inline() -> Executor:
        from .executors.inline import InlineExecutor

        return InlineExecutor()

    def thread() -> Executor:
        from .executors.thread import ThreadExecutor

        return ThreadExecutor()

    def process() -> Executor:
        from .executors.process import ProcessExecutor

        return ProcessExecutor()

    def kubernetes() -> Executor:
        from .executors.kubernetes import KubernetesExecutor

        return KubernetesExecutor()

    def ray() -> Executor:
        from .executors.ray import RayExecutor

        return RayExecutor()

    return {"inline": inline, "thread": thread, "process": process,
            "kubernetes": kubernetes, "ray": ray}  # fmt: skip


class TaskManager:
    """The one entry point: tasks are registered here and every run goes through its store.

    Use it as an async context manager (or call `connect()`/`close()`); operations connect
    lazily too. `clock` returns Unix seconds: tests pass a fake one. `secret_key` (else
    `TASKLOOM_SECRET_KEY`) seals `SecretStr` inputs at rest; `old_secret_keys` still open
    what earlier keys sealed.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        tasks: Iterable[Task] = (),
        hooks: Sequence[RunHooks] = (),
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        default_executor: str | None = None,
        executors: Mapping[str, Executor] | None = None,
        children_on_queue: bool = False,
        retention: timedelta | float | None = DEFAULT_RETENTION,
        serializer: SerializerName = "json",
        secret_key: str | bytes | None = None,
        old_secret_keys: Sequence[str | bytes] = (),
    ) -> None:
        if store is None or isinstance(store, str):
            store = open_store(store or os.environ.get("TASKLOOM_STORE") or DEFAULT_URL)
        self.store: Store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.default_executor = default_executor
        self.children_on_queue = children_on_queue
        retention_seconds(retention)  # refuse a negative one now
        # finished runs older than this are purged by workers; None or 0 keeps them forever
        self.retention = retention
        self.serializer = get_serializer(serializer).name
        self.hooks = HookSet(hooks)
        # seals SecretStr inputs at rest; without a key (here or TASKLOOM_SECRET_KEY) a random
        # one of this manager's, so only this process can run such runs
        self.secret_box = SecretBox(secret_key, old_secret_keys)
        self._run_logs = RunLogCapture(self)
        self.hooks.add(self._run_logs)
        self.lifecycle = RunLifecycle(self)
        self._tasks: dict[str, Task] = {}
        self._reports: RunHooks | None = None  # added with the first task that reports
        self._factories = _executor_factories()
        self._executors: dict[str, Executor] = dict(executors or {})
        self._by_task: dict[Task, Executor] = {}  # the choice is fixed per (immutable) task
        self._connected = False
        self._connect_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncManager | None = None
        for t in tasks:
            self.register_task(t)

    # -- registry -------------------------------------------------------------------------------
    def register_task(self, task: Task) -> Task:
        """Add a task; a second task with the same name replaces the first."""
        if not isinstance(task, Task):
            raise ConfigError(f"register_task needs a Task (use @task), got {task!r}")
        task = self.resolve(task)
        self._tasks[task.name] = task
        if task.report and self._reports is None:
            from .report import ReportHooks

            self._reports = ReportHooks(lambda: self.store, self.clock)
            self.hooks.add(self._reports)
        if self._connected:
            self._run_logs.attach(log_sources([task]))
        return task

    def resolve(self, task: Task) -> Task:
        """`task` as this manager encodes it: with the manager's serializer unless it chose."""
        if task.serializer is None and self.serializer != "json":
            return task.override(serializer=self.serializer)
        return task

    @property
    def task(self) -> TaskFactory:
        """Decorator: define a task and register it here (`@manager.task` or with options)."""
        return task_factory(lambda fn, opts: self.register_task(make_task(fn, **opts)))

    @property
    def tasks(self) -> dict[str, Task]:
        """Registered tasks by name (a copy)."""
        return dict(self._tasks)

    def get_task(self, name: str | Task) -> Task:
        """A registered task; raises UnknownTaskError."""
        if isinstance(name, Task):
            name = name.name
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self._tasks)) from None

    # -- lifecycle ------------------------------------------------------------------------------
    async def connect(self) -> TaskManager:
        """Connect the store (idempotent)."""
        if self._connected:
            return self
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self.store.connect()
                self._run_logs.attach(log_sources(self._tasks.values()))
                self.loop = asyncio.get_running_loop()
                self._connected = True
        return self

    async def close(self) -> None:
        """Stop executors and close the store."""
        self.loop = None
        self._run_logs.detach()
        for ex in self._executors.values():
            await ex.stop()
        self._executors.clear()
        self._by_task.clear()
        if self._connected:
            await self.store.close()
            self._connected = False

    @property
    def connected(self) -> bool:
        """True between `connect()` and `close()`."""
        return self._connected

    async def __aenter__(self) -> TaskManager:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> Store:
        if not self._connected:
            await self.connect()
        return self.store

    # -- executors ------------------------------------------------------------------------------
    def in_cluster(self) -> bool:
        """True inside Kubernetes with the k8s extra installed."""
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (
            importlib.util.find_spec("kubernetes_asyncio") is not None
        )

    def executor_name(self, task: Task) -> str:
        """Which executor runs `task` here."""
        if task.executor:
            return task.executor
        if task.reusable is not None:
            return "process"
        if self.default_executor and not task.cpu_bound:
            return self.default_executor
        return task.executor_name(self.in_cluster())

    async def executor_for(self, task: Task) -> Executor:
        """The (started) executor for `task`."""
        cached = self._by_task.get(task)
        if cached is not None:
            return cached
        name = self.executor_name(task)
        if task.reusable is not None:  # warm processes of its own
            name = f"reusable:{task.name}"
        ex = self._executors.get(name)
        if ex is None and task.reusable is not None:
            from .executors.reusable import ReusableExecutor

            ex = ReusableExecutor(task.reusable)
            await ex.start()
            self._executors[name] = ex
        if ex is None:
            factory = self._factories.get(name)
            if factory is None:
                raise ConfigError(f"no executor named {name!r}")
            ex = factory()
            await ex.start()
            self._executors[name] = ex
        self._by_task[task] = ex
        return ex

    def set_executor(self, name: str, executor: Executor) -> None:
        """Install or replace an executor (tests swap in fakes here)."""
        self._executors[name] = executor
        self._by_task.clear()

    # -- encoding -------------------------------------------------------------------------------
    def serde_dumps(self, data: Any) -> bytes:
        """Encode a JSON-able value."""
        return serde.dumps(data)

    def serde_loads(self, data: bytes) -> Any:
        """Decode what `serde_dumps` made."""
        return serde.loads(data)

    # -- queueing -------------------------------------------------------------------------------
    def new_run(self, task: str | Task, params: Mapping[str, Any], **options: Any) -> TaskRun:
        """Validate params and build a queued run record (nothing is written); `options` are
        those of `RunLifecycle.build` (priority, queue, dedup_key, delay, execute_after, tags,
        parent, run_id, from_run_id)."""
        return self.lifecycle.build(task, params, **options)

    async def enqueue(
        self, task: str | Task, params: Mapping[str, Any] | None = None, **options: Any
    ) -> TaskRun:
        """Queue a run with params given as one mapping (no clash with option names)."""
        run = self.new_run(task, params or {}, **options)
        return await self._enqueue_built(run)

    async def _enqueue_built(self, run: TaskRun) -> TaskRun:
        [stored] = await self.lifecycle.submit([run])
        return stored

    async def queue(
        self,
        task: str | Task,
        *,
        priority: TaskPriority | str | None = None,
        dedup_key: str | None = None,
        queue: str | None = None,
        delay: float | timedelta | None = None,
        execute_after: datetime | None = None,
        **params: Any,
    ) -> TaskRun:
        """Validate params and queue a run; with a pending `dedup_key` the existing run returns."""
        return await self.enqueue(
            task, params, priority=priority, dedup_key=dedup_key, queue=queue, delay=delay,
            execute_after=execute_after,
        )  # fmt: skip

    async def queue_many(
        self, task: str | Task, params: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[TaskRun]:
        """Queue many runs of one task in one store round trip."""
        return await self.lifecycle.submit(self.lifecycle.build_many(task, params, **options))

    # -- running here ---------------------------------------------------------------------------
    async def execute(self, task: str | Task, /, **params: Any) -> TaskRun:
        """Run the task now, in this process, record it, and return the finished run."""
        t = self.get_task(task)
        run = self.new_run(t, params)
        if t.interface.secret_fields:
            run._inputs = t.interface.call_kwargs(t.prepare((), params))
        return await self.execute_run(run)

    async def execute_run(self, run: TaskRun) -> TaskRun:
        """Execute a built run here until it is done (retries wait here), recording it."""
        return self.typed(await self.lifecycle.execute(run))

    # -- reading and steering -------------------------------------------------------------------
    async def get_run(self, run_id: str, *, decode: bool = True) -> TaskRun:
        """One run, its result as the declared type (`decode=False`: as stored); raises
        RunNotFoundError."""
        store = await self._ready()
        run = await store.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return self.typed(run) if decode else run

    def typed(self, run: TaskRun) -> TaskRun:
        """`run` with its result rebuilt as the task's declared return type (in place).

        The one place results are decoded; a run of a task this manager does not know keeps
        the stored form.
        """
        task = self._tasks.get(run.task)
        if task is not None and run.state is TaskState.success:
            run.result = task.interface.decode_result(run.result)
        return run

    async def run_logs(self, run_id: str) -> list[dict[str, str]]:
        """What the run logged (`ts`, `level`, `logger`, `message`), oldest first.

        Raises RunNotFoundError for an unknown run.
        """
        await self.get_run(run_id)
        return await read_run_logs(self, run_id)

    async def runs(
        self,
        task: str | None = None,
        state: TaskState | str | None = None,
        queue: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        tags: Sequence[str] | None = None,
        before: datetime | None = None,
        cursor: str | None = None,
        parent_id: str | None = None,
        root_run_id: str | None = None,
    ) -> list[TaskRun]:
        """Runs newest first; page with `cursor` = the last id of the previous page."""
        store = await self._ready()
        q = RunQuery(
            task=task, state=TaskState(state) if state else None, queue=queue, since=since,
            before=before, tags=tuple(tags or ()), cursor=cursor, limit=limit,
            parent_id=parent_id, root_run_id=root_run_id,
        )  # fmt: skip
        return await store.query(q)

    async def wait(self, run_id: str, timeout: float | None = None) -> TaskRun:
        """Wait until the run is done (push wake-ups; `poll_interval` only backs them up)."""
        store = await self._ready()
        with store.notifier.watch(f"run:{run_id}") as changed:
            await store.notifier.settle()
            return await self._wait_watched(run_id, changed, timeout)

    async def _wait_watched(
        self,
        run_id: str,
        changed: asyncio.Event,
        timeout: float | None,
        known: TaskRun | None = None,
    ) -> TaskRun:
        """Wait for `run_id` to finish; `known` is its record as just written (not read again)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            run, known = known or await self.get_run(run_id), None
            if run.is_done:
                return run
            step = self.poll_interval
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TaskTimeoutError(
                        f"run {run_id} not done after {timeout}s (state {run.state})"
                    )
                step = min(step, remaining)
            # a timer, not wait_for's extra task: the wake-up is on every waiter's critical path
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step):
                    await changed.wait()
            changed.clear()

    async def queue_and_wait(
        self, task: str | Task, *, timeout: float | None = None, **params: Any
    ) -> TaskRun:
        """Queue a run and wait for it to finish (subscribed before it is queued)."""
        run = self.new_run(task, params)
        store = await self._ready()
        with store.notifier.watch(f"run:{run.id}") as changed:
            # the subscription settles while the run is written: one round trip, not two (and
            # one task for it, where gather made two)
            settling = asyncio.ensure_future(store.notifier.settle())
            try:
                stored = await self._enqueue_built(run)
            finally:
                await settling
            if stored is run:  # as written, unless a wake-up came meanwhile: not read again
                known = None if changed.is_set() else run
                return await self._wait_watched(run.id, changed, timeout, known)
        return await self.wait(stored.id, timeout)  # a run stored before under that id

    async def purge(
        self,
        older_than: timedelta | float,
        *,
        state: TaskState | str | None = None,
        task: str | None = None,
    ) -> int:
        """Delete finished runs that ended more than `older_than` ago (only `state` / `task`
        if given), with their child runs and run logs; return how many. Queued and running
        runs are never deleted."""
        await self._ready()
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        return await purge_runs(self, self.clock() - age, task=task, state=finished_state(state))

    async def cancel(self, run_id: str) -> TaskRun:
        """Abort a queued run now; ask a running one to stop (it ends `aborted`)."""
        store = await self._ready()
        run = await store.request_cancel(run_id, self.clock())
        if run is None:
            raise RunNotFoundError(run_id)
        store.notifier.publish("cancel")
        return run

    async def retry(self, run_id: str) -> TaskRun:
        """Queue a finished run again as a new run with `from_run_id` set."""
        old = await self.get_run(run_id)
        if not old.is_done:
            raise ConfigError(f"run {run_id} is {old.state}; only finished runs can be retried")
        return await self.enqueue(
            old.task, old.params, priority=old.priority, queue=old.queue, from_run_id=old.id,
            tags=old.tags,
        )  # fmt: skip

    async def queue_length(self, queue: str | None = None) -> dict[TaskPriority, int]:
        """Queued runs by priority."""
        store = await self._ready()
        return await store.queue_length(queue)

    async def counts(self) -> list[RunCount]:
        """Runs the store holds, by task, queue, state and priority: exact, and read from
        counters the store keeps with every change (one small read at any size)."""
        store = await self._ready()
        return await store.counts()

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired."""
        store = await self._ready()
        return await store.workers(self.clock())

    async def ping(self) -> None:
        """Return if the store answers; raise StoreUnavailableError if it does not."""
        store = await self._ready()
        await store.ping()

    # -- schedule switches ----------------------------------------------------------------------
    async def enable(self, name: str) -> None:
        """Switch a task's schedule on (stored: every scheduler sees it)."""
        self.get_task(name)
        store = await self._ready()
        await store.kv_delete(f"schedule-disabled:{name}")

    async def disable(self, name: str) -> None:
        """Switch a task's schedule off (stored: every scheduler sees it)."""
        self.get_task(name)
        store = await self._ready()
        await store.kv_set(f"schedule-disabled:{name}", b"1", None, self.clock())

    async def is_enabled(self, name: str) -> bool:
        """True unless the task's schedule was disabled."""
        store = await self._ready()
        return await store.kv_get(f"schedule-disabled:{name}", self.clock()) is None

    # -- queue control and stored schedules (queues.py, stored_schedules.py) ---------------------
    async def pause(self, queue: str) -> QueueInfo:
        """Stop every worker claiming from `queue`; it still accepts runs, running ones finish."""
        return await queues.set_paused(self, queue, True)

    async def resume(self, queue: str) -> QueueInfo:
        """Let workers claim from `queue` again (they are woken at once)."""
        return await queues.set_paused(self, queue, False)

    async def queues(self) -> list[QueueInfo]:
        """Every known queue with its paused flag, depth by priority and oldest queued age."""
        return await queues.list_queues(self)

    async def set_queue_rate_limit(
        self, queue: str, rate_limit: RateLimit | str | None
    ) -> QueueInfo:
        """Cap the starts of `queue`'s runs per window across every worker (None: no cap)."""
        return await queues.set_rate_limit(self, queue, rate_limit)

    async def add_schedule(
        self,
        name: str,
        task: str | Task,
        schedule: object,
        params: Mapping[str, Any] | None = None,
        enabled: bool = True,
    ) -> ScheduleInfo:
        """Store a schedule (every(...), crontab(...), a cron string or seconds); the leader
        scheduler fires it from its next tick. Unknown task, bad params or schedule raise."""
        name_of = task.name if isinstance(task, Task) else task
        return await stored_schedules.add(self, name, name_of, schedule, params, enabled)

    async def remove_schedule(self, name: str) -> None:
        """Forget a stored schedule; raises ScheduleNotFoundError."""
        await stored_schedules.remove(self, name)

    async def schedules(self) -> list[ScheduleInfo]:
        """Schedules in code and stored ones together, each with its source."""
        return await stored_schedules.list_all(self)

    async def set_schedule_enabled(self, name: str, enabled: bool) -> ScheduleInfo:
        """Switch one schedule on or off (a code schedule switches its task's schedule)."""
        return await stored_schedules.set_enabled(self, name, enabled)

    # -- sync facade ----------------------------------------------------------------------------
    @property
    def sync(self) -> SyncManager:
        """Blocking versions of the main calls, for scripts and non-async web frameworks."""
        from .sync import SyncManager

        if self._sync is None:
            self._sync = SyncManager(self)
        return self._sync
