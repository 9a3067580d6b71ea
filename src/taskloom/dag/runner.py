"""Executes a DAG: nodes start as their dependencies finish; each partition is its own run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pstats
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TaskFailedError, TaskTimeoutError
from ..run import TaskRun, TaskState, current_run, new_run_id
from ..task import Task
from .faults import FaultInjector
from .gpus import ENV as GPU_ENV
from .gpus import GpuPool, gpus_needed
from .node import Node, NodeContext, call_hook
from .result import DagResult, NodeMetrics
from .runtime import STAGING_DIR, NodeRuntime, partition_infos
from .speculation import Race, SpeculationPolicy, watch

if TYPE_CHECKING:
    from ..manager import TaskManager
    from .graph import DAG

log = logging.getLogger("taskloom.dag")


@dataclass(frozen=True)
class DagOptions:
    """How one DAG run behaves (see `DAG.run`)."""

    fail_prob: float = 0.0
    seed: int | None = None
    speculation_quantile: float | None = 0.75
    speculation_min_seconds: float = 1.0
    speculation_interval: float = 0.5
    max_parallel: int | None = None
    timeout: float | None = None
    output_root: str | None = None
    gpus: int | tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_prob < 1.0:
            raise ConfigError(f"fail_prob must be in [0, 1), got {self.fail_prob}")
        q = self.speculation_quantile
        if q is not None and not 0.0 < q <= 1.0:
            raise ConfigError(f"speculation_quantile must be in (0, 1], got {q}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"max_parallel must be >= 1, got {self.max_parallel}")


class DagRunner:
    """One run of a DAG on a manager; `run()` returns the `DagResult`."""

    def __init__(self, dag: DAG, manager: TaskManager, options: DagOptions) -> None:
        self.dag = dag
        self.manager = manager
        self.options = options
        self.dag_id = new_run_id()
        self.seed = options.seed if options.seed is not None else random.randrange(2**32)
        self.injectors = {
            name: FaultInjector(
                options.fail_prob if node.fail_prob is None else node.fail_prob, self.seed
            )
            for name, node in dag.nodes.items()
        }
        self.gpus = GpuPool(options.gpus)
        q = options.speculation_quantile
        self.policy = (
            None if q is None
            else SpeculationPolicy(q, options.speculation_min_seconds, options.speculation_interval)
        )  # fmt: skip
        parent = current_run()
        self.parent = parent if parent is not None and parent._manager is not None else None
        self.worker = self.parent.worker if self.parent else f"local-{os.getpid()}"
        self.metrics = {name: NodeMetrics() for name in dag.order}
        self.launched: dict[str, list[TaskRun]] = {name: [] for name in dag.order}
        self.winners: dict[str, list[TaskRun]] = {name: [] for name in dag.order}
        self._nodes: dict[str, asyncio.Task[Any]] = {}
        self._slots = asyncio.Semaphore(options.max_parallel) if options.max_parallel else None

    async def run(self) -> DagResult:
        """Run every node; raise the first node failure after every started node cleaned up."""
        for node in self.dag.nodes.values():
            if self._local_gpus(node):
                self.gpus.check(node.name, gpus_needed(node.gpu_limit))
        await self.manager.connect()
        with self._scratch():
            return await self._run()

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[None]:
        """Profiles and staging directories of this run, removed when it ends."""
        self._profiles = tempfile.mkdtemp(prefix=f"taskloom-dag-{self.dag_id}-")
        try:
            yield
        finally:
            shutil.rmtree(self._profiles, ignore_errors=True)
            if self.options.output_root is not None:
                shutil.rmtree(self._staging_root(), ignore_errors=True)

    def _staging_root(self) -> Path:
        assert self.options.output_root is not None
        return Path(self.options.output_root) / STAGING_DIR / self.dag_id

    def _local_gpus(self, node: Node) -> bool:
        # Ray and Kubernetes place GPU runs themselves
        executor = node.task.executor_name()
        return bool(gpus_needed(node.gpu_limit)) and executor not in ("ray", "kubernetes")

    async def _run(self) -> DagResult:
        for name in self.dag.order:
            node = self.dag.nodes[name]
            self._nodes[name] = asyncio.create_task(self._node(node), name=f"dag-node-{name}")
        try:
            async with asyncio.timeout(self.options.timeout):
                results = await self._wait_all()
        except TimeoutError:
            raise TaskTimeoutError(
                f"DAG {self.dag_id} did not finish within {self.options.timeout:g}s"
            ) from None
        finally:
            await self._stop_all()
        return DagResult(results, self.metrics, self.winners, self.seed, self.dag_id)

    async def _wait_all(self) -> dict[str, Any]:
        pending = set(self._nodes.values())
        while pending:
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for name in self.dag.order:  # dependencies first: report where a failure began
                node = self._nodes[name]
                exc = node.exception() if node.done() and not node.cancelled() else None
                if exc is not None:
                    raise exc
        return {name: node.result() for name, node in self._nodes.items()}

    async def _stop_all(self) -> None:
        for node in self._nodes.values():
            node.cancel("DAG stopped")
        await asyncio.gather(*self._nodes.values(), return_exceptions=True)

    # -- one node ---------------------------------------------------------------------------------
    async def _node(self, node: Node) -> Any:
        # shield: cancelling a dependent must not cancel a dependency other nodes wait for
        inputs = {d: await asyncio.shield(self._nodes[d]) for d in node.input_deps}
        if node.skip_when_any_input_empty and any(
            _empty(value, bool(self.dag.nodes[d].partitions)) for d, value in inputs.items()
        ):
            self.metrics[node.name].skipped = True
            return None
        ctx = NodeContext(node.name, node.partitions, inputs)
        started = time.perf_counter()
        try:
            await call_hook(node.initialize, ctx)
            ctx.runs = await self._partitions(node, ctx)
            values = [node.task.interface.decode_result(r.result) for r in ctx.runs]
            ctx.result = values if node.partitions else values[0]
            await call_hook(node.finalize, ctx)
            return ctx.result
        except (asyncio.CancelledError, TaskFailedError) as exc:
            ctx.error = exc
            raise
        except Exception as exc:
            ctx.error = failure = TaskFailedError.from_exception(exc)
            failure.add_note(f"in DAG node {node.name!r}")
            raise failure from exc
        finally:
            await self._cleanup(node, ctx)
            self.metrics[node.name].elapsed = time.perf_counter() - started

    async def _cleanup(self, node: Node, ctx: NodeContext) -> None:
        try:
            await call_hook(node.cleanup, ctx)
        except Exception as exc:
            if ctx.error is None:
                failure = TaskFailedError.from_exception(exc)
                failure.add_note(f"in the cleanup of DAG node {node.name!r}")
                raise failure from exc
            # the node's own failure is the one to report; this one only goes to the log
            log.exception("cleanup of DAG node %r failed after the node failed", node.name)

    async def _partitions(self, node: Node, ctx: NodeContext) -> list[TaskRun]:
        task = node.configured_task()
        clock = self.manager.clock
        changed = asyncio.Event()
        races = [
            Race(p, functools.partial(self._copy, node, task, ctx.inputs, p), clock, changed.set)
            for p in range(node.partitions or 1)
        ]
        for race in races:
            race.launch()
        side: list[asyncio.Task[None]] = []
        if self.policy is not None and node.speculative and len(races) > 1:
            side.append(asyncio.create_task(watch(races, self.policy, clock, changed)))
        settles = [asyncio.ensure_future(race.settle()) for race in races]
        try:
            for settled in asyncio.as_completed(settles):
                run = await settled
                if run.state is not TaskState.success:
                    failure = run.failure or TaskFailedError(
                        f"run {run.id} ended {run.state}", run_id=run.id
                    )
                    where = f", partition {run.params.get('partition')}" if node.partitions else ""
                    failure.add_note(f"in DAG node {node.name!r}{where}")
                    raise failure
                self._settled(node, run)
            return [s.result() for s in settles]
        finally:
            for race in races:
                race.cancel(f"DAG node {node.name!r} stopped")
            for s in side:
                s.cancel()
            await asyncio.gather(*settles, *side, return_exceptions=True)
            self.winners[node.name] = [r.winner for r in races if r.winner is not None]
            metrics = self.metrics[node.name]
            metrics.count_runs(self.launched[node.name], self.winners[node.name])
            metrics.speculative = sum(len(r.copies) - 1 for r in races)
            metrics.speculative_wins = sum(1 for r in races if r.winner_copy)

    def _settled(self, node: Node, run: TaskRun) -> None:
        """A partition succeeded: publish its output, keep its profile."""
        runtime = run._node
        if not isinstance(runtime, NodeRuntime):
            return
        runtime.publish()
        if runtime.profile_path and os.path.exists(runtime.profile_path):
            metrics = self.metrics[node.name]
            if metrics.profile is None:
                metrics.profile = pstats.Stats(runtime.profile_path)
            else:
                metrics.profile.add(runtime.profile_path)

    def _runtime(
        self, node: Node, run: TaskRun, partition: int, copy: int, ranks: tuple[int, ...]
    ) -> NodeRuntime:
        root = self.options.output_root
        where = f"{partition}-{copy}"
        return NodeRuntime(
            dag_id=self.dag_id, node=node.name, seed=self.seed, run_id=run.id,
            partition=partition if node.partitions else None,
            partition_infos=partition_infos(node.partition_dims, partition),
            output_name=node.output_name, output_root=root,
            staging=str(self._staging_root() / node.name / where) if root is not None else None,
            gpus=tuple(self.gpus.devices[r] for r in ranks), gpu_ranks=ranks,
            cpu_limit=node.cpu_limit, gpu_limit=node.gpu_limit, memory_limit=node.memory_limit,
            perf_profile=node.perf_profile, fail_prob=self.injectors[node.name].fail_prob,
            copy=copy,
            profile_path=os.path.join(self._profiles, f"{node.name}-{where}.prof")
            if node.perf_profile else None,
        )  # fmt: skip

    # -- one run of one partition -----------------------------------------------------------------
    async def _copy(
        self, node: Node, task: Task, inputs: dict[str, Any], partition: int, copy: int
    ) -> TaskRun:
        kwargs = dict(inputs)
        if node.partitions:
            kwargs["partition"] = partition
        model = task.prepare((), kwargs)
        gpus = gpus_needed(node.gpu_limit) if self._local_gpus(node) else 0
        async with self._slot(), self.gpus.lease(gpus) as ranks:
            if ranks:
                visible = ",".join(self.gpus.devices[r] for r in ranks)
                task = task.override(env={**task.env, GPU_ENV: visible})
            lifecycle = self.manager.lifecycle
            run = lifecycle.build_here(
                task, task.interface.stored_params(model), parent=self.parent,
                worker=self.worker,
                tags=[*task.tags, f"dag:{self.dag_id}", f"dag-node:{node.name}"],
            )  # fmt: skip
            run._node = self._runtime(node, run, partition, copy, ranks)
            self.launched[node.name].append(run)
            return await lifecycle.start_here(task, run)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield


def _empty(value: Any, partitioned: bool) -> bool:
    """smallpond's empty input: None or an empty collection; a partitioned result is empty
    when every partition's is."""
    if partitioned and isinstance(value, list):
        return all(_empty(v, False) for v in value)
    return value is None or (isinstance(value, Sized) and len(value) == 0)
