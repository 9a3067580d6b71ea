"""Module-level DAG node tasks for the process executor (children import them by name)."""

from __future__ import annotations

import os
from typing import Any

from taskloom import task
from taskloom.dag import current_node


def _work(n: int) -> int:
    return sum(i * i for i in range(n))


@task(cpu_bound=True)
def node_facts(partition: int) -> dict[str, Any]:
    """What a node run sees of its runtime context inside a pool child."""
    node = current_node()
    (node.output_path / "part.txt").write_text(f"{partition}\n")
    return {
        "pid": os.getpid(),
        "partition": node.partition,
        "dims": node.partition_infos_as_dict,
        "seed": node.random_seed_bytes.hex(),
        "draw": node.python_random_gen.random(),
        "gpu": node.local_gpu,
        "rank": node.local_rank,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "work": _work(20_000),
    }


@task(cpu_bound=True)
def allocate_mib(mib: int) -> int:
    """Allocate `mib` MiB."""
    return len(bytearray(mib * 1024 * 1024))
