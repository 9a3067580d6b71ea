"""The Ray executor and `run_on_ray`, against one local Ray (num_cpus=1) for the module."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import TaskFailedError, TaskManager, TaskState, task
from taskloom.executors.ray import init_options, ray_options

from . import ray_tasks as rt

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'taskloom[ray]')")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the whole module; RayExecutor finds it running and leaves it up."""
    # A one-node Ray binds loopback only: without this it announces the host's outward address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)


def wait_exit(pid: int, timeout: float) -> bool:
    """Block until `pid` (not our child) exits, via a pidfd: no polling loop."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


TASKS = [rt.describe, rt.assigned, rt.stall, rt.fails, rt.plain]


async def test_round_trip_with_env_and_errors() -> None:
    async with TaskManager("memory://", tasks=TASKS) as m:
        run = await m.execute("describe", n=21)
        assert run.state is TaskState.success, run.error
        assert run.result["double"] == 42 and run.result["mode"] == "ray"
        assert run.result["pid"] != os.getpid() and run.result["run_id"] == run.id
        failed = await m.execute("fails", message="gone")
        assert failed.state is TaskState.failure and failed.error is not None
        assert failed.error["type"] == "KeyError" and "ray_tasks.py" in failed.error["traceback"]


async def test_default_executor_ray_and_resources_mapping() -> None:
    assert ray_options(rt.assigned) == {
        "max_retries": 0, "num_cpus": 0.5, "memory": 64 * 1024**2,
    }  # fmt: skip
    assert ray_options(rt.describe)["runtime_env"] == {"env_vars": {"RAY_TASKS_MODE": "ray"}}
    async with TaskManager("memory://", tasks=TASKS, default_executor="ray") as m:
        granted = await m.execute("assigned")
        assert granted.state is TaskState.success, granted.error
        assert granted.result == {"CPU": 0.5, "memory": 64 * 1024**2}
        elsewhere = await m.execute("plain")
        assert elsewhere.state is TaskState.success and elsewhere.result != os.getpid()


async def test_timeout_cancels_the_ray_task(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    async with TaskManager("memory://", tasks=TASKS) as m:
        warm = await m.execute("stall", marker=str(marker), seconds=0)  # a worker is up
        assert warm.state is TaskState.success, warm.error
        run = await m.execute("stall", marker=str(marker))
        assert run.state is TaskState.failure and run.error is not None
        assert run.error["type"] == "TaskTimeoutError"
        assert wait_exit(int(marker.read_text()), 30), "force-cancel did not kill the worker"
        nxt = await m.execute("describe", n=1)
        assert nxt.state is TaskState.success and nxt.result["double"] == 2


def test_run_on_ray_returns_the_result() -> None:
    assert rt.describe.run_on_ray(n=5)["double"] == 10

    @task
    def closure(x: int) -> int:  # not importable by name: shipped by value
        return x + 100

    assert closure.run_on_ray(5) == 105
    with pytest.raises(TaskFailedError) as err:
        rt.fails.run_on_ray("nope")
    assert err.value.type_name == "KeyError"


def test_init_options() -> None:
    local = init_options(None, {"num_cpus": 2})
    assert local["num_cpus"] == 2 and local["include_dashboard"] is False
    remote = init_options("ray://head:10001", None)
    assert remote["address"] == "ray://head:10001" and "num_cpus" not in remote
