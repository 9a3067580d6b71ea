"""`report=True` (a report page per run) and `reusable` (warm processes of a task's own)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskloom import ConfigError, ReusePolicy, TaskManager, TaskRun, TaskState, task
from taskloom.report import load_report
from tests.apps import flyte_tasks

pytest.importorskip("fastapi")
from taskloom.api import create_app


@task(report=True)
async def summary(ctx: TaskRun, rows: int) -> int:
    """Reports in Markdown and HTML."""
    ctx.report(f"## Loaded {rows} rows\n\n- *fast*\n- <script>alert(1)</script>")
    ctx.report("<p class='raw'>raw <b>html</b></p>")
    return rows


@task
async def quiet(ctx: TaskRun) -> None:
    """Has no report, so it may not add to one."""
    ctx.report("nope")


@task
def plain(x: int) -> int:
    return x


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[TaskManager]:
    tasks = [summary, quiet, plain, flyte_tasks.charted, flyte_tasks.warm, flyte_tasks.short_lived]
    async with TaskManager(f"sqlite:///{tmp_path}/r.db", tasks=tasks) as m:
        yield m


async def get(manager: TaskManager, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


# -- report -----------------------------------------------------------------------------------------
async def test_report_page_renders_what_the_task_reported(manager: TaskManager) -> None:
    run = await manager.execute("summary", rows=12)
    assert run.state is TaskState.success
    page = await get(manager, f"/api/runs/{run.id}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "sandbox"
    body = page.text
    assert "<h2>Loaded 12 rows</h2>" in body and "<em>fast</em>" in body
    assert "<p class='raw'>raw <b>html</b></p>" in body
    assert "<script>" not in body  # HTML inside Markdown stays text
    assert run.id in body and "summary" in body


async def test_no_report_is_a_404_and_reporting_without_it_fails(manager: TaskManager) -> None:
    ran = await manager.execute("plain", x=1)
    assert (await get(manager, f"/api/runs/{ran.id}/report")).status_code == 404
    assert (await get(manager, "/api/runs/nope/report")).status_code == 404
    refused = await manager.execute("quiet")
    assert refused.state is TaskState.failure and refused.error is not None
    assert refused.error["type"] == "ConfigError" and "report=True" in refused.error["message"]


async def test_a_queued_report_task_renders_an_empty_page_before_it_runs(
    manager: TaskManager,
) -> None:
    run = await manager.queue("summary", rows=1)
    page = await get(manager, f"/api/runs/{run.id}/report")
    assert page.status_code == 200 and "has not reported anything yet" in page.text


async def test_report_travels_back_from_a_pool_child(manager: TaskManager) -> None:
    ok = await manager.execute("charted", points=3)
    assert ok.state is TaskState.success
    parts = await load_report(manager.store, ok.id, manager.clock())
    assert parts is not None and [p["format"] for p in parts] == ["markdown", "html"]
    page = (await get(manager, f"/api/runs/{ok.id}/report")).text
    assert "<h1>3 points</h1>" in page and "<table>" in page and "<svg" in page
    failed = await manager.execute("charted", points=-1)
    assert failed.state is TaskState.failure  # what it reported before failing is kept
    assert await load_report(manager.store, failed.id, manager.clock()) is not None


# -- reusable ---------------------------------------------------------------------------------------
async def test_reusable_task_keeps_one_warm_process_of_its_own(manager: TaskManager) -> None:
    first = await manager.execute("warm", n=1)
    second = await manager.execute("warm", n=2)
    assert first.result is not None and second.result is not None
    assert first.result["pid"] == second.result["pid"] != os.getpid()
    assert second.result["served"] == first.result["served"] + 1  # module state survived
    assert manager.executor_name(flyte_tasks.warm) == "process"
    assert (await manager.executor_for(flyte_tasks.warm)) is not (
        await manager.executor_for(flyte_tasks.short_lived)
    )


async def test_reusable_processes_stop_after_idle_ttl(manager: TaskManager) -> None:
    first = await manager.execute("short_lived", n=1)
    executor = await manager.executor_for(flyte_tasks.short_lived)
    assert first.result in executor.pids  # type: ignore[attr-defined]
    await asyncio.wait_for(executor.idled.wait(), 30)  # type: ignore[attr-defined]
    assert executor.pids == []  # type: ignore[attr-defined]
    again = await manager.execute("short_lived", n=2)
    assert again.state is TaskState.success and again.result != first.result


def test_reusable_options() -> None:
    assert task(reusable="off")(plain.fn).reusable is None
    assert task(reusable=True)(plain.fn).reusable == ReusePolicy()
    with pytest.raises(ConfigError, match="process executor"):
        task(reusable=True, executor="thread")(plain.fn)
    with pytest.raises(ConfigError, match="reusable must be"):
        task(reusable="sometimes")(plain.fn)
    with pytest.raises(ConfigError, match="replicas"):
        ReusePolicy(replicas=0)
