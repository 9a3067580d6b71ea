"""Executes a DAG: nodes start as their dependencies finish; each partition is its own run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TaskFailedError, TaskTimeoutError
from ..run import TaskRun, TaskState, current_run, new_run_id
from ..task import Task
from .faults import FaultingPre, FaultInjector
from .node import Node, NodeContext, call_hook
from .result import DagResult, NodeMetrics
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
        self.injector = FaultInjector(options.fail_prob, self.seed)
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
        await self.manager.connect()
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

    # -- one run of one partition -----------------------------------------------------------------
    async def _copy(
        self, node: Node, task: Task, inputs: dict[str, Any], partition: int, copy: int
    ) -> TaskRun:
        kwargs = dict(inputs)
        if node.partitions:
            kwargs["partition"] = partition
        if self.options.fail_prob > 0:
            task = task.override(
                pre=FaultingPre(self.injector, node.name, partition, copy, task.pre)
            )
        model = task.prepare((), kwargs)
        async with self._slot():
            lifecycle = self.manager.lifecycle
            run = lifecycle.build_here(
                task, task.interface.stored_params(model), parent=self.parent,
                worker=self.worker,
                tags=[*task.tags, f"dag:{self.dag_id}", f"dag-node:{node.name}"],
            )  # fmt: skip
            self.launched[node.name].append(run)
            return await lifecycle.start_here(task, run)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield
