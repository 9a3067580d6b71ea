"""`DAG`: nodes and their dependencies, checked for cycles and missing nodes before any run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError, DagCycleError
from .node import Node

if TYPE_CHECKING:
    from ..manager import TaskManager
    from .result import DagResult


class DAG:
    """A directed acyclic graph of `Node`s (smallpond's logical plan).

    Building it checks everything that does not need a run: unique names, dependencies that
    exist (`DagCycleError` otherwise), no cycle (`DagCycleError` naming it), and that every
    task takes the keywords it will be given (`ConfigError`).
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise ConfigError(
                    f"two DAG nodes are named {node.name!r}: give one a `name=` of its own"
                )
            self.nodes[node.name] = node
        for node in self.nodes.values():
            missing = [d for d in node.input_deps if d not in self.nodes]
            if missing:
                raise DagCycleError(
                    f"node {node.name!r} depends on {', '.join(map(repr, missing))}, "
                    "which is not in the DAG"
                )
        self.order: list[str] = topological_order(
            {name: node.input_deps for name, node in self.nodes.items()}
        )
        for node in self.nodes.values():
            node.check_interface()

    def __repr__(self) -> str:
        return f"DAG({self.order})"

    def dependents(self, name: str) -> list[str]:
        """Nodes that take `name`'s result."""
        return [n for n, node in self.nodes.items() if name in node.input_deps]

    async def run(
        self,
        manager: TaskManager,
        fail_prob: float = 0.0,
        seed: int | None = None,
        speculation_quantile: float | None = 0.75,
        *,
        speculation_min_seconds: float = 1.0,
        speculation_interval: float = 0.5,
        max_parallel: int | None = None,
        timeout: float | None = None,
        output_root: str | os.PathLike[str] | None = None,
        gpus: int | Sequence[str | int] | None = None,
    ) -> DagResult:
        """Run every node once its dependencies are done; return results and metrics.

        `fail_prob`/`seed`: before each attempt a seeded RNG fails it with that probability
        (reproducible by seed; retries recover). `speculation_quantile` (None: off): a
        partition running longer than that quantile of its finished siblings' run times, and
        than `speculation_min_seconds`, is launched again; the first success wins and the other
        copy is cancelled. `speculation_interval` is how often running partitions are checked.
        `max_parallel` bounds runs in flight; `timeout` bounds the whole DAG
        (`TaskTimeoutError`, after every started node's cleanup). A node that fails for good
        raises `TaskFailedError` once every started node has cleaned up.
        `output_root`: each node writes to `current_node().output_path`, a staging directory
        moved to `<output_root>/<output_name>[/<partition>]` when the partition succeeds.
        `gpus`: the local GPUs nodes with a `gpu_limit` get (a count, device ids, or None
        for `CUDA_VISIBLE_DEVICES`), whole devices each, never one device to two runs.
        """
        from .runner import DagOptions, DagRunner

        options = DagOptions(
            fail_prob=fail_prob, seed=seed, speculation_quantile=speculation_quantile,
            speculation_min_seconds=speculation_min_seconds,
            speculation_interval=speculation_interval, max_parallel=max_parallel,
            timeout=timeout, output_root=None if output_root is None else os.fspath(output_root),
            gpus=gpus if gpus is None or isinstance(gpus, int) else tuple(gpus),
        )  # fmt: skip
        return await DagRunner(self, manager, options).run()


def topological_order(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Names so that each comes after its dependencies; raises DagCycleError on a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    for start in deps:
        if state.get(start) == 2:
            continue
        path: list[str] = [start]
        stack = [iter(deps[start])]
        state[start] = 1
        while stack:  # iterative DFS: deep chains must not hit the recursion limit
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
            elif state.get(step) == 1:
                cycle = [*path[path.index(step) :], step]
                raise DagCycleError(
                    f"DAG has a cycle (each node depends on the next): {' -> '.join(cycle)}"
                )
            elif state.get(step) is None:
                state[step] = 1
                path.append(step)
                stack.append(iter(deps[step]))
    return order
