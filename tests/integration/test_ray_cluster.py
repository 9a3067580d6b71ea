"""The Ray executor on a real two-node Ray cluster on loopback (`ray start`, no ray.init).

The head has one CPU; the second node has one CPU, one (declared) GPU and a custom resource
`second`. Tests check placement by resource, that partitions spread over nodes, that a DAG
node's `gpu_limit` becomes Ray's `num_gpus`, and that a node killed mid-run costs an attempt,
never the run. The cluster is stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState
from taskloom.dag import DAG, Node
from taskloom.executors.ray import RayExecutor, init_options, ray_options

from . import ray_cluster_tasks as rt
from .ray_cluster import CLUSTER_ENV, RayCluster, ray_cluster

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'taskloom[ray]')")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TASKS = [rt.where, rt.only_on_second, rt.hold_on_second, rt.barrier_part, rt.gpu_ids]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    if ray.is_initialized():  # another module's local Ray: this one needs the cluster
        ray.shutdown()
    # Detect a dead node in about a second instead of Ray's default fifteen.
    env = {**CLUSTER_ENV, "RAY_health_check_period_ms": "300",
           "RAY_health_check_failure_threshold": "3"}  # fmt: skip
    os.environ.update(env)
    try:
        with ray_cluster({"head": 1}) as c:
            c.wait_head()
            c.add_node({"second": 1}, num_gpus=1)
            try:
                yield c
            finally:
                ray.shutdown()
    finally:
        for name in env:
            os.environ.pop(name, None)


@pytest.fixture
async def manager(cluster: RayCluster) -> AsyncIterator[TaskManager]:
    # The driver attaches to the head's raylet: name its loopback address (see ray_cluster.py).
    executor = RayExecutor(
        address=cluster.address, init_kwargs={"_node_ip_address": cluster.head_ip}
    )
    async with TaskManager("memory://", tasks=TASKS) as m:
        m.set_executor("ray", executor)
        await executor.start()
        await asyncio.to_thread(cluster.wait_nodes, ray, 2)
        yield m


def node_ids() -> dict[str, str]:
    """Live node id -> the custom resource that marks it (`head` or `second`)."""
    out = {}
    for n in ray.nodes():
        if n["Alive"]:
            mark = "second" if "second" in n["Resources"] else "head"
            out[n["NodeID"]] = mark
    return out


async def test_executor_and_run_on_ray_take_an_address(
    cluster: RayCluster, manager: TaskManager
) -> None:
    assert ray.is_initialized()  # by the executor, from its address
    assert init_options(cluster.address, None)["address"] == cluster.address
    assert "num_cpus" not in init_options(cluster.address, None)  # a cluster brings its own
    assert ray_options(rt.only_on_second)["resources"] == {"second": 1}


async def test_a_custom_resource_places_the_run_on_the_node_that_has_it(
    manager: TaskManager,
) -> None:
    run = await manager.execute("only_on_second")
    assert run.state is TaskState.success, run.error
    assert node_ids()[run.result["node"]] == "second"
    assert run.result["assigned"]["second"] == 1


async def test_run_on_ray_joins_the_connected_cluster(
    cluster: RayCluster, manager: TaskManager
) -> None:
    from taskloom.executors.ray import run_on_ray

    result = await asyncio.to_thread(run_on_ray, rt.only_on_second, address=cluster.address)
    node = result["node"]
    assert node_ids()[node] == "second"


async def test_partitions_spread_over_both_nodes(manager: TaskManager, tmp_path: Path) -> None:
    part = rt.barrier_part.override(env={"BARRIER_DIR": str(tmp_path)})
    # no speculation: a copy of a slow partition could finish first on the other node
    dag = DAG([Node(part, partitions=2, speculative=False)])
    result = await dag.run(manager)
    nodes = {row["node"] for row in result["barrier_part"]}
    # each node has one CPU and both partitions must run at once to pass the barrier
    assert {node_ids()[n] for n in nodes} == {"head", "second"}


async def test_a_dag_node_gpu_limit_is_ray_num_gpus(manager: TaskManager) -> None:
    node = Node(rt.gpu_ids, gpu_limit=1)
    assert ray_options(node.configured_task())["num_gpus"] == 1
    result = await DAG([node]).run(manager)
    out = result["gpu_ids"]
    assert node_ids()[out["node"]] == "second"  # the only node with a GPU
    assert out["gpus"] == ["0"] and out["visible"] == "0"


async def test_a_node_killed_mid_run_is_a_retried_attempt(
    manager: TaskManager, cluster: RayCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "running"
    running = asyncio.create_task(manager.execute("hold_on_second", marker=str(marker)))
    await wait_for_file(marker)
    first_node = marker.read_text()
    marker.unlink()
    [second] = [n for n in cluster.nodes if n.resources == {"second": 1}]
    second.kill()  # the machine running the attempt vanishes
    cluster.add_node({"second": 1})  # a replacement joins; the retry lands there
    await wait_for_file(marker)
    assert marker.read_text() != first_node
    await asyncio.to_thread(Path(str(marker) + ".go").write_text, "")
    run = await asyncio.wait_for(running, 120)
    assert run.state is TaskState.success, run.error
    assert run.result == marker.read_text()
    assert [a.state for a in run.attempts] == [TaskState.failure, TaskState.success]
    assert run.attempts[0].error is not None
    assert run.retry_attempt == 1


async def wait_for_file(path: Path, timeout: float = 120.0) -> None:
    """Until `path` exists (written by a Ray worker in another process)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout}s")
        await asyncio.sleep(0.05)
