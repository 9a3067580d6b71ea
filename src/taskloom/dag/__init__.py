"""smallpond-style DAGs: nodes with dependencies and partitions, a lifecycle, retries,
speculative execution of stragglers, seeded fault injection and per-node metrics.

::

    load = Node(load_task, partitions=4)
    total = Node(sum_task, input_deps=[load])      # sum_task(load: list[...]) -> ...
    result = await DAG([load, total]).run(manager, fail_prob=0.1, seed=7)
    result["sum_task"], result.metrics["load_task"].attempts
"""

from .faults import InjectedFaultError
from .graph import DAG
from .node import Node, NodeContext
from .result import DagResult, NodeMetrics
from .runtime import NodeRuntime, PartitionInfo, current_node

__all__ = [
    "DAG",
    "DagResult",
    "InjectedFaultError",
    "Node",
    "NodeContext",
    "NodeMetrics",
    "NodeRuntime",
    "PartitionInfo",
    "current_node",
]
