"""A DAG node's runtime context (smallpond's task attributes) and the per-node options."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskloom import ConfigError, RetryPolicy, TaskFailedError, TaskManager, TaskState, task
from taskloom.dag import DAG, Node, PartitionInfo, current_node
from taskloom.dag.gpus import GpuPool
from taskloom.executors.process import OutOfMemoryError, ProcessExecutor

from . import dag_proc_tasks as dpt

RETRY = RetryPolicy(max_attempts=5, wait=0)


def manager() -> TaskManager:
    return TaskManager("memory://")


# -- partitions -------------------------------------------------------------------------------------
@task
async def where(partition: int) -> dict[str, Any]:
    node = current_node()
    assert node.get_partition_info("y") == PartitionInfo("y", node.partition_infos_as_dict["y"], 3)
    return {
        "flat": node.partition,
        "dims": node.partition_infos_as_dict,
        "names": node.partition_dims,
    }


async def test_partitions_along_several_dimensions() -> None:
    async with manager() as m:
        result = await DAG([Node(where, partitions={"x": 2, "y": 3})]).run(m)
    rows = result["where"]
    assert [r["flat"] for r in rows] == list(range(6))
    assert [(r["dims"]["x"], r["dims"]["y"]) for r in rows] == [
        (x, y) for x in range(2) for y in range(3)
    ]
    assert rows[0]["names"] == ["x", "y"]


@task
async def plain() -> Any:
    node = current_node()
    with pytest.raises(ConfigError, match="no partition dimension 'x'"):
        node.get_partition_info("x")
    return [node.partition, node.partition_infos, node.node]


async def test_unpartitioned_node_and_outside_a_node() -> None:
    async with manager() as m:
        result = await DAG([Node(plain, name="alone")]).run(m)
    assert result["alone"] == [None, [], "alone"]
    with pytest.raises(ConfigError, match="only available inside a run launched by a DAG node"):
        current_node()
    with pytest.raises(ConfigError, match="partitions must be >= 1"):
        Node(where, partitions={"x": 0})


# -- seeded randomness ------------------------------------------------------------------------------
attempts_seen: dict[int, list[tuple[str, float, int]]] = {}


@task
async def draws(partition: int) -> tuple[str, float, int]:
    node = current_node()
    got = (
        node.random_seed_bytes.hex(),
        node.python_random_gen.random(),
        int(node.numpy_random_gen.integers(1 << 30)),
    )
    attempts_seen.setdefault(partition, []).append(got)
    if len(attempts_seen[partition]) == 1:
        raise ConnectionError("first attempt of every partition fails")
    return got


async def test_random_generators_are_stable_per_seed_and_differ_per_partition() -> None:
    attempts_seen.clear()
    dag = DAG([Node(draws, partitions=4, retry=RETRY)])
    async with manager() as m:
        first = await dag.run(m, seed=11)
        attempts_first = {p: list(v) for p, v in attempts_seen.items()}
        attempts_seen.clear()
        again = await dag.run(m, seed=11)
        attempts_seen.clear()
        other = await dag.run(m, seed=12)
    assert first["draws"] == again["draws"]  # stable across re-runs
    assert len(set(first["draws"])) == 4  # different per partition
    assert all(a != b for a, b in zip(first["draws"], other["draws"], strict=True))
    for p, seen in attempts_first.items():  # a retried attempt draws the same numbers
        assert len(seen) == 2 and seen[0] == seen[1] == first["draws"][p]


# -- output directories -----------------------------------------------------------------------------
first_run = True


@task
async def writer(partition: int) -> str:
    node = current_node()
    out = node.output_path
    assert not node.final_output_path.exists() or not first_run
    assert not any(out.iterdir())  # every attempt starts with an empty staging directory
    (out / "data.txt").write_text(f"v1:{partition}")
    runs = attempts_seen.setdefault(partition, [])
    runs.append(("", 0.0, 0))
    if first_run and len(runs) == 1:
        (out / "partial.txt").write_text("half")
        raise ConnectionError("fail after writing part of the output")
    return str(out)


def check_published(root: Path, staged: list[str], dag_id: str) -> None:
    for p in range(2):
        final = root / "words" / str(p)
        assert sorted(f.name for f in final.iterdir()) == ["data.txt"]
        assert (final / "data.txt").read_text() == f"v1:{p}"
        assert not Path(staged[p]).exists()  # the staging directory moved
    assert not (root / ".staging" / dag_id).exists()


async def test_outputs_are_staged_and_moved_into_place_on_success(tmp_path: Path) -> None:
    attempts_seen.clear()
    root = tmp_path / "out"
    async with manager() as m:
        result = await DAG([Node(writer, partitions=2, retry=RETRY, output_name="words")]).run(
            m, output_root=root
        )
        check_published(root, result["writer"], result.dag_id)
        global first_run
        first_run = False
        attempts_seen.clear()
        again = DAG([Node(writer.override(), partitions=2, output_name="words")])
        await again.run(m, output_root=str(root))
    assert (root / "words" / "0" / "data.txt").read_text() == "v1:0"  # replaced, not merged
    assert sorted(p.name for p in root.iterdir()) == [".staging", "words"]


@task
async def broken_writer() -> None:
    (current_node().output_path / "x").write_text("never published")
    raise ValueError("boom")


async def test_a_failed_node_publishes_nothing_and_output_needs_a_root(tmp_path: Path) -> None:
    async with manager() as m:
        with pytest.raises(TaskFailedError):
            await DAG([Node(broken_writer)]).run(m, output_root=tmp_path)
        assert not (tmp_path / "broken_writer").exists()
        with pytest.raises(TaskFailedError, match="pass output_root"):
            await DAG([Node(broken_writer)]).run(m)


# -- GPUs -------------------------------------------------------------------------------------------
in_use: dict[str, int] = {}
overlaps: list[str] = []


@task
async def on_gpu(partition: int) -> tuple[str | None, int | None, tuple[int, ...]]:
    node = current_node()
    for gpu in node.gpus:
        in_use[gpu] = in_use.get(gpu, 0) + 1
        if in_use[gpu] > 1:
            overlaps.append(gpu)
    await asyncio.sleep(0.01)  # let the other partitions try to start meanwhile
    for gpu in node.gpus:
        in_use[gpu] -= 1
    return node.local_gpu, node.local_rank, node.local_gpu_ranks


async def test_gpus_are_handed_out_one_run_per_device() -> None:
    in_use.clear()
    overlaps.clear()
    async with manager() as m:
        half = await DAG([Node(on_gpu, partitions=6, gpu_limit=0.5)]).run(m, gpus=["7", "9"])
        two = await DAG([Node(on_gpu, partitions=3, gpu_limit=2)]).run(m, gpus=2)
        with pytest.raises(ConfigError, match="needs 3 GPU"):
            await DAG([Node(on_gpu, partitions=1, gpu_limit=3)]).run(m, gpus=2)
        cpu = await DAG([Node(on_gpu, partitions=1)]).run(m, gpus=2)
    assert overlaps == []
    assert {g for g, _, _ in half["on_gpu"]} == {"7", "9"}  # a fraction still gets a device
    assert all((g, r) in {("7", 0), ("9", 1)} for g, r, _ in half["on_gpu"])
    assert all(list(ranks) == [0, 1] for _, _, ranks in two["on_gpu"])
    assert [list(x) for x in cpu["on_gpu"]] == [[None, None, ()]]


def test_gpu_pool_reads_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert GpuPool().devices == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert len(GpuPool()) == 0
    with pytest.raises(ConfigError):
        GpuPool(["1", "1"])


# -- in a process-pool child ------------------------------------------------------------------------
@pytest.fixture
async def pooled() -> AsyncIterator[tuple[TaskManager, ProcessExecutor]]:
    pool = ProcessExecutor(size=2, kill_grace=0.2)
    tasks = [dpt.allocate_mib, dpt.node_facts]
    async with TaskManager("memory://", tasks=tasks, executors={"process": pool}) as m:
        yield m, pool


async def test_the_context_reaches_a_process_child(
    pooled: tuple[TaskManager, ProcessExecutor], tmp_path: Path
) -> None:
    m, _ = pooled
    node = Node(dpt.node_facts, partitions=2, gpu_limit=1, perf_profile=True)
    result = await DAG([node]).run(m, seed=5, output_root=tmp_path, gpus=["4", "6"])
    again = await DAG([node]).run(m, seed=5, output_root=tmp_path, gpus=["4", "6"])
    facts = result["node_facts"]
    assert all(f["pid"] != os.getpid() for f in facts)
    assert [f["dims"] for f in facts] == [{"partition": 0}, {"partition": 1}]
    assert [f["seed"] for f in facts] == [f["seed"] for f in again["node_facts"]]
    assert facts[0]["draw"] != facts[1]["draw"]
    assert all(f["visible"] == f["gpu"] and f["gpu"] in ("4", "6") for f in facts)
    assert (tmp_path / "node_facts" / "1" / "part.txt").read_text() == "1\n"
    profile = result.metrics["node_facts"].profile
    assert profile is not None
    assert any(name == "_work" for (_, _, name) in profile.stats)  # type: ignore[attr-defined]


async def test_memory_limit_on_the_process_executor_fails_runs_as_out_of_memory(
    pooled: tuple[TaskManager, ProcessExecutor],
) -> None:
    m, pool = pooled
    with pytest.raises(ConfigError, match="must not exceed"):
        pool.set_memory_limit("2Gi", "1Gi")
    pool.set_memory_limit("1Gi")
    big = await m.execute(dpt.allocate_mib.name, mib=2048)
    small = await m.execute(dpt.allocate_mib.name, mib=64)
    assert big.state is TaskState.failure and big.error is not None
    assert big.error["type"] == "OutOfMemoryError" and "ran out of memory" in big.error["message"]
    assert small.state is TaskState.success
    assert pool.oom(big) and not pool.oom(small)
    assert pool.oom({"type": "ProcessDiedError"}, nonzero_exitcode_as_oom=True)
    assert not pool.oom({"type": "ProcessDiedError"})
    with pytest.raises(OutOfMemoryError):
        raise OutOfMemoryError("x", limit=1)


# -- per-node options -------------------------------------------------------------------------------
@task
async def step(partition: int) -> int:
    return partition


@task
async def after(step: list[int]) -> int:
    return sum(step)


async def test_per_node_fail_prob_beside_the_dag_wide_one() -> None:
    flaky = Node(step, partitions=8, retry=RetryPolicy(max_attempts=30, wait=0), fail_prob=0.5)
    calm = Node(after, input_deps=[flaky], fail_prob=0.0)
    async with manager() as m:
        result = await DAG([flaky, calm]).run(m, fail_prob=0.9, seed=3)
    assert result["after"] == 28
    assert result.metrics["step"].injected_faults > 0
    assert result.metrics["after"].injected_faults == 0  # its own 0.0 beats the DAG's 0.9
    with pytest.raises(ConfigError, match="fail_prob"):
        Node(step, partitions=2, fail_prob=1.5)


ran: list[str] = []


@task
async def nothing() -> list[int]:
    return []


@task
async def consume(nothing: list[int]) -> list[int]:
    ran.append("consume")
    return [1]


@task
async def final(consume: list[int] | None) -> str:
    ran.append("final")
    return "ran"


async def test_skip_when_any_input_empty() -> None:
    ran.clear()
    async with manager() as m:
        skipping = await DAG(
            [
                Node(nothing),
                Node(consume, input_deps=["nothing"], skip_when_any_input_empty=True),
                Node(final, input_deps=["consume"], skip_when_any_input_empty=True),
            ]
        ).run(m)
        assert ran == [] and skipping["consume"] is None and skipping["final"] is None
        assert skipping.metrics["consume"].skipped and skipping.metrics["consume"].runs == 0
        running = await DAG([Node(nothing), Node(consume, input_deps=["nothing"])]).run(m)
    assert running["consume"] == [1] and not running.metrics["consume"].skipped


def busy(n: int) -> int:
    return sum(range(n))


@task
def profiled_sync(partition: int) -> int:
    return busy(10_000 + partition)


async def test_perf_profile_saves_cprofile_stats_with_the_metrics() -> None:
    async with manager() as m:
        result = await DAG([Node(profiled_sync, partitions=2, perf_profile=True)]).run(m)
        plain_run = await DAG([Node(profiled_sync, partitions=1)]).run(m)
    stats = result.metrics["profiled_sync"].profile
    assert stats is not None
    calls = {name: value[1] for (_, _, name), value in stats.stats.items()}  # type: ignore[attr-defined]
    assert calls["busy"] == 2  # both partitions' runs, merged
    assert plain_run.metrics["profiled_sync"].profile is None


async def test_faults_are_injected_in_a_process_child_too(
    pooled: tuple[TaskManager, ProcessExecutor], tmp_path: Path
) -> None:
    m, _ = pooled
    retry = RetryPolicy(max_attempts=30, wait=0)
    node = Node(dpt.node_facts, partitions=3, retry=retry, speculative=False)  # one copy each
    first = await DAG([node]).run(m, fail_prob=0.5, seed=4, output_root=tmp_path)
    again = await DAG([node]).run(m, fail_prob=0.5, seed=4, output_root=tmp_path)
    assert first.metrics["node_facts"].injected_faults > 0
    assert (
        again.metrics["node_facts"].injected_faults == first.metrics["node_facts"].injected_faults
    )
    calm = Node(dpt.node_facts, partitions=3, fail_prob=0.0)  # the node's own 0.0 wins
    assert (await DAG([calm]).run(m, fail_prob=0.9, output_root=tmp_path)).metrics[
        "node_facts"
    ].injected_faults == 0
