"""One unreadable record never stops the queue, a listing, the CLI or the API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from taskloom import CorruptRecordError, TaskManager, TaskState, task
from taskloom.cli import app
from taskloom.testing import run_burst

from ..raw_records import Damage, damage_record

ROOT = Path(__file__).resolve().parents[2]


@task
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.parametrize("how", ["broken", "wrong_shape"])
async def test_a_worker_fails_the_unreadable_run_and_serves_the_rest(
    tmp_path: Path, how: Damage
) -> None:
    async with TaskManager(f"sqlite:///{tmp_path}/q.db", tasks=[add]) as m:
        runs = [await m.queue("add", a=i) for i in range(5)]
        bad = runs[2]
        await damage_record(m.store, bad.id, how)
        with pytest.raises(CorruptRecordError, match=bad.id):
            await m.get_run(bad.id)
        listed = [r.id for r in await m.runs(limit=10)]
        assert bad.id in listed and len(listed) == 5
        await run_burst(m, check=False)
        final = {r.id: r for r in await m.runs(limit=10)}
    for run in runs:
        if run.id == bad.id:
            assert final[run.id].state is TaskState.failure
            failure = final[run.id].failure
            assert failure is not None and failure.type_name == "CorruptRecordError"
            assert "could not be read" in failure.message
        else:
            assert final[run.id].state is TaskState.success


async def test_api_lists_an_unreadable_run(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from taskloom.api import create_app

    async with TaskManager(f"sqlite:///{tmp_path}/api.db", tasks=[add]) as m:
        good = await m.queue("add", a=1)
        bad = await m.queue("add", a=2)
        await damage_record(m.store, bad.id, "broken")
        transport = httpx.ASGITransport(app=create_app(m))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            listing = await client.get("/api/runs")
            detail = await client.get(f"/api/runs/{bad.id}")
    assert listing.status_code == 200
    assert {r["id"] for r in listing.json()["runs"]} == {good.id, bad.id}
    assert detail.status_code == 500 and bad.id in detail.json()["detail"]


def test_cli_lists_an_unreadable_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"

    async def prepare() -> tuple[str, str]:
        async with TaskManager(url, tasks=[add]) as m:
            good = await m.queue("add", a=1)
            bad = await m.queue("add", a=2)
            await damage_record(m.store, bad.id, "broken")
            return good.id, bad.id

    good, bad = asyncio.run(prepare())
    monkeypatch.setenv("TASKLOOM_STORE", url)
    monkeypatch.setenv("TASKLOOM_APP", "tests.apps.cli_app:make")
    monkeypatch.chdir(ROOT)
    cli = CliRunner(env={"COLUMNS": "200"})
    out = cli.invoke(app, ["runs"])
    assert out.exit_code == 0, out.output
    listed = cli.invoke(app, ["runs", "--json"])
    assert {r["id"] for r in json.loads(listed.output)} == {good, bad}
    shown = cli.invoke(app, ["show", bad])
    assert shown.exit_code != 0 and bad in shown.output
    assert "Traceback" not in shown.output
