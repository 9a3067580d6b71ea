"""`/api/queues` and `/api/schedules` against a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskloom import TaskManager, every, task
from taskloom.api import create_app
from taskloom.api.auth import TOKEN_ENV

pytest.importorskip("fastapi")


@task(queue="mail")
async def send(to: str = "x") -> str:
    return to


@task(schedule=every(timedelta(minutes=5)))
async def tick() -> None:
    """Runs on a schedule."""


@task
async def report(day: int) -> int:
    return day


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TaskManager(f"sqlite:///{tmp_path}/api.db", tasks=[send, tick, report]) as m:
        transport = httpx.ASGITransport(app=create_app(m))
        async with httpx.AsyncClient(transport=transport, base_url="http://taskloom") as c:
            yield c


async def test_list_pause_and_resume_queues(client: httpx.AsyncClient) -> None:
    await client.post("/api/tasks/send/runs", json={"params": {"to": "a"}})
    listed = {q["name"]: q for q in (await client.get("/api/queues")).json()}
    mail = listed["mail"]
    assert mail["paused"] is False and mail["depth"] == {"high": 0, "medium": 1, "low": 0}
    assert isinstance(mail["oldest_queued_age"], float)
    assert listed["default"]["oldest_queued_age"] is None
    paused = await client.patch("/api/queues/mail", json={"paused": True})
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert {q["name"]: q["paused"] for q in (await client.get("/api/queues")).json()}["mail"]
    resumed = await client.patch("/api/queues/mail", json={"paused": False})
    assert resumed.json()["paused"] is False
    assert (await client.patch("/api/queues/mail", json={})).status_code == 422


async def test_add_list_switch_and_remove_schedules(client: httpx.AsyncClient) -> None:
    body = {"name": "nightly", "task": "report", "every": 60, "params": {"day": 1}}
    created = await client.post("/api/schedules", json=body)
    assert created.status_code == 201
    item = created.json()
    assert item["source"] == "stored" and item["enabled"] is True and item["next_fire"]
    assert item["params"] == {"day": 1} and item["last_run_id"] is None
    cron = {"name": "nine", "task": "report", "cron": "0 9 * * *", "tz": "Europe/Rome",
            "params": {"day": 2}}  # fmt: skip
    assert (await client.post("/api/schedules", json=cron)).status_code == 201
    listed = {s["name"]: s for s in (await client.get("/api/schedules")).json()}
    assert listed["tick"]["source"] == "code" and listed["nightly"]["source"] == "stored"
    assert "Europe/Rome" in listed["nine"]["schedule"]
    off = await client.patch("/api/schedules/nightly", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert off.json()["next_fire"] is None
    code_off = await client.patch("/api/schedules/tick", json={"enabled": False})
    assert code_off.status_code == 200 and code_off.json()["enabled"] is False
    assert (await client.delete("/api/schedules/nightly")).status_code == 204
    assert (await client.delete("/api/schedules/nightly")).status_code == 404
    assert (await client.patch("/api/schedules/nope", json={"enabled": True})).status_code == 404
    assert (await client.delete("/api/schedules/tick")).status_code == 409


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "a", "task": "nope", "every": 60}, "unknown task 'nope'"),
        ({"name": "a", "task": "report", "every": 60, "params": {"day": "x"}}, "invalid params"),
        ({"name": "a", "task": "report", "cron": "61 * * * *", "params": {"day": 1}}, "cron"),
        ({"name": "a", "task": "report", "params": {"day": 1}}, "exactly one of every"),
        ({"name": "tick", "task": "report", "every": 5, "params": {"day": 1}}, "in code"),
    ],
)
async def test_bad_schedules_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    resp = await client.post("/api/schedules", json=body)
    assert resp.status_code == 422
    assert says in resp.json()["detail"]
    stored = [s for s in (await client.get("/api/schedules")).json() if s["source"] == "stored"]
    assert stored == []
