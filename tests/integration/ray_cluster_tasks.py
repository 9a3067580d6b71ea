"""Tasks for the two-node Ray tests; Ray workers import them from here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taskloom import Resources, RetryPolicy, task


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _wait_for(path: Path, count: int) -> None:
    """Block until `count` files exist in `path` (a barrier across Ray workers)."""
    import time

    while len(list(path.iterdir())) < count:
        time.sleep(0.02)


@task(executor="ray")
def where() -> str:
    """The Ray node this ran on."""
    return _node()


@task(executor="ray", resources=Resources(cpu=1, custom={"second": 1}))
def only_on_second() -> dict[str, Any]:
    """Needs a resource only the second node has."""
    import ray

    return {"node": _node(), "assigned": dict(ray.get_runtime_context().get_assigned_resources())}


@task(
    executor="ray",
    resources=Resources(cpu=1, custom={"second": 1}),
    retry=RetryPolicy(max_attempts=2, wait=0.0),
)
def hold_on_second(marker: str) -> str:
    """Announce itself in `marker`, then hold until the file `marker + '.go'` appears."""
    Path(marker).write_text(_node())
    go = Path(marker + ".go")
    import time

    while not go.exists():
        time.sleep(0.02)
    return _node()


@task(executor="ray", resources=Resources(cpu=1))
def barrier_part(partition: int) -> dict[str, Any]:
    """One partition: check in under $BARRIER_DIR, wait until both partitions have, report
    where it ran."""
    path = Path(os.environ["BARRIER_DIR"])
    (path / f"{partition}").write_text(_node())
    _wait_for(path, 2)
    return {"partition": partition, "node": _node()}


@task(executor="ray")
def gpu_ids() -> dict[str, Any]:
    """The GPUs Ray assigned (declared on the node; no hardware needed)."""
    import ray

    return {"node": _node(), "gpus": [str(g) for g in ray.get_gpu_ids()],
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}  # fmt: skip
