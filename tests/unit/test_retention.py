"""Retention: finished runs past their retention are purged; active runs never are."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskloom import TaskConsumer, TaskManager, TaskState, task
from taskloom.cli import app
from taskloom.retention import RetentionSweeper, parse_age, purge_expired
from taskloom.testing import FakeClock, run_burst

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0


@task
def plain(n: int = 0) -> int:
    """Kept for the manager's retention."""
    return n


@task(retention=timedelta(hours=1))
def brief(n: int = 0) -> int:
    """Kept for an hour."""
    return n


@task(retention=timedelta(0))
def forever(n: int = 0) -> int:
    """Never purged."""
    return n


TASKS = [plain, brief, forever]


async def _finish_one_of_each(m: TaskManager) -> dict[str, str]:
    ids = {name: (await m.queue(name)).id for name in ("plain", "brief", "forever")}
    await run_burst(m)
    return ids


async def _left(m: TaskManager) -> set[str]:
    return {r.task for r in await m.runs(limit=100)}


async def test_the_default_is_seven_days() -> None:
    assert TaskManager("memory://").retention == timedelta(days=7)


async def test_each_task_keeps_its_runs_for_its_own_retention() -> None:
    clock = FakeClock()
    async with TaskManager("memory://", tasks=TASKS, clock=clock) as m:
        await _finish_one_of_each(m)
        waiting = await m.queue("plain", n=1, delay=30 * DAY)  # queued, and old by then
        assert await purge_expired(m, clock()) == 0
        clock.advance(2 * 3600)
        assert await purge_expired(m, clock()) == 1
        assert await _left(m) == {"plain", "forever"}
        clock.advance(8 * DAY)
        assert await purge_expired(m, clock()) == 1
        assert await _left(m) == {"forever", "plain"}  # the queued run stays
        assert (await m.get_run(waiting.id)).state is TaskState.queued


@pytest.mark.parametrize("retention", [None, timedelta(0)])
async def test_a_manager_retention_of_none_or_zero_keeps_runs_forever(
    retention: timedelta | None,
) -> None:
    clock = FakeClock()
    async with TaskManager("memory://", tasks=TASKS, clock=clock, retention=retention) as m:
        await _finish_one_of_each(m)
        clock.advance(365 * DAY)
        assert await purge_expired(m, clock()) == 1  # only the task with its own retention
        assert await _left(m) == {"plain", "forever"}


async def test_one_sweep_per_interval_across_workers() -> None:
    clock = FakeClock()
    async with TaskManager("memory://", tasks=TASKS, clock=clock) as m:
        await _finish_one_of_each(m)
        clock.advance(2 * 3600)
        first, second = RetentionSweeper(m, "w1", 60), RetentionSweeper(m, "w2", 60)
        assert await first.sweep_once() == 1
        await m.queue("brief")
        await run_burst(m)
        clock.advance(2 * 3600 - 30)  # the old lock is gone; the first worker took it again
        assert await first.sweep_once() == 1
        clock.advance(10)
        assert await second.sweep_once() == 0  # the first worker swept 10 s ago


async def test_a_worker_purges_in_the_background(tmp_path: Path) -> None:
    clock = FakeClock()
    async with TaskManager(f"sqlite:///{tmp_path}/r.db", tasks=TASKS, clock=clock) as m:
        await _finish_one_of_each(m)
        clock.advance(8 * DAY)
        async with TaskConsumer(m) as worker:
            for _ in range(500):  # a sweep starts with the worker; wait for its outcome
                if worker.retention.purged:
                    break
                await asyncio.sleep(0.01)
        assert await _left(m) == {"forever"}
        assert worker.retention.purged == 2


def test_parse_age() -> None:
    assert parse_age("7d") == timedelta(days=7) and parse_age("90s") == timedelta(seconds=90)
    assert parse_age("1.5h") == timedelta(minutes=90) and parse_age("2w") == timedelta(days=14)


def test_cli_purge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("TASKLOOM_STORE", url)
    monkeypatch.setenv("TASKLOOM_APP", "tests.apps.cli_app:make")
    monkeypatch.chdir(ROOT)
    cli = CliRunner(env={"COLUMNS": "200"})
    for params in (["add", "a=1"], ["add", "a=2"], ["fails"]):
        assert cli.invoke(app, ["run", *params]).exit_code in (0, 1)
    assert cli.invoke(app, ["enqueue", "add", "a=3"]).exit_code == 0

    kept = cli.invoke(app, ["purge", "--older-than", "1d"])  # nothing is a day old
    assert kept.exit_code == 0 and "purged 0 runs" in kept.output
    ok = cli.invoke(app, ["purge", "--older-than", "0s", "--state", "success"])
    assert ok.exit_code == 0, ok.output
    assert "purged 2 runs" in ok.output
    rest = cli.invoke(app, ["purge", "--older-than", "0s"])
    assert "purged 1 run" in rest.output  # the failure; the queued run stays
    listed = cli.invoke(app, ["runs"])
    assert "queued" in listed.output and "success" not in listed.output

    for bad in (["--older-than", "soon"], ["--older-than", "1d", "--state", "queued"]):
        out = cli.invoke(app, ["purge", *bad])
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
