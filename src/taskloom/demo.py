"""The bundled demo app: a few tasks on embedded SQLite, one of which always fails."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from .consumer import TaskConsumer
from .manager import TaskManager
from .policies import RetryPolicy
from .run import TaskRun, TaskState
from .task import Task, task


@task(tags=["demo"])
async def fetch_page(ctx: TaskRun, url: str, size: int = 2048) -> int:
    """Pretend to download a page and report its size."""
    for step in range(4):
        ctx.set_progress((step + 1) / 4)
        await asyncio.sleep(0.01)
    return size + len(url)


@task(tags=["demo"])
def checksum(data: str, rounds: int = 2000) -> str:
    """Hash a string many times (sync: runs in the thread pool)."""
    digest = data.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@task(tags=["demo"], retry=RetryPolicy(max_attempts=4, wait=0.01, backoff=2.0, max_wait=0.1))
async def flaky(ctx: TaskRun, seed: int) -> str:
    """Fail on the first attempts, then succeed: shows retries with backoff."""
    if ctx.retry_attempt < seed % 3:
        raise ConnectionError(f"upstream hiccup (attempt {ctx.retry_attempt + 1})")
    return f"ok after {ctx.retry_attempt + 1} attempt(s)"


@task(tags=["demo"])
async def broken(report: str) -> None:
    """Always fails: shows how a failure is recorded."""
    raise ValueError(f"cannot parse report {report!r}")


DEMO_TASKS: list[Task] = [fetch_page, checksum, flaky, broken]


async def run_demo(url: str, runs: int, console: Console) -> int:
    """Queue `runs` runs, serve them with a consumer, print a summary; 0 if as expected."""
    rng = random.Random(7)
    async with TaskManager(url, tasks=DEMO_TASKS, poll_interval=0.2) as manager:
        queued: list[TaskRun] = [await manager.queue("broken", report="q3.csv")]
        for i in range(max(runs - 1, 0)):
            kind = i % 3
            if kind == 0:
                queued.append(await manager.queue("fetch_page", url=f"https://example.org/{i}"))
            elif kind == 1:
                queued.append(await manager.queue("checksum", data=f"blob-{rng.random()}"))
            else:
                queued.append(await manager.queue("flaky", seed=i // 3))
        ids = [r.id for r in queued]
        columns = (TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("runs", total=len(ids))
            async with TaskConsumer(manager, max_concurrent_tasks=4, grace_seconds=5):
                done: list[TaskRun] = []
                for run_id in ids:
                    done.append(await manager.wait(run_id, timeout=60))
                    progress.update(bar, completed=len(done))
        table = Table("task", "runs", "success", "failure", "retries", "mean time")
        by_task: dict[str, list[TaskRun]] = {}
        for r in done:
            by_task.setdefault(r.task, []).append(r)
        for name, rs in sorted(by_task.items()):
            states = Counter(r.state for r in rs)
            mean = sum(r.duration or 0 for r in rs) / len(rs)
            table.add_row(
                name, str(len(rs)), f"[green]{states[TaskState.success]}",
                f"[red]{states[TaskState.failure]}", str(sum(r.retry_attempt for r in rs)),
                f"{mean * 1000:.1f} ms",
            )  # fmt: skip
        console.print(table)
        for r in done:
            if r.state is TaskState.failure and r.failure is not None:
                console.print(
                    f"[red]failed[/] {r.task} {r.id}: {r.failure.type_name}: {r.failure.message}",
                    highlight=False,
                )
        console.print(f"inspect: TASKLOOM_STORE={url} taskloom runs --app taskloom.demo:app")
        expected = all((r.state is TaskState.failure) == (r.task == "broken") for r in done)
        return 0 if expected else 1


def app() -> TaskManager:
    """The demo manager for `--app taskloom.demo:app` (reads TASKLOOM_STORE, else the demo db)."""
    import os

    return TaskManager(
        os.environ.get("TASKLOOM_STORE", "sqlite:///taskloom-demo.db"), tasks=DEMO_TASKS
    )
