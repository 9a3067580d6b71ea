"""The process executor: a warm pool of spawned children running cpu_bound tasks."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskloom import (
    ConfigError,
    Secret,
    TaskManager,
    TaskRun,
    TaskState,
    is_in_cpu_process,
    task,
)
from taskloom.executors.process import ProcessExecutor, describe_exit
from taskloom.testing import run_burst

from . import proc_tasks as pt

SECRET_ENV = "PROC_TASKS_SECRET"


@task(secrets=[Secret("proc-token", env_var=SECRET_ENV)])
def thread_secret(ctx: TaskRun) -> bool:
    """Sync, so it runs on the thread executor."""
    return ctx.secrets["proc-token"] == os.environ[SECRET_ENV]


@task(secrets=[Secret("proc-token", env_var=SECRET_ENV)])
async def inline_secret(ctx: TaskRun) -> bool:
    """Async, so it runs inline."""
    return ctx.secrets["proc-token"] == os.environ[SECRET_ENV]


TASKS = [
    pt.where, pt.square, pt.sleeper, pt.crash, pt.flaky, pt.hog, pt.allocate, pt.affinity,
    pt.uses_secret, pt.raises, pt.aborts, pt.progress, pt.blocker, pt.async_square, pt.needs_absent_secret,
    pt.chatty,
    thread_secret,
    inline_secret,
]  # fmt: skip


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret value in the environment before the pool starts (children inherit it)."""
    value = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_ENV, value)
    return value


@pytest.fixture
def pool() -> ProcessExecutor:
    return ProcessExecutor(size=2, kill_grace=0.2)


@pytest.fixture
async def manager(pool: ProcessExecutor, secret: str) -> AsyncIterator[TaskManager]:
    async with TaskManager("memory://", tasks=TASKS, executors={"process": pool}) as m:
        yield m


def proc_bytes(pid: int, name: str) -> bytes:
    """`/proc/<pid>/<name>` (cmdline, environ) as the kernel shows it to anyone."""
    return Path(f"/proc/{pid}/{name}").read_bytes()


def gone(pid: int) -> bool:
    """True once `pid` has exited and been reaped (no zombie left behind)."""
    return not Path(f"/proc/{pid}").exists()


async def test_runs_in_a_warm_child_with_task_env(
    manager: TaskManager, pool: ProcessExecutor
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    run = await manager.execute("where", token=token)
    assert run.state is TaskState.success, run.error
    info = run.result
    assert info["pid"] != os.getpid() and info["pid"] in pool.pids
    assert info["mode"] == "fast" and info["cpu_process"] is True
    assert info["run_id"] == run.id
    assert not is_in_cpu_process() and "PROC_TASKS_MODE" not in os.environ
    # params travel over the pipe: not in argv or the environment, seen from inside...
    assert info["token_in_cmdline"] is False and info["token_in_environ"] is False
    # ...and from outside, while the child waits warm for the next run
    for name in ("cmdline", "environ"):
        assert token.encode() not in proc_bytes(info["pid"], name)
    again = await manager.execute("where")
    assert again.result["pid"] == info["pid"]  # warm: the same child serves the next run


async def test_timeout_kills_the_child_and_the_next_run_succeeds(
    manager: TaskManager, pool: ProcessExecutor, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    run = await manager.execute("sleeper", marker=str(marker))
    assert run.state is TaskState.failure
    assert run.error is not None and run.error["type"] == "TaskTimeoutError"
    pid = int(marker.read_text())
    assert gone(pid) and pid not in pool.pids
    nxt = await manager.execute("square", n=7)
    assert nxt.state is TaskState.success and nxt.result == 49


@pytest.mark.parametrize(
    ("how", "words"), [("exit", "exited with code 3"), ("segv", "killed by SIGSEGV")]
)
async def test_a_crashing_child_fails_the_run_and_the_pool_recovers(
    manager: TaskManager, pool: ProcessExecutor, how: str, words: str
) -> None:
    before = set(pool.pids)
    run = await manager.execute("crash", how=how)
    assert run.state is TaskState.failure and run.error is not None
    assert run.error["type"] == "ProcessDiedError"
    assert words in run.error["message"] and "'crash'" in run.error["message"]
    assert len(pool.pids) == 2 and set(pool.pids) != before  # replaced, still full
    nxt = await manager.execute("square", n=3)
    assert nxt.state is TaskState.success and nxt.result == 9


async def test_a_retried_run_succeeds_on_its_second_attempt(
    manager: TaskManager, tmp_path: Path
) -> None:
    run = await manager.execute("flaky", marker=str(tmp_path / "first"))
    assert run.state is TaskState.success, run.error
    assert run.retry_attempt == 1
    assert [a.state for a in run.attempts] == [TaskState.failure, TaskState.success]
    first = run.attempts[0].error
    assert first is not None and first["type"] == "ProcessDiedError"
    assert "exited with code 7" in first["message"]


async def test_memory_limit_is_enforced_and_restored(manager: TaskManager) -> None:
    run = await manager.execute("hog", factor=2.0)
    assert run.state is TaskState.failure and run.error is not None
    assert run.error["type"] == "OutOfMemoryError"
    small = await manager.execute("hog", factor=0.1)
    assert small.state is TaskState.success, small.error
    # the limit is lifted after the run: the same warm child may now allocate that much
    big = await manager.execute("allocate", nbytes=int(small.result) * 20)
    assert big.state is TaskState.success, big.error


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least two cores")
async def test_cpu_limit_pins_the_run_to_ceil_cpu_cores(manager: TaskManager) -> None:
    run = await manager.execute("affinity")
    assert run.state is TaskState.success, run.error
    assert len(run.result) == 1 and set(run.result) <= os.sched_getaffinity(0)


async def test_secrets_reach_the_function_but_not_the_record(
    manager: TaskManager, pool: ProcessExecutor, secret: str
) -> None:
    for name in ("uses_secret", "thread_secret", "inline_secret"):
        run = await manager.execute(name)
        assert run.state is TaskState.success and run.result is True, (name, run.error)
        stored = await manager.get_run(run.id)
        assert secret not in stored.model_dump_json()
        assert secret not in run.model_dump_json()
    for pid in pool.pids:
        assert secret.encode() not in proc_bytes(pid, "cmdline")


async def test_a_missing_secret_fails_the_run_naming_it(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    run = await manager.execute("thread_secret")
    assert run.state is TaskState.failure and run.error is not None
    assert run.error["type"] == "ConfigError" and SECRET_ENV in run.error["message"]


async def test_a_missing_secret_in_the_child_is_a_config_error_not_retried(
    manager: TaskManager,
) -> None:
    run = await manager.execute("needs_absent_secret")
    assert run.state is TaskState.failure and run.error is not None
    assert run.error["type"] == "ConfigError" and "PROC_TASKS_ABSENT" in run.error["message"]
    assert len(run.attempts) == 1  # retry=2, but a configuration error is not retried


async def test_task_errors_keep_their_type_and_traceback(manager: TaskManager) -> None:
    run = await manager.execute("raises", message="bad input")
    assert run.state is TaskState.failure and run.error is not None
    assert run.error["type"] == "ValueError" and run.error["message"] == "bad input"
    assert "proc_tasks.py" in run.error["traceback"]
    aborted = await manager.execute("aborts")
    assert aborted.state is TaskState.aborted  # ctx.abort in the child aborts the run


async def test_progress_from_the_child_reaches_the_run(manager: TaskManager) -> None:
    run = await manager.execute("progress")
    assert run.state is TaskState.success and run.result == "done"
    assert run.progress == 1.0 and run.progress_note == "almost"


async def test_cancelling_the_caller_kills_the_child(
    manager: TaskManager, pool: ProcessExecutor
) -> None:
    started = asyncio.Event()
    run = TaskRun(task="blocker")
    env = manager.lifecycle.run_env(run)
    run._on_progress = lambda _run: started.set()
    running = asyncio.create_task(pool.execute(pt.blocker, run, {}, None, env))
    await asyncio.wait_for(started.wait(), 30)
    busy = set(pool.pids)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    killed = busy - set(pool.pids)
    assert len(killed) == 1 and gone(killed.pop())
    nxt = await manager.execute("square", n=2)
    assert nxt.state is TaskState.success and nxt.result == 4


async def test_consumer_burst_runs_cpu_bound_tasks(manager: TaskManager) -> None:
    for n in range(6):
        await manager.queue("square", n=n)
        await manager.queue("async_square", n=n + 10)
    finished = await run_burst(manager, max_concurrent_tasks=4)
    assert sorted(r.result for r in finished if r.task == "square") == [n * n for n in range(6)]
    assert sorted(r.result for r in finished if r.task == "async_square") == [
        n * n for n in range(10, 16)
    ]


async def test_forkserver_start_method(secret: str) -> None:
    pool = ProcessExecutor(size=1, start_method="forkserver")
    async with TaskManager("memory://", tasks=TASKS, executors={"process": pool}) as m:
        run = await m.execute("where")
    assert run.state is TaskState.success and run.result["cpu_process"] is True


async def test_max_tasks_per_child_retires_children(secret: str) -> None:
    pool = ProcessExecutor(size=1, max_tasks_per_child=2)
    async with TaskManager("memory://", tasks=TASKS, executors={"process": pool}) as m:
        pids = [(await m.execute("where")).result["pid"] for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]
    assert pool.pids == [] and all(gone(p) for p in set(pids))


async def test_tasks_that_cannot_be_imported_fail_with_config_error(
    manager: TaskManager,
) -> None:
    @task(cpu_bound=True)
    def nested() -> int:
        return 1

    def scripted() -> int:
        return 2

    scripted.__module__ = "__main__"
    manager.register_task(nested)
    manager.register_task(task(scripted, cpu_bound=True))
    for name in ("nested", "scripted"):
        run = await manager.execute(name)
        assert run.state is TaskState.failure and run.error is not None
        assert run.error["type"] == "ConfigError" and repr(name) in run.error["message"]


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="start_method"):
        ProcessExecutor(start_method="fork")
    with pytest.raises(ConfigError, match="size"):
        ProcessExecutor(size=0)


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-11) == "was killed by SIGSEGV"
    assert "out of memory" in describe_exit(-9)


async def test_records_logged_in_the_child_are_kept_with_the_run(
    manager: TaskManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    run = await manager.execute("chatty")
    assert run.state is TaskState.success and run.result != os.getpid()
    logs = await manager.run_logs(run.id)
    assert [(r["level"], r["logger"], r["message"]) for r in logs] == [
        ("INFO", "taskloom.task.chatty", f"in the child [pid {run.result}]"),
        ("WARNING", pt.__name__, "module logger in the child"),
    ]
    # the worker's own handlers see them too, with the run id
    ours = [r for r in caplog.records if r.name == pt.__name__]
    assert [getattr(r, "run_id", None) for r in ours] == [run.id]
