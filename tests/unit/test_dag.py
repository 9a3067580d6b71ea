"""smallpond-style DAGs: order, partitions, lifecycle, retries, speculation, faults, metrics."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from taskloom import (
    ConfigError,
    DagCycleError,
    Resources,
    RetryPolicy,
    TaskFailedError,
    TaskManager,
    TaskRun,
    TaskState,
    TaskTimeoutError,
    task,
)
from taskloom.dag import DAG, InjectedFaultError, Node, NodeContext
from taskloom.dag.graph import topological_order
from taskloom.dag.speculation import SpeculationPolicy
from taskloom.executors.base import RunEnv
from taskloom.executors.inline import InlineExecutor
from taskloom.store import Store
from taskloom.task import Task
from taskloom.testing import FakeClock

BOUND = 10.0  # seconds: no test here should come near it


def manager(**options: Any) -> TaskManager:
    return TaskManager("memory://", **options)


async def dag_runs(m: TaskManager, dag_id: str) -> list[TaskRun]:
    return await m.runs(tags=[f"dag:{dag_id}"], limit=1000)


# -- building ---------------------------------------------------------------------------------------
@task
async def source() -> int:
    return 1


@task
async def sink(source: int) -> int:
    return source + 1


def test_cycle_raises_before_anything_runs() -> None:
    @task
    async def a(b: int) -> int:
        return b

    @task
    async def b(a: int) -> int:
        return a

    with pytest.raises(DagCycleError, match=r"a -> b -> a|b -> a -> b"):
        DAG([Node(a, input_deps=["b"]), Node(b, input_deps=["a"])])
    with pytest.raises(DagCycleError, match="cycle"):
        DAG([Node(sink, input_deps=["sink"], name="sink")])  # depends on itself


def test_missing_dependency_raises_dag_cycle_error() -> None:
    with pytest.raises(DagCycleError, match="'source'.*not in the DAG"):
        DAG([Node(sink, input_deps=[Node(source)])])


def test_interface_and_name_checks() -> None:
    with pytest.raises(ConfigError, match="no parameter for 'partition'"):
        DAG([Node(source, partitions=2)])
    with pytest.raises(ConfigError, match="no parameter for 'other'"):
        DAG([Node(source), Node(source, name="other"), Node(sink, input_deps=["other"])])
    with pytest.raises(ConfigError, match="two DAG nodes"):
        DAG([Node(source), Node(source)])
    with pytest.raises(ConfigError, match="partitions"):
        Node(source, partitions=0)
    with pytest.raises(ConfigError, match="Task"):
        Node(lambda: 1)  # type: ignore[arg-type]


def test_topological_order_handles_long_chains() -> None:
    deps = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(5000)}
    assert topological_order(deps) == [f"n{i}" for i in range(5000)]


def test_limits_become_resources_and_retry_the_policy() -> None:
    node = Node(
        source.override(resources=Resources(cpu="1", disk="1Gi")),
        cpu_limit=2, gpu_limit=1, memory_limit="512Mi", retry=3,
    )  # fmt: skip
    configured = node.configured_task()
    assert configured.resources == Resources(cpu=2, memory="512Mi", gpu=1, disk="1Gi")
    assert configured.retry == RetryPolicy.from_retries(3)
    assert Node(source).configured_task() is source
    with pytest.raises(ConfigError):
        Node(source, memory_limit="lots")


def test_speculation_threshold_is_a_quantile_with_a_floor() -> None:
    policy = SpeculationPolicy(quantile=0.75, min_seconds=1.0)
    assert policy.threshold([]) is None
    assert policy.threshold([0.1, 0.2]) == 1.0
    assert policy.threshold([2.0, 4.0, 6.0, 8.0]) == 6.0
    assert policy.threshold([5.0]) == 5.0


# -- running ----------------------------------------------------------------------------------------
async def test_nodes_run_after_their_dependencies_and_get_results_by_name() -> None:
    log: list[str] = []

    def logged(name: str, fn: Any) -> Task:
        async def body(**kwargs: Any) -> Any:
            log.append(f"start {name}")
            await asyncio.sleep(0)  # let anything that wrongly runs in parallel interleave
            value = fn(**kwargs)
            log.append(f"end {name}")
            return value

        return task(name=name)(_signature_of(fn, body))

    top = logged("top", lambda: 2)
    left = logged("left", lambda top: top * 3)
    right = logged("right", lambda top: top + 1)
    bottom = logged("bottom", lambda left, right: left - right)
    nodes = [Node(bottom, input_deps=["left", "right"]), Node(left, input_deps=["top"]),
             Node(right, input_deps=["top"]), Node(top)]  # fmt: skip
    async with manager() as m:
        result = await DAG(nodes).run(m)
    assert dict(result) == {"bottom": 3, "left": 6, "right": 3, "top": 2}
    assert result.results == dict(result) and len(result) == 4
    assert log.index("end top") < log.index("start left")
    assert log.index("end top") < log.index("start right")
    assert log.index("end left") < log.index("start bottom")
    assert log.index("end right") < log.index("start bottom")


def _signature_of(fn: Any, body: Any) -> Any:
    """`body` with `fn`'s parameters (typed Any), so the task interface sees them."""
    import inspect

    params = [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=Any)
        for p in inspect.signature(fn).parameters
    ]
    body.__signature__ = inspect.Signature(params, return_annotation=Any)
    body.__annotations__ = {p.name: Any for p in params} | {"return": Any}
    return body


async def test_independent_nodes_run_concurrently() -> None:
    b_started = asyncio.Event()

    @task
    async def a() -> str:
        await b_started.wait()  # would deadlock if the nodes ran one after the other
        return "a"

    @task
    async def b() -> str:
        b_started.set()
        return "b"

    async with manager() as m:
        result = await asyncio.wait_for(DAG([Node(a), Node(b)]).run(m), BOUND)
    assert dict(result) == {"a": "a", "b": "b"}


async def test_partitions_are_runs_and_dependents_get_a_list() -> None:
    @task
    async def load(ctx: TaskRun, partition: int) -> list[int]:
        ctx.metrics["rows"] = 2
        return [partition, partition * 10]

    @task
    async def scale(partition: int, load: list[list[int]]) -> int:
        return sum(load[partition]) * 2  # a partitioned dependent picks its own slice

    @task
    def total(load: list[list[int]], scale: list[int]) -> dict[str, int]:
        return {"load": sum(map(sum, load)), "scale": sum(scale)}

    load_node = Node(load, partitions=3)
    scale_node = Node(scale, input_deps=[load_node], partitions=3)
    nodes = [load_node, scale_node, Node(total, input_deps=[load_node, scale_node])]
    async with manager() as m:
        result = await DAG(nodes).run(m)
        runs = await dag_runs(m, result.dag_id)
    assert result["load"] == [[0, 0], [1, 10], [2, 20]]
    assert result["scale"] == [0, 22, 44]
    assert result["total"] == {"load": 33, "scale": 66}
    assert len(runs) == 3 + 3 + 1 and all(r.state is TaskState.success for r in runs)
    assert sorted(r.params["partition"] for r in runs if r.task == "load") == [0, 1, 2]
    metrics = result.metrics["load"]
    assert metrics.runs == 3 and metrics.attempts == 3 and metrics.failures == 0
    assert metrics.counters == {"rows": 6.0} and metrics.elapsed > 0
    assert [r.params["partition"] for r in result.runs["load"]] == [0, 1, 2]


async def test_max_parallel_bounds_runs_in_flight() -> None:
    running, peak = 0, 0

    @task
    async def part(partition: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return partition

    async with manager() as m:
        result = await DAG([Node(part, partitions=6)]).run(m, max_parallel=2)
    assert result["part"] == list(range(6)) and peak == 2


# -- lifecycle --------------------------------------------------------------------------------------
async def test_lifecycle_order_on_success() -> None:
    events: list[str] = []

    async def initialize(ctx: NodeContext) -> None:
        ctx.state["conn"] = "open"
        events.append(f"initialize {ctx.name} {sorted(ctx.inputs)}")

    def finalize(ctx: NodeContext) -> None:
        events.append(f"finalize result={ctx.result} runs={len(ctx.runs)}")

    def cleanup(ctx: NodeContext) -> None:
        events.append(f"cleanup {ctx.state['conn']} error={ctx.error}")

    @task
    async def work(source: int) -> int:
        events.append("run")
        return source * 5

    node = Node(work, input_deps=["source"], initialize=initialize, finalize=finalize,
                cleanup=cleanup)  # fmt: skip
    async with manager() as m:
        result = await DAG([Node(source), node]).run(m)
    assert result["work"] == 5
    assert events == [
        "initialize work ['source']", "run", "finalize result=5 runs=1", "cleanup open error=None",
    ]  # fmt: skip


async def test_cleanup_runs_on_error_and_the_failure_is_raised_after_it() -> None:
    events: list[str] = []
    downstream_ran: list[bool] = []

    @task
    async def bad() -> int:
        raise KeyError("gone")

    @task
    async def after(bad: int) -> int:
        downstream_ran.append(True)
        return bad

    def cleanup(ctx: NodeContext) -> None:
        assert isinstance(ctx.error, TaskFailedError)
        events.append(f"cleanup {ctx.error.type_name}")

    node = Node(bad, initialize=lambda ctx: events.append("initialize"),
                finalize=lambda ctx: events.append("finalize"), cleanup=cleanup)  # fmt: skip
    async with manager() as m:
        with pytest.raises(TaskFailedError) as info:
            await DAG([node, Node(after, input_deps=[node])]).run(m)
    assert info.value.type_name == "KeyError" and info.value.message == "'gone'"
    assert events == ["initialize", "cleanup KeyError"]
    assert downstream_ran == []
    assert any("DAG node 'bad'" in note for note in info.value.__notes__)


async def test_a_failing_node_stops_the_others_and_cleans_them_up() -> None:
    cleaned: list[str] = []
    never = asyncio.Event()

    @task
    async def slow() -> int:
        await never.wait()
        return 0

    @task
    async def failing() -> int:
        raise RuntimeError("boom")

    nodes = [
        Node(slow, cleanup=lambda ctx: cleaned.append(f"slow {type(ctx.error).__name__}")),
        Node(failing, cleanup=lambda ctx: cleaned.append("failing")),
    ]
    async with manager() as m:
        with pytest.raises(TaskFailedError, match="boom"):
            await asyncio.wait_for(DAG(nodes).run(m), BOUND)
        [slow_run] = await m.runs(task="slow")
    assert sorted(cleaned) == ["failing", "slow CancelledError"]
    assert slow_run.state is TaskState.aborted


async def test_cleanup_runs_on_task_timeout() -> None:
    cleaned: list[str] = []
    never = asyncio.Event()

    @task(timeout_seconds=0.05)
    async def stuck() -> int:
        await never.wait()
        return 0

    node = Node(stuck, cleanup=lambda ctx: cleaned.append(type(ctx.error).__name__))
    async with manager() as m:
        with pytest.raises(TaskFailedError) as info:
            await DAG([node]).run(m)
    assert info.value.type_name == "TaskTimeoutError"
    assert cleaned == ["TaskFailedError"]


async def test_dag_timeout_cleans_up_and_raises_task_timeout_error() -> None:
    cleaned: list[str] = []
    never = asyncio.Event()

    @task
    async def stuck() -> int:
        await never.wait()
        return 0

    async def cleanup(ctx: NodeContext) -> None:
        await asyncio.sleep(0)  # an async cleanup still runs to the end while cancelled
        cleaned.append(type(ctx.error).__name__)

    async with manager() as m:
        with pytest.raises(TaskTimeoutError):
            await DAG([Node(stuck, cleanup=cleanup)]).run(m, timeout=0.05)
        [run] = await m.runs(task="stuck")
    assert cleaned == ["CancelledError"]
    assert run.state is TaskState.aborted


async def test_a_failing_cleanup_fails_a_successful_node() -> None:
    def cleanup(ctx: NodeContext) -> None:
        raise OSError("could not release")

    async with manager() as m:
        with pytest.raises(TaskFailedError) as info:
            await DAG([Node(source, cleanup=cleanup)]).run(m)
    assert info.value.type_name == "OSError"


# -- retries and fault injection --------------------------------------------------------------------
async def test_node_retry_policy_recovers_a_flaky_task() -> None:
    calls = 0

    @task
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("try again")
        return "ok"

    async with manager() as m:
        result = await DAG([Node(flaky, retry=RetryPolicy(max_attempts=3, wait=0))]).run(m)
    assert result["flaky"] == "ok"
    metrics = result.metrics["flaky"]
    assert metrics.attempts == 3 and metrics.failures == 2 and metrics.injected_faults == 0


@task
async def part(partition: int) -> int:
    return partition * partition


def faulty_dag() -> DAG:
    retry = RetryPolicy(max_attempts=30, wait=0)
    node = Node(part, partitions=8, retry=retry)
    return DAG([node, Node(sink_list, input_deps=[node], retry=retry)])


@task
async def sink_list(part: list[int]) -> int:
    return sum(part)


async def failure_pattern(m: TaskManager, dag_id: str) -> list[tuple[int, int]]:
    """(partition, failed attempts) of every run of the `part` node."""
    runs = [r for r in await dag_runs(m, dag_id) if r.task == "part"]
    return sorted(
        (r.params["partition"], sum(a.state is TaskState.failure for a in r.attempts)) for r in runs
    )


async def test_fault_injection_is_reproducible_by_seed_and_recovered_by_retries() -> None:
    async with manager() as m:
        first = await faulty_dag().run(m, fail_prob=0.5, seed=42)
        again = await faulty_dag().run(m, fail_prob=0.5, seed=42)
        other = await faulty_dag().run(m, fail_prob=0.5, seed=7)
        patterns = [await failure_pattern(m, r.dag_id) for r in (first, again, other)]
    for result in (first, again, other):
        assert result["part"] == [p * p for p in range(8)]
        assert result["sink_list"] == sum(p * p for p in range(8))
    assert first.metrics["part"].injected_faults > 0
    assert first.metrics["part"].injected_faults == first.metrics["part"].failures
    assert patterns[0] == patterns[1]
    assert patterns[0] != patterns[2]
    assert first.metrics["part"].attempts == again.metrics["part"].attempts


async def test_fault_injection_without_retries_fails_the_node() -> None:
    async with manager() as m:
        with pytest.raises(TaskFailedError) as info:
            await DAG([Node(part, partitions=8)]).run(m, fail_prob=0.9, seed=1)
    assert info.value.type_name == InjectedFaultError.__name__


async def test_an_unseeded_run_reports_its_seed_for_replaying() -> None:
    async with manager() as m:
        first = await faulty_dag().run(m, fail_prob=0.4)
        again = await faulty_dag().run(m, fail_prob=0.4, seed=first.seed)
        assert await failure_pattern(m, first.dag_id) == await failure_pattern(m, again.dag_id)


async def test_bad_options_are_rejected() -> None:
    async with manager() as m:
        with pytest.raises(ConfigError):
            await faulty_dag().run(m, fail_prob=1.0)
        with pytest.raises(ConfigError):
            await faulty_dag().run(m, speculation_quantile=0.0)


# -- speculation ------------------------------------------------------------------------------------
def straggler_task(calls: Counter[int], fast_done: asyncio.Event, never: asyncio.Event) -> Task:
    @task
    async def shard(partition: int) -> int:
        calls[partition] += 1
        if partition == 3 and calls[3] == 1:
            await never.wait()  # the first copy of partition 3 never finishes by itself
        if sum(calls[p] for p in range(3)) == 3:
            fast_done.set()
        return partition + 100

    return shard


async def test_speculation_relaunches_a_straggler_and_the_first_result_wins() -> None:
    clock = FakeClock()
    calls: Counter[int] = Counter()
    fast_done, never = asyncio.Event(), asyncio.Event()
    shard = straggler_task(calls, fast_done, never)
    async with manager(clock=clock) as m:
        running = asyncio.create_task(
            DAG([Node(shard, partitions=4)]).run(
                m, speculation_quantile=0.75, speculation_min_seconds=5.0,
                speculation_interval=0.01,
            )
        )  # fmt: skip
        await asyncio.wait_for(fast_done.wait(), BOUND)
        assert calls[3] == 1  # below the 5 s floor nothing is relaunched

        async def straggle() -> None:
            # partition 3 falls 10 s further behind until it is relaunched (its siblings'
            # times are taken once their records are written, a loop turn or more after
            # `fast_done`, so the first step may count for them too)
            while calls[3] < 2:
                clock.advance(10.0)
                await asyncio.sleep(0.01)

        await asyncio.wait_for(straggle(), BOUND)
        result = await asyncio.wait_for(running, BOUND)
        shard_runs = [r for r in await dag_runs(m, result.dag_id) if r.params["partition"] == 3]
    assert result["shard"] == [100, 101, 102, 103]
    assert calls == Counter({0: 1, 1: 1, 2: 1, 3: 2})
    metrics = result.metrics["shard"]
    assert metrics.speculative == 1 and metrics.speculative_wins == 1 and metrics.runs == 5
    states = sorted(r.state for r in shard_runs)
    assert states == [TaskState.aborted, TaskState.success]
    [loser] = [r for r in shard_runs if r.state is TaskState.aborted]
    assert loser.error is not None and "speculative" in loser.error["message"]


async def test_a_node_can_opt_out_of_speculation() -> None:
    clock = FakeClock()
    calls: Counter[int] = Counter()
    fast_done, release = asyncio.Event(), asyncio.Event()
    shard = straggler_task(calls, fast_done, release)
    async with manager(clock=clock) as m:
        running = asyncio.create_task(
            DAG([Node(shard, partitions=4, speculative=False)]).run(
                m, speculation_min_seconds=5.0, speculation_interval=0.01
            )
        )
        await asyncio.wait_for(fast_done.wait(), BOUND)
        clock.advance(10.0)
        release.set()
        result = await asyncio.wait_for(running, BOUND)
    assert calls[3] == 1 and result.metrics["shard"].speculative == 0


# -- inside a task ----------------------------------------------------------------------------------
async def test_a_dag_run_inside_a_task_records_its_runs_as_children() -> None:
    @task
    async def pipeline(ctx: TaskRun) -> int:
        result = await DAG([Node(source), Node(sink, input_deps=["source"])]).run(ctx.manager)
        return int(result["sink"])

    async with manager() as m:
        m.register_task(pipeline)
        run = await m.execute("pipeline")
        children = await m.runs(parent_id=run.id)
    assert run.result == 2
    assert sorted(c.task for c in children) == ["sink", "source"]
    assert {c.root_run_id for c in children} == {run.id}


async def test_the_executor_sees_the_node_limits() -> None:
    seen: list[Resources | None] = []

    class Recording(InlineExecutor):
        async def execute(
            self,
            task: Task,
            run: TaskRun,
            kwargs: dict[str, Any],
            timeout: float | None,
            env: RunEnv,
        ) -> Any:
            seen.append(task.resources)
            return await super().execute(task, run, kwargs, timeout, env)

    async with manager(executors={"inline": Recording()}) as m:
        await DAG([Node(source, cpu_limit="500m", memory_limit="1Gi")]).run(m)
    assert seen == [Resources(cpu="500m", memory="1Gi")]


async def test_a_faulty_partitioned_dag_on_every_store(store: Store) -> None:
    m = TaskManager(store)
    result = await faulty_dag().run(m, fail_prob=0.3, seed=3)
    assert result["sink_list"] == sum(p * p for p in range(8))
    runs = await dag_runs(m, result.dag_id)
    assert len(runs) == 9 and all(r.state is TaskState.success for r in runs)
    assert result.metrics["part"].injected_faults == sum(
        n for _, n in await failure_pattern(m, result.dag_id)
    )
