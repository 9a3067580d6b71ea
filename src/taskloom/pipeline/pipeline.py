"""Pipeline: the maintenance loop that launches each ready job exactly once as a taskloom run.

One pass (`update`) reaps finished jobs (their lifetime and exit go to the task's `done`
repository), then launches every ready job the quotas allow, as a run of an internal taskloom
task `pipeline.<task>` with the dedup key `<task>/<job>`. Retries, timeouts, leases and the
run history are taskloom's; a job whose run failed for good is recorded in `done` and stays
failed. While open, the pipeline serves its own queue with a `TaskConsumer`; other workers of
the same app may serve it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..consumer import TaskConsumer
from ..errors import ConfigError, TaskFailedError
from ..hooks import RunHooks
from ..manager import TaskManager
from ..run import TaskRun, TaskState
from ..store.base import ACTIVE_STATES
from ..task import Task, make_task
from .graph import dependency_cycles
from .kinds import PipelineTask
from .quotas import ResourceManager

log = logging.getLogger("taskloom.pipeline")

INTERNAL_PREFIX = "pipeline."
PIPELINE_ATTR = "taskloom_pipeline"
_PAGE = 1000


def internal_name(task: str) -> str:
    """The taskloom task that runs the jobs of pipeline task `task`."""
    return INTERNAL_PREFIX + task


def dedup_key(task: str, job: str) -> str:
    """The dedup key of a job's run: at most one run per job is in flight."""
    return f"{task}/{job}"


def done_record(task: str, job: str, run: TaskRun) -> dict[str, Any]:
    """What the pipeline writes to `done` for a finished run: lifetime and exit."""
    error = run.error or {}
    if run.state is TaskState.success:
        exit_ = "success"
    elif error.get("type") == "TaskTimeoutError":
        exit_ = "timeout"  # killed after its timeout
    else:
        exit_ = run.state.value
    return {
        "task": task,
        "job": job,
        "run_id": run.id,
        "state": run.state.value,
        "exit": exit_,
        "success": run.state is TaskState.success,
        "queued": run.queued.isoformat() if run.queued else None,
        "start": run.start.isoformat() if run.start else None,
        "end": run.end.isoformat() if run.end else None,
        "duration": run.duration,
        "attempts": len(run.attempts) or 1,
        "result": run.result,
        "error": {"type": error.get("type"), "message": error.get("message")} if error else None,
    }


def is_failure(record: Any) -> bool:
    """True if a done record says the job did not succeed."""
    return isinstance(record, dict) and record.get("success") is False


@dataclass
class PipelineStats:
    """Counters since the pipeline opened."""

    passes: int = 0
    launched: int = 0
    succeeded: int = 0
    failed: int = 0
    denied: int = 0
    denials: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskStatus:
    """One task's jobs by state: ready to launch, in flight, done, failed."""

    task: str
    kind: str
    ready: int
    running: int
    done: int
    failed: int


class _ReapHook(RunHooks):
    """Tells the pipeline the moment one of its runs ends (in the process that ran it)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        self._pipeline._attempt_ended(run)


class Pipeline:
    """Tasks linked through repositories, run by one maintenance loop on `manager`.

    `async with Pipeline(tasks, manager=m, quotas=[...]) as p:` opens it (validates, sets
    up the tasks and, with `serve=True`, starts a consumer of `queue` running up to
    `concurrency` jobs); `await p.update()` is one pass; `await p.run()` loops passes until
    nothing is ready, waiting or live. `poll_interval` (default: the manager's) bounds how
    long `wait()` sleeps without news and how often runs finished elsewhere are looked for.
    """

    def __init__(
        self,
        tasks: Iterable[PipelineTask],
        *,
        manager: TaskManager,
        quotas: Sequence[ResourceManager] = (),
        queue: str = "pipeline",
        serve: bool = True,
        concurrency: int = 32,
        poll_interval: float | None = None,
        grace_seconds: float = 30.0,
    ) -> None:
        self.task_list = list(tasks)
        self.tasks = {t.name: t for t in self.task_list}
        self.manager = manager
        self.quotas = list(quotas)
        for t in self.task_list:  # a quota handed to tasks (pydatatask's way) governs them
            for q in t.quotas:
                if q not in self.quotas:
                    if q.tasks is None:
                        q.tasks = frozenset(o.name for o in self.task_list if q in o.quotas)
                    self.quotas.append(q)
        self.queue = queue
        self.serve = serve
        self.concurrency = concurrency
        self.poll_interval = poll_interval if poll_interval is not None else manager.poll_interval
        self.grace_seconds = grace_seconds
        self.stats = PipelineStats()
        self._hook = _ReapHook(self)
        self._internal: dict[str, Task] = {}
        self._tracked: dict[str, tuple[PipelineTask, str]] = {}  # run id -> (task, job)
        self._inbox: dict[str, TaskRun] = {}
        self._changed: asyncio.Event | None = None
        self._consumer: TaskConsumer | None = None
        self._open = False
        self._recovered = False
        self._last_reconcile = 0.0
        self._staged: list[str] = []  # jobs the current task's launch() queued this pass
        for t in self.task_list:
            self._internal[t.name] = manager.register_task(self._make_internal(t))

    # -- the internal taskloom tasks ------------------------------------------------------------
    def _make_internal(self, ptask: PipelineTask) -> Task:
        async def run_job(ctx: TaskRun, job: str) -> Any:
            # a run reclaimed after its job was already reaped (its worker lost the lease
            # after finishing) must not run the body a second time
            if await ptask.done.contains(job):
                return {"skipped": "already done"}
            return await ptask.execute(job, ctx)

        run_job.__dict__[PIPELINE_ATTR] = self  # how the CLI finds pipelines from a manager
        return make_task(
            run_job,
            name=internal_name(ptask.name),
            executor="inline",
            queue=self.queue,
            retry=ptask.retry,
            timeout_seconds=ptask.run_timeout,
            resources=ptask.resources,
            tags=["pipeline", ptask.name],
            short_description=f"{ptask.kind} job of pipeline task {ptask.name!r}",
        )

    # -- validation -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every configuration problem found (empty when the pipeline is sound)."""
        out: list[str] = []
        seen: set[str] = set()
        for t in self.task_list:
            if t.name in seen:
                out.append(f"duplicate task name {t.name!r}")
            seen.add(t.name)
        for t in self.task_list:
            out += [f"task {t.name!r}: {p}" for p in t.problems()]
            for upstream in sorted(t.upstreams - set(self.tasks)):
                out.append(f"task {t.name!r} is plugged into task {upstream!r}, which is not "
                           "in this pipeline")  # fmt: skip
            for q in self.quotas:
                if q.governs(t.name) and (why := q.never_fits(t.resources)):
                    out.append(f"task {t.name!r} can never launch: {why}")
        for cycle in dependency_cycles(self.task_list):
            out.append(
                "cycle: " + " -> ".join(cycle) + " (each waits for the next one's "
                "output, so none can start; give one a ready= override if intended)"
            )
        return out

    def validate(self) -> None:
        """Raise ConfigError listing every problem (dangling links, duplicate names,
        dependency cycles, bodies asking for missing links, quotas nothing fits)."""
        if found := self.problems():
            raise ConfigError("invalid pipeline:\n  " + "\n  ".join(found))

    # -- opening and closing --------------------------------------------------------------------
    async def __aenter__(self) -> Pipeline:
        self.validate()
        await self.manager.connect()
        for t in self.task_list:
            t.pipeline = self
            await t.setup()
        self._reset()
        self.manager.hooks.add(self._hook)
        self._open = True
        if self.serve:
            self._consumer = TaskConsumer(
                self.manager, queues=[self.queue], max_concurrent_tasks=self.concurrency,
                grace_seconds=self.grace_seconds,
            )  # fmt: skip
            await self._consumer.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._consumer is not None:
                await self._consumer.stop()
        finally:
            self._consumer = None
            self._open = False
            self.manager.hooks.remove(self._hook)
            for t in self.task_list:
                await t.teardown()

    def _reset(self) -> None:
        """Forget what a previous opening tracked: recovery rebuilds it from the store."""
        for task, job in self._tracked.values():
            self._release(task, job)
        for t in self.task_list:
            t.live.clear()
        self.stats = PipelineStats()
        self._tracked.clear()
        self._inbox.clear()
        self._changed = asyncio.Event()
        self._recovered = False

    # -- the loop -------------------------------------------------------------------------------
    async def update(self) -> bool:
        """One maintenance pass: reap finished jobs, then launch every ready job the quotas
        allow. True while anything happened, is in flight, or waits for a quota."""
        if not self._open:
            raise ConfigError("open the pipeline first: `async with pipeline:`")
        self.stats.passes += 1
        busy = False
        for t in self.task_list:
            if not t.disabled:
                busy = await t.update() or busy
        reaped = 0
        if not self._recovered:
            reaped = await self._recover()
            self._recovered = True
        reaped += await self._reap()
        launched, waiting = await self._launch()
        return bool(busy or reaped or launched or waiting or self._tracked)

    async def wait(self, timeout: float | None = None) -> None:
        """Sleep until one of our runs ends, a quota window reopens, or `timeout` (default
        `poll_interval`) passes: what to do between two `update()` passes."""
        if self._inbox or self._changed is None or not (self._tracked or self.stats.denied):
            return  # news to reap already, or nothing that could change by waiting
        delay = self.poll_interval if timeout is None else timeout
        now = self.manager.clock()
        for q in self.quotas:
            opening = q.next_opening(now)
            if opening is not None:
                delay = min(delay, max(opening - now, 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), delay)
        self._changed.clear()

    async def run(self, *, max_passes: int | None = None) -> PipelineStats:
        """Loop `update()` and `wait()` until nothing is ready, waiting or live (opening the
        pipeline for the duration if it is not open); returns the counters."""
        if not self._open:
            async with self:
                return await self.run(max_passes=max_passes)
        passes = 0
        while await self.update():
            passes += 1
            if max_passes is not None and passes >= max_passes:
                break
            await self.wait()
        return self.stats

    # -- reaping --------------------------------------------------------------------------------
    def _attempt_ended(self, run: TaskRun) -> None:
        if run.id in self._tracked and run.is_done:
            self._inbox[run.id] = run.record()
            if self._changed is not None:
                self._changed.set()

    async def _reap(self) -> int:
        inbox, self._inbox = self._inbox, {}
        reaped = 0
        for run in inbox.values():
            reaped += await self._finish(run)
        # runs that ended elsewhere (another worker, a cancel while queued) send no hook
        # here: look for them in the store once per poll_interval, the same fallback
        # cadence `wait()` sleeps with when no hook arrives
        if self._tracked and time.monotonic() - self._last_reconcile >= self.poll_interval:
            reaped += await self._reconcile()
        return reaped

    async def _reconcile(self) -> int:
        self._last_reconcile = time.monotonic()
        active: set[str] = set()
        for t in self.task_list:
            active.update(r.id for r in await self._active_runs(t))
        reaped = 0
        for run_id in [rid for rid in self._tracked if rid not in active]:
            run = await self.manager.store.get(run_id)
            if run is None:  # purged: forget it, the job is ready again
                task, job = self._tracked.pop(run_id)
                self._release(task, job)
            elif run.is_done:
                reaped += await self._finish(run)
        return reaped

    async def _finish(self, run: TaskRun) -> int:
        entry = self._tracked.get(run.id)
        if entry is None:
            return 0
        task, job = entry
        record = done_record(task.name, job, run)
        await task.done.dump(job, record)  # before untracking: never neither live nor done
        del self._tracked[run.id]
        self._release(task, job)
        if record["success"]:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
            log.warning("job %s/%s failed (%s): %s", task.name, job, record["exit"],
                        (record["error"] or {}).get("message"))  # fmt: skip
        return 1

    def _release(self, task: PipelineTask, job: str) -> None:
        task.live.untrack(job)
        for q in self.quotas:
            q.release(dedup_key(task.name, job))

    def _track(self, task: PipelineTask, job: str, run: TaskRun) -> None:
        self._tracked[run.id] = (task, job)
        task.live.track(job, {"run_id": run.id, "queued": run.queued and run.queued.isoformat()})

    async def _active_runs(self, task: PipelineTask) -> list[TaskRun]:
        out: list[TaskRun] = []
        for state in ACTIVE_STATES:
            cursor = None
            while True:
                page = await self.manager.runs(
                    task=internal_name(task.name), state=state, limit=_PAGE, cursor=cursor
                )
                out += page
                if len(page) < _PAGE:
                    break
                cursor = page[-1].id
        return out

    async def _recover(self) -> int:
        """Adopt what a previous loop left: runs in flight are tracked (and charged to the
        quotas); runs that finished without being reaped are reaped now, so their jobs are
        not launched a second time. Returns how many were reaped."""
        reaped = 0
        for task in self.task_list:
            done = await task.done.snapshot()
            seen: set[str] = set()
            cursor = None
            while True:
                page = await self.manager.runs(
                    task=internal_name(task.name), limit=_PAGE, cursor=cursor
                )
                for run in page:  # newest first: the first run seen per job is its latest
                    job = run.params.get("job")
                    if not isinstance(job, str) or job in seen:
                        continue
                    seen.add(job)
                    if job in done:
                        continue
                    self._track(task, job, run)
                    if run.is_done:
                        reaped += await self._finish(run)
                    else:
                        for q in self.quotas:
                            if q.governs(task.name):
                                q.restore(dedup_key(task.name, job), task.resources)
                if len(page) < _PAGE:
                    break
                cursor = page[-1].id
        return reaped

    # -- launching ------------------------------------------------------------------------------
    async def _launch(self) -> tuple[int, int]:
        launched = waiting = 0
        self.stats.denials.clear()
        now = self.manager.clock()
        for task in self.task_list:
            if task.disabled:
                continue
            ready = await task.ready.snapshot()
            if task.has_ready_override:  # an override narrows; live and done jobs stay out
                ready = ready - await task.live.snapshot() - await task.done.snapshot()
            jobs = sorted(ready)
            runs: list[TaskRun] = []
            quotas = [q for q in self.quotas if q.governs(task.name)]
            for i, job in enumerate(jobs):
                why = next((w for q in quotas if (w := q.denial(task.resources, now))), None)
                if why is not None:
                    waiting += len(jobs) - i
                    self.stats.denials[task.name] = why
                    break
                for q in quotas:
                    q.acquire(dedup_key(task.name, job), task.resources, now)
                self._staged = []
                try:
                    await task.launch(job)
                except Exception:
                    log.exception("launching job %s/%s failed; it stays ready", task.name, job)
                if job not in self._staged:  # the task's launch() queued nothing
                    for q in quotas:
                        q.release(dedup_key(task.name, job))
                runs += [self._new_run(task, j) for j in self._staged]
            self._staged = []
            if runs:
                launched += await self._enqueue(task, runs)
        self.stats.denied = waiting
        return launched, waiting

    def stage_launch(self, task: PipelineTask, job: str) -> None:
        """Queue `job`'s run with the rest of this pass (what `PipelineTask.launch` does)."""
        if task.name not in self._internal or self.tasks.get(task.name) is not task:
            raise ConfigError(f"task {task.name!r} is not in this pipeline")
        self._staged.append(job)

    def _new_run(self, task: PipelineTask, job: str) -> TaskRun:
        return self.manager.new_run(
            self._internal[task.name], {"job": job}, queue=self.queue,
            dedup_key=dedup_key(task.name, job),
        )  # fmt: skip

    async def _enqueue(self, task: PipelineTask, runs: list[TaskRun]) -> int:
        try:
            stored = await self.manager.lifecycle.submit(runs)
        except BaseException:
            for run in runs:
                self._release(task, run.params["job"])
            raise
        for sent, got in zip(runs, stored, strict=True):
            # an existing run in flight for the same job (dedup) is adopted, not duplicated
            self._track(task, sent.params["job"], got)
        self.stats.launched += len(runs)
        return len(runs)

    # -- inspection -----------------------------------------------------------------------------
    async def status(self) -> list[TaskStatus]:
        """Jobs per task: ready, running (a run in flight), done (succeeded) and failed.

        Works without opening the pipeline: in-flight runs then come from the store.
        """
        await self.manager.connect()
        out = []
        for task in self.task_list:
            records = {}
            for key in await task.done.snapshot():
                with contextlib.suppress(KeyError, ValueError):
                    records[key] = await task.done.info(key)
            failed = sum(1 for r in records.values() if is_failure(r))
            if self._open:
                running = set(await task.live.snapshot())
            else:
                running = {str(r.params.get("job")) for r in await self._active_runs(task)}
            ready = await task.ready.snapshot() - running - set(records)
            out.append(TaskStatus(
                task.name, task.kind, len(ready), len(running), len(records) - failed, failed
            ))  # fmt: skip
        return out

    def graph(self, dot: bool = False) -> str:
        """The task/repository graph as text, or as Graphviz DOT with `dot=True`."""
        from .graph import render_dot, render_text

        return render_dot(self.task_list) if dot else render_text(self.task_list)

    def _task(self, name: str) -> PipelineTask:
        try:
            return self.tasks[name]
        except KeyError:
            raise ConfigError(f"no task {name!r} in this pipeline") from None

    async def retry(self, task: str, job: str) -> None:
        """Forget a finished job's done record, so the next pass launches it again."""
        await self._task(task).done.delete(job)

    async def cancel(self, task: str, job: str) -> TaskRun:
        """Abort a job in flight (its run ends `aborted`, recorded in `done`, not relaunched)."""
        ptask = self._task(task)
        for run_id, (t, j) in self._tracked.items():
            if t is ptask and j == job:
                return await self.manager.cancel(run_id)
        raise ConfigError(f"job {job!r} of task {task!r} is not in flight")

    @property
    def live(self) -> int:
        """Jobs with a run in flight."""
        return len(self._tracked)

    def __repr__(self) -> str:
        return f"<Pipeline tasks={list(self.tasks)} queue={self.queue!r}>"
