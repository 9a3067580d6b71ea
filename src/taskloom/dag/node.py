"""`Node`: one task placed in a DAG, with its dependencies, partitions, limits and lifecycle."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..policies import Resources, RetryPolicy
from ..run import TaskRun
from ..task import Task


@dataclass
class NodeContext:
    """What a node's lifecycle hooks see during one DAG run.

    `inputs` holds the dependencies' results by node name; `state` is yours, shared by
    `initialize`, `finalize` and `cleanup`; `result` is set before `finalize`, `error` before
    `cleanup` when the node failed (or was cancelled); `runs` are the partitions' winning runs.
    """

    name: str
    partitions: int | None
    inputs: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: BaseException | None = None
    runs: list[TaskRun] = field(default_factory=list)


LifecycleHook = Callable[[NodeContext], Awaitable[None] | None]


def partition_dims(name: str, partitions: int | Mapping[str, int] | None) -> dict[str, int]:
    """Dimension name → size; an int is one dimension named `partition`."""
    if partitions is None:
        return {}
    dims = {"partition": partitions} if isinstance(partitions, int) else dict(partitions)
    for dim, size in dims.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"node {name!r}: partitions must be >= 1, got {dim}={size!r}")
    if not dims:
        raise ConfigError(f"node {name!r}: partitions needs at least one dimension")
    return dims


async def call_hook(hook: LifecycleHook | None, ctx: NodeContext) -> None:
    """Call a sync or async lifecycle hook."""
    if hook is None:
        return
    value = hook(ctx)
    if inspect.isawaitable(value):
        await value


class Node:
    """A task in a DAG (smallpond's task node), named after its task unless `name` is given.

    The task receives each dependency's result as the keyword named after that dependency (a
    list with one item per partition when the dependency is partitioned). With `partitions=N`
    the task runs N times, each its own run, and receives `partition: int`; a mapping such as
    `{"file": 4, "shard": 2}` partitions along several dimensions (8 runs, `partition` is the
    flat number; `current_node().partition_infos` has each dimension's index).
    `cpu_limit`, `gpu_limit` and `memory_limit` become the task's `Resources` (a run with a
    `gpu_limit` also gets whole local GPUs of its own, see `DAG.run(gpus=...)`); `retry` its
    retry policy. Lifecycle: `initialize → run → finalize`; `cleanup` always runs once
    `initialize` was called, also on error, timeout or cancel. `speculative=False` opts out of
    speculation. `fail_prob` replaces the DAG-wide fault probability for this node;
    `skip_when_any_input_empty` skips the node (result None) when a dependency's result is
    empty; `perf_profile` profiles each run with cProfile into `metrics.profile`;
    `output_name` names its directory under `DAG.run(output_root=...)` (default: the name).
    """

    __slots__ = (
        "cleanup", "cpu_limit", "fail_prob", "finalize", "gpu_limit", "initialize", "input_deps",
        "memory_limit", "name", "output_name", "partition_dims", "partitions", "perf_profile",
        "retry", "skip_when_any_input_empty", "speculative", "task",
    )  # fmt: skip

    def __init__(
        self,
        task: Task,
        input_deps: Sequence[Node | str] = (),
        partitions: int | Mapping[str, int] | None = None,
        initialize: LifecycleHook | None = None,
        finalize: LifecycleHook | None = None,
        cleanup: LifecycleHook | None = None,
        cpu_limit: int | float | str | None = None,
        gpu_limit: int | float | None = None,
        memory_limit: int | str | None = None,
        retry: RetryPolicy | int | None = None,
        speculative: bool = True,
        *,
        name: str | None = None,
        fail_prob: float | None = None,
        skip_when_any_input_empty: bool = False,
        perf_profile: bool = False,
        output_name: str | None = None,
    ) -> None:
        if not isinstance(task, Task):
            raise ConfigError(f"Node needs a Task (use @task), got {task!r}")
        self.partition_dims = partition_dims(task.name, partitions)
        if fail_prob is not None and not 0.0 <= fail_prob < 1.0:
            raise ConfigError(f"node {task.name!r}: fail_prob must be in [0, 1), got {fail_prob}")
        if gpu_limit is not None and gpu_limit < 0:
            raise ConfigError(f"node {task.name!r}: gpu_limit must be >= 0, got {gpu_limit}")
        self.task = task
        self.name = name or task.name
        self.input_deps: tuple[str, ...] = tuple(
            d.name if isinstance(d, Node) else str(d) for d in input_deps
        )
        self.partitions: int | None = (
            math.prod(self.partition_dims.values()) if self.partition_dims else None
        )
        self.initialize = initialize
        self.finalize = finalize
        self.cleanup = cleanup
        self.cpu_limit = cpu_limit
        self.gpu_limit = gpu_limit
        self.memory_limit = memory_limit
        self.retry = retry
        self.speculative = speculative
        self.fail_prob = fail_prob
        self.skip_when_any_input_empty = skip_when_any_input_empty
        self.perf_profile = perf_profile
        self.output_name = output_name or self.name
        Resources(cpu=cpu_limit, memory=memory_limit)  # bad quantities fail here, not mid-run

    def __repr__(self) -> str:
        deps = f", input_deps={list(self.input_deps)}" if self.input_deps else ""
        parts = f", partitions={self.partitions}" if self.partitions else ""
        return f"Node({self.name!r}{deps}{parts})"

    def configured_task(self) -> Task:
        """The task with this node's limits and retry policy applied."""
        changes: dict[str, Any] = {}
        if (self.cpu_limit, self.gpu_limit, self.memory_limit) != (None, None, None):
            base = self.task.resources or Resources()
            changes["resources"] = dataclasses.replace(
                base,
                cpu=base.cpu if self.cpu_limit is None else self.cpu_limit,
                memory=base.memory if self.memory_limit is None else self.memory_limit,
                gpu=base.gpu if self.gpu_limit is None else self.gpu_limit,
            )
        if self.retry is not None:
            changes["retry"] = self.retry
        return self.task.override(**changes) if changes else self.task

    def check_interface(self) -> None:
        """Raise ConfigError unless the task takes every keyword the DAG will pass it."""
        names = set(self.task.interface.input_names)
        wanted = list(self.input_deps) + (["partition"] if self.partitions else [])
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ConfigError(
                f"node {self.name!r}: task {self.task.name!r} has no parameter for "
                f"{', '.join(repr(m) for m in missing)} (dependencies arrive as keywords named "
                "after them; a partitioned task receives `partition: int`)"
            )
