"""`Node`: one task placed in a DAG, with its dependencies, partitions, limits and lifecycle."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
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
    the task runs N times, each its own run, and receives `partition: int`. `cpu_limit`,
    `gpu_limit` and `memory_limit` become the task's `Resources`; `retry` its retry policy.
    Lifecycle: `initialize → run → finalize`; `cleanup` always runs once `initialize` was
    called, also on error, timeout or cancel. `speculative=False` opts out of speculation.
    """

    __slots__ = (
        "cleanup", "cpu_limit", "finalize", "gpu_limit", "initialize", "input_deps",
        "memory_limit", "name", "partitions", "retry", "speculative", "task",
    )  # fmt: skip

    def __init__(
        self,
        task: Task,
        input_deps: Sequence[Node | str] = (),
        partitions: int | None = None,
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
    ) -> None:
        if not isinstance(task, Task):
            raise ConfigError(f"Node needs a Task (use @task), got {task!r}")
        if partitions is not None and (isinstance(partitions, bool) or partitions < 1):
            raise ConfigError(f"node {task.name!r}: partitions must be >= 1, got {partitions!r}")
        self.task = task
        self.name = name or task.name
        self.input_deps: tuple[str, ...] = tuple(
            d.name if isinstance(d, Node) else str(d) for d in input_deps
        )
        self.partitions = partitions
        self.initialize = initialize
        self.finalize = finalize
        self.cleanup = cleanup
        self.cpu_limit = cpu_limit
        self.gpu_limit = gpu_limit
        self.memory_limit = memory_limit
        self.retry = retry
        self.speculative = speculative
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
