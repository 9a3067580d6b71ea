"""@task, Task, the typed interface, local calls."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import BaseModel, SecretStr

from taskloom import (
    Cache,
    ConfigError,
    InvalidParamsError,
    K8sConfig,
    PayloadTooLargeError,
    Resources,
    ResultEncodingError,
    RetryPolicy,
    ScheduleError,
    Secret,
    Task,
    TaskEnvironment,
    TaskPriority,
    TaskRun,
    Trigger,
    crontab,
    every,
    is_in_cpu_process,
    task,
)


@task
async def hello(ctx: TaskRun) -> None:
    """Say hello.

    A longer description.
    """


def test_bare_decorator_takes_name_and_docstring() -> None:
    assert isinstance(hello, Task)
    assert hello.name == "hello"
    assert hello.short_description == "Say hello."
    assert hello.description.startswith("Say hello.\n\nA longer")
    assert hello.interface.takes_context and hello.interface.input_names == ()
    assert hello.retry is None and hello.attempts.max_attempts == 1
    assert hello.max_concurrency == 0 and hello.priority is TaskPriority.medium


def test_every_fluid_keyword() -> None:
    k8s = K8sConfig(namespace="w", deployment="d", container="c", job_ttl=600, sleep=1.0)
    policy = RetryPolicy(max_attempts=5, wait=1.0, backoff=2.0, max_wait=60, jitter=0.5)
    rl = RetryPolicy(max_attempts=10, wait=0.5)

    @task(
        name="refresh", schedule=every(timedelta(minutes=5)), short_description="short",
        description="long", randomize=3, max_concurrency=1, priority=TaskPriority.high,
        cpu_bound=True, k8s_config=k8s, timeout_seconds=30, tags=["etl"], retry=policy,
        rate_limit_retry=rl, env={"MODE": "fast"},
    )  # fmt: skip
    def fn(ctx: TaskRun) -> None: ...

    assert fn.name == "refresh" and fn.short_description == "short" and fn.description == "long"
    assert str(fn.schedule) == "every 0:05:00" and fn.randomize == 3
    assert fn.max_concurrency == 1 and fn.priority is TaskPriority.high and fn.cpu_bound
    assert fn.k8s_config == k8s and fn.timeout_seconds == 30 and fn.tags == ("etl",)
    assert fn.retry is policy and fn.rate_limit_retry is rl and fn.env == {"MODE": "fast"}
    assert fn.executor_name() == "process" and fn.executor_name(in_cluster=True) == "kubernetes"


def test_every_flyte_keyword() -> None:
    trig = Trigger("nightly", crontab("0 2 * * *"), {"n": 1})

    @task(
        resources=Resources(cpu="1", memory="1Gi"), cache="auto", secrets=["api-key"],
        queue="gpu", image="my_image", pod_template={"spec": {}}, interruptible=True,
        max_inline_io_bytes=1000, triggers=[trig], report=True, reusable="off",
        retries=2, timeout=timedelta(seconds=9), env_vars={"A": "1"},
    )  # fmt: skip
    def fn(n: int) -> int:
        return n

    assert fn.resources == Resources(cpu="1", memory="1Gi")
    assert fn.resources is not None and fn.resources.memory_bytes == 1024**3
    assert fn.cache == Cache() and fn.secrets == (Secret("api-key"),) and fn.queue == "gpu"
    assert fn.image == "my_image" and fn.pod_template == {"spec": {}} and fn.interruptible
    assert fn.max_inline_io_bytes == 1000 and fn.triggers == (trig,) and fn.report
    assert fn.reusable is None and fn.retry == RetryPolicy.from_retries(2)
    assert fn.retry is not None and fn.retry.max_attempts == 3
    assert fn.timeout_seconds == 9 and fn.env == {"A": "1"}


def test_retry_int_means_retries() -> None:
    assert RetryPolicy.from_retries(3).max_attempts == 4
    with pytest.raises(ConfigError):
        task(retry="x")(lambda: None)  # type: ignore[call-overload]


def test_retry_policy_delay() -> None:
    p = RetryPolicy(max_attempts=None, wait=1.0, backoff=2.0, max_wait=5.0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(wait=1.0, backoff=1.0, max_wait=10, jitter=0.5)
    assert all(1.0 <= jittered.delay(1) <= 1.5 for _ in range(50))
    assert p.allows(1000) and not RetryPolicy(max_attempts=2).allows(2)
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_override_returns_new_task_and_refuses_name() -> None:
    other = hello.override(priority="high", timeout=5, retries=1)
    assert other is not hello and other.priority is TaskPriority.high
    assert other.timeout_seconds == 5 and hello.timeout_seconds is None
    assert other.retry is not None and other.retry.max_attempts == 2
    for fixed in ("name", "fn", "interface"):
        with pytest.raises(ConfigError, match=fixed):
            hello.override(**{fixed: None})
    with pytest.raises(ConfigError, match="unknown task option"):
        hello.override(colour="red")


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        hello.name = "x"  # type: ignore[misc]


def test_info() -> None:
    info = hello.info()
    assert info.name == "hello" and info.executor == "inline"
    assert info.model_dump(mode="json")["priority"] == "medium"


class Point(BaseModel):
    x: int
    y: int


@task
def scale(p: Point, factor: float = 2.0) -> Point:
    """Scale a point."""
    return Point(x=int(p.x * factor), y=int(p.y * factor))


def test_direct_call_runs_locally_with_validation() -> None:
    assert scale({"x": 1, "y": 2}) == Point(x=2, y=4)
    assert scale(Point(x=1, y=1), factor=3) == Point(x=3, y=3)
    with pytest.raises(InvalidParamsError, match="p.x") as info:
        scale({"x": "nope", "y": 1})
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidParamsError, match="p: Field required"):
        scale()
    with pytest.raises(InvalidParamsError, match="bogus: Extra inputs"):
        scale({"x": 1, "y": 1}, bogus=1)


@task
async def double(n: int) -> int:
    return n * 2


def test_async_task_called_without_a_loop_returns_result() -> None:
    assert double(4) == 8


async def test_aio_for_sync_and_async() -> None:
    assert await double.aio(5) == 10
    assert await scale.aio({"x": 2, "y": 2}) == Point(x=4, y=4)
    assert await double(1) == 2  # inside a loop, calling an async task gives an awaitable


async def test_payload_too_large_before_running() -> None:
    calls = []

    @task(max_inline_io_bytes=100)
    def big(data: str) -> str:
        calls.append(1)
        return data * 100

    with pytest.raises(PayloadTooLargeError, match="input"):
        big("x" * 200)
    assert calls == []
    with pytest.raises(PayloadTooLargeError, match="output"):
        big("abc")


def test_unencodable_result() -> None:
    @task
    def bad() -> object:
        return object()

    with pytest.raises(ResultEncodingError, match="cannot be encoded"):
        bad()


def test_secret_params_left_out_of_stored_params() -> None:
    @task
    def login(user: str, password: SecretStr) -> str:
        return user

    model = login.prepare((), {"user": "u", "password": "hunter2"})
    assert login.interface.stored_params(model) == {"user": "u"}


def test_secret_resolution(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("API_KEY", "k1")
    assert Secret("api-key").resolve() == "k1"
    f = tmp_path / "tok"
    f.write_text("t0\n")
    assert Secret("tok", file=str(f)).resolve() == "t0"
    with pytest.raises(ConfigError, match="MISSING"):
        Secret("missing").resolve()


def test_schedules_validate() -> None:
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        crontab("61 * * * *")
    with pytest.raises(ScheduleError, match="time zone"):
        crontab("* * * * *", tz="Mars/Olympus")
    with pytest.raises(ScheduleError):
        every(0)


def test_is_in_cpu_process(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TASK_MANAGER_SPAWN", raising=False)
    assert not is_in_cpu_process()
    monkeypatch.setenv("TASK_MANAGER_SPAWN", "true")
    assert is_in_cpu_process()


def test_k8s_config_reads_env_when_built(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TASKLOOM_K8S_NAMESPACE", "jobs")
    monkeypatch.setenv("TASKLOOM_K8S_JOB_TTL", "42")
    cfg = K8sConfig()
    assert cfg.namespace == "jobs" and cfg.job_ttl == 42 and cfg.container == "main"
    assert cfg.deployment == "taskloom-worker" and cfg.sleep == 2.0


def test_resources_validation() -> None:
    assert Resources(cpu="500m").cpu_cores == 0.5
    assert Resources(memory="512Mi").memory_bytes == 512 * 1024**2
    assert Resources(cpu="2", memory="1G", gpu=1).k8s() == {
        "cpu": "2", "memory": "1G", "nvidia.com/gpu": "1"
    }  # fmt: skip
    with pytest.raises(ConfigError):
        Resources(memory="lots")


def test_task_environment_defaults() -> None:
    env = TaskEnvironment("etl", resources=Resources(cpu="1"), queue="etl")

    @env.task
    def my_legacy_task(x: int) -> int:
        return x

    @env.task
    async def my_new_parent_task(n: int) -> list[int]:
        collect = []
        for x in range(n):
            collect.append(my_legacy_task.aio(x))
        return asyncio.gather(*collect)  # type: ignore[return-value]

    assert my_legacy_task.queue == "etl" and env.tasks == [my_legacy_task, my_new_parent_task]
    assert my_new_parent_task(3) == [0, 1, 2]


def test_pre_and_post_hooks() -> None:
    @task(pre=lambda **kw: {"n": kw["n"] + 1}, post=lambda v: v * 10)
    def inc(n: int) -> int:
        return n

    assert inc(1) == 20
