"""The HTTP API against a real SQLite store, through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from taskloom import ConfigError, TaskManager, TaskRun, TaskState, every, task
from taskloom.api import create_app, serve
from taskloom.api.auth import TOKEN_ENV
from taskloom.api.server import is_loopback

pytest.importorskip("fastapi")

SECRET = "hunter2-very-SECRET-value"


@task
def add(x: int, y: int = 0) -> int:
    """Add two numbers."""
    return x + y


@task
def boom(why: str = "kaput") -> None:
    """Always fails."""
    raise ValueError(why)


@task
def login(user: str, password: SecretStr) -> str:
    """Takes a secret input."""
    return f"hello {user}" if password.get_secret_value() else "no"


@task(schedule=every(timedelta(minutes=5)))
async def tick(ctx: TaskRun) -> None:
    """Runs on a schedule."""


@task
async def parent(ctx: TaskRun, n: int = 2) -> int:
    """Calls `add` n times as child runs."""
    ctx.set_progress(0.5, "half way")
    total = 0
    for i in range(n):
        total += await add.aio(x=i)
    return total


TASKS = [add, boom, login, tick, parent]


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://taskloom")


@pytest.fixture
async def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TaskManager]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TaskManager(f"sqlite:///{tmp_path}/api.db", tasks=TASKS) as m:
        yield m


@pytest.fixture
async def client(manager: TaskManager) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(manager)) as c:
        yield c


# -- tasks ----------------------------------------------------------------------------------------


async def test_list_tasks(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/tasks")
    assert resp.status_code == 200
    tasks = {t["name"]: t for t in resp.json()}
    assert list(tasks) == sorted(t.name for t in TASKS)
    assert tasks["add"]["short_description"] == "Add two numbers."
    assert tasks["add"]["params"]["required"] == ["x"]
    assert tasks["add"]["schedule"] is None and tasks["add"]["next_fire"] is None
    assert tasks["tick"]["schedule"] is not None and tasks["tick"]["enabled"] is True
    fire = datetime.fromisoformat(tasks["tick"]["next_fire"])
    assert (
        datetime.now(UTC) - timedelta(seconds=5) < fire <= datetime.now(UTC) + timedelta(minutes=5)
    )


async def test_enable_and_disable_a_schedule(client: httpx.AsyncClient) -> None:
    off = await client.patch("/api/tasks/tick", json={"enabled": False})
    assert off.status_code == 200
    assert off.json()["enabled"] is False and off.json()["next_fire"] is None
    listed = {t["name"]: t for t in (await client.get("/api/tasks")).json()}
    assert listed["tick"]["enabled"] is False
    on = await client.patch("/api/tasks/tick", json={"enabled": True})
    assert on.json()["enabled"] is True and on.json()["next_fire"] is not None
    assert (await client.patch("/api/tasks/nope", json={"enabled": True})).status_code == 404
    bad = await client.patch("/api/tasks/tick", json={"enabled": "maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "enabled"]


# -- queueing -------------------------------------------------------------------------------------


async def test_queue_a_run(client: httpx.AsyncClient, manager: TaskManager) -> None:
    resp = await client.post("/api/tasks/add/runs", json={"params": {"x": 2}, "priority": "high"})
    assert resp.status_code == 201
    run = resp.json()
    assert run["task"] == "add" and run["state"] == "queued" and run["priority"] == "high"
    assert run["params"] == {"x": 2, "y": 0}
    assert (await manager.get_run(run["id"])).state is TaskState.queued

    default = (await client.post("/api/tasks/add/runs", json={"params": {"x": 1}})).json()
    assert default["priority"] == "medium" and default["queue"] == "default"
    later = await client.post(
        "/api/tasks/add/runs", json={"params": {"x": 1}, "delay": 60, "queue": "slow"}
    )
    body = later.json()
    due = datetime.fromisoformat(body["execute_after"]) - datetime.fromisoformat(body["queued"])
    assert body["queue"] == "slow" and abs(due.total_seconds() - 60) < 1


async def test_queue_with_dedup_key_returns_the_pending_run(client: httpx.AsyncClient) -> None:
    body = {"params": {"x": 1}, "dedup_key": "once"}
    first = (await client.post("/api/tasks/add/runs", json=body)).json()
    second = (await client.post("/api/tasks/add/runs", json=body)).json()
    assert first["id"] == second["id"]


async def test_queue_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/tasks/nope/runs", json={"params": {}})
    assert resp.status_code == 404 and resp.json()["detail"] == "unknown task 'nope'"


async def test_queue_bad_params_is_422_with_field_errors(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/api/tasks/add/runs", json={"params": {"x": "nope", "z": 1}})
    assert wrong.status_code == 422
    problem = wrong.json()
    assert problem["detail"] == "invalid params for task 'add'"
    errors = {tuple(e["loc"]): e["type"] for e in problem["errors"]}
    assert errors == {
        ("body", "params", "x"): "int_parsing",
        ("body", "params", "z"): "extra_forbidden",
    }
    missing = (await client.post("/api/tasks/add/runs", json={"params": {}})).json()
    assert missing["errors"] == [
        {"loc": ["body", "params", "x"], "msg": "Field required", "type": "missing"}
    ]
    too_big = await client.post("/api/tasks/add/runs", json={"params": {"x": 10**30}})
    assert too_big.status_code == 422 and too_big.json()["errors"][0]["type"] == "json_encoding"
    body = await client.post("/api/tasks/add/runs", json={"params": {"x": 1}, "bogus": 1})
    assert body.status_code == 422 and body.json()["errors"][0]["loc"] == ["body", "bogus"]
    delay = await client.post("/api/tasks/add/runs", json={"params": {"x": 1}, "delay": -1})
    assert delay.status_code == 422 and delay.json()["errors"][0]["loc"] == ["body", "delay"]


# -- runs -----------------------------------------------------------------------------------------


async def test_list_runs_filters(client: httpx.AsyncClient, manager: TaskManager) -> None:
    ok = await manager.execute("add", x=1)
    failed = await manager.execute("boom")
    queued = await manager.queue("add", x=3)
    other = await manager.queue("add", x=4, queue="other")

    async def ids(**query: Any) -> list[str]:
        resp = await client.get("/api/runs", params=query)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["runs"]]

    assert await ids() == [other.id, queued.id, failed.id, ok.id]
    assert await ids(task="add") == [other.id, queued.id, ok.id]
    assert await ids(state="failure") == [failed.id]
    assert await ids(state="queued", task="add") == [other.id, queued.id]
    assert await ids(queue="other") == [other.id]
    assert queued.queued is not None
    since = queued.queued.isoformat()
    assert await ids(since=since) == [other.id, queued.id]
    naive = queued.queued.replace(tzinfo=None).isoformat()  # read as UTC
    assert await ids(since=naive) == [other.id, queued.id]
    assert (await client.get("/api/runs", params={"state": "nope"})).status_code == 422
    row = (await client.get("/api/runs", params={"state": "failure"})).json()["runs"][0]
    assert row["error"] == {"type": "ValueError", "message": "kaput"}
    assert "params" not in row and "result" not in row


async def test_list_runs_pages_newest_first(
    client: httpx.AsyncClient, manager: TaskManager
) -> None:
    made = await manager.queue_many("add", [{"x": i} for i in range(7)])
    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 3}
        if cursor:
            query["cursor"] = cursor
        page = (await client.get("/api/runs", params=query)).json()
        sizes.append(len(page["runs"]))
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == sorted((r.id for r in made), reverse=True)
    exact = (await client.get("/api/runs", params={"limit": 7})).json()
    assert len(exact["runs"]) == 7 and exact["next_cursor"] is None
    assert (await client.get("/api/runs", params={"limit": 0})).status_code == 422
    assert (await client.get("/api/runs", params={"limit": 501})).status_code == 422


async def test_run_detail_with_children_progress_and_error(
    client: httpx.AsyncClient, manager: TaskManager
) -> None:
    run = await manager.execute("parent", n=2)
    assert run.state is TaskState.success
    detail = (await client.get(f"/api/runs/{run.id}")).json()
    assert detail["result"] == 1 and detail["params"] == {"n": 2}
    assert detail["progress"] == 1.0 and detail["progress_note"] == "half way"
    assert [a["state"] for a in detail["attempts"]] == ["success"]
    assert len(detail["children"]) == 2 and detail["children_next_cursor"] is None
    assert {c["task"] for c in detail["children"]} == {"add"}
    assert {c["parent_id"] for c in detail["children"]} == {run.id}
    assert "trace" not in detail

    failed = await manager.execute("boom", why="disk on fire")
    error = (await client.get(f"/api/runs/{failed.id}")).json()["error"]
    assert error["type"] == "ValueError" and error["message"] == "disk on fire"
    assert "ValueError: disk on fire" in error["traceback"]

    missing = await client.get("/api/runs/0123456789abcdef")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]


async def test_cancel(client: httpx.AsyncClient, manager: TaskManager) -> None:
    queued = await manager.queue("add", x=1)
    resp = await client.post(f"/api/runs/{queued.id}/cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "aborted"
    again = await client.post(f"/api/runs/{queued.id}/cancel")
    assert again.status_code == 200 and again.json()["state"] == "aborted"
    assert (await client.post("/api/runs/nope/cancel")).status_code == 404


async def test_retry(client: httpx.AsyncClient, manager: TaskManager) -> None:
    pending = await manager.queue("add", x=1)
    conflict = await client.post(f"/api/runs/{pending.id}/retry")
    assert conflict.status_code == 409 and "queued" in conflict.json()["detail"]
    failed = await manager.execute("boom")
    resp = await client.post(f"/api/runs/{failed.id}/retry")
    assert resp.status_code == 201
    new = resp.json()
    assert new["from_run_id"] == failed.id and new["state"] == "queued" and new["id"] != failed.id
    assert (await client.post("/api/runs/nope/retry")).status_code == 404


# -- status ---------------------------------------------------------------------------------------


async def test_stats(client: httpx.AsyncClient, manager: TaskManager) -> None:
    await manager.execute("add", x=1)
    await manager.execute("add", x=2)
    await manager.execute("boom")
    await manager.queue("add", x=3, priority="high")
    stats = (await client.get("/api/stats")).json()
    assert stats["tasks"]["add"] == {"success": 2, "queued": 1}
    assert stats["tasks"]["boom"] == {"failure": 1}
    assert stats["tasks"]["tick"] == {}
    assert stats["totals"] == {"success": 2, "queued": 1, "failure": 1}
    assert stats["queued"] == {"high": 1, "medium": 0, "low": 0}
    assert stats["counted"] == 4
    # exact over every stored run: nothing is sampled, purged runs leave the counts
    assert await manager.purge(older_than=0) == 3
    after = (await client.get("/api/stats")).json()
    assert after["counted"] == 1 and after["totals"] == {"queued": 1}


async def test_workers(client: httpx.AsyncClient, manager: TaskManager) -> None:
    assert (await client.get("/api/workers")).json() == []
    now = manager.clock()
    await manager.store.worker_beat("w1", {"pid": 7, "active": 2, "queues": None}, 30, now - 3)
    [worker] = (await client.get("/api/workers")).json()
    assert worker["worker"] == "w1" and worker["info"]["active"] == 2
    assert 3 <= worker["age_seconds"] < 60
    assert abs(datetime.fromisoformat(worker["last_seen"]).timestamp() - (now - 3)) < 0.01
    health = (await client.get("/health")).json()
    assert health == {"status": "ok", "store": "ok", "workers": 1}


async def test_health_reports_a_store_that_is_down(
    client: httpx.AsyncClient, manager: TaskManager
) -> None:
    assert (await client.get("/health")).status_code == 200
    await manager.store.close()  # the sqlite file is closed under the running app
    down = await client.get("/health")
    assert down.status_code == 503
    assert down.json() == {"status": "down", "store": "unavailable", "workers": None}
    runs = await client.get("/api/runs")
    assert runs.status_code == 503 and runs.json()["detail"].startswith("store unavailable")
    metrics = await client.get("/metrics")  # still scrapable: the counters live here
    assert metrics.status_code == 200 and "taskloom_store_up 0.0" in metrics.text


async def test_metrics_endpoint(client: httpx.AsyncClient, manager: TaskManager) -> None:
    await client.post("/api/tasks/add/runs", json={"params": {"x": 1}, "priority": "low"})
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'taskloom_runs_queued_total{priority="low",task="add"} 1.0' in text
    assert 'taskloom_queue_depth{priority="low",queue="default"} 1.0' in text
    assert "taskloom_store_up 1.0" in text


# -- auth -----------------------------------------------------------------------------------------


async def test_token_guards_every_route_but_health(manager: TaskManager) -> None:
    run = await manager.execute("add", x=1)
    routes = [
        ("GET", "/api/tasks"), ("PATCH", "/api/tasks/tick"), ("POST", "/api/tasks/add/runs"),
        ("GET", "/api/runs"), ("GET", f"/api/runs/{run.id}"),
        ("POST", f"/api/runs/{run.id}/cancel"), ("POST", f"/api/runs/{run.id}/retry"),
        ("GET", "/api/stats"), ("GET", "/api/workers"), ("GET", "/metrics"),
    ]  # fmt: skip
    bodies = {"PATCH": {"enabled": True}, "POST": {"params": {"x": 1}}}
    async with asgi_client(create_app(manager, token="s3cret")) as c:
        for method, path in routes:
            body = bodies.get(method)
            none = await c.request(method, path, json=body)
            assert none.status_code == 401, (method, path)
            assert none.headers["www-authenticate"] == "Bearer"
            wrong = await c.request(method, path, json=body, headers={"Authorization": "Bearer x"})
            assert wrong.status_code == 401, (method, path)
            right = await c.request(
                method, path, json=body, headers={"Authorization": "Bearer s3cret"}
            )
            assert right.status_code < 300, (method, path, right.text)
        assert (await c.get("/health")).status_code == 200
        page = await c.get("/")  # static, no data: a browser cannot send the header here
        assert page.status_code == 200 and "taskloom" in page.text
        schema = (await c.get("/openapi.json")).json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_token_from_the_environment(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    async with asgi_client(create_app(manager)) as c:
        assert (await c.get("/api/runs")).status_code == 401
        ok = await c.get("/api/runs", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200
    async with asgi_client(create_app(manager, token="")) as c:  # blank: still the env's
        assert (await c.get("/api/runs")).status_code == 401


async def test_no_token_means_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/runs")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


def test_serve_refuses_a_public_bind_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    manager = TaskManager("memory://")
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org", ""):
        with pytest.raises(ConfigError, match=TOKEN_ENV):
            serve(manager, host=host, port=1)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.8.0.1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")


def test_cli_serve_refuses_a_public_bind_without_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from taskloom.cli import app

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("TASKLOOM_STORE", f"sqlite:///{tmp_path}/cli.db")
    out = CliRunner().invoke(
        app, ["serve", "--app", "tests.apps.cli_app:make", "--host", "0.0.0.0"]
    )
    assert out.exit_code == 2 and TOKEN_ENV in out.output


# -- secrets --------------------------------------------------------------------------------------


async def test_a_secret_never_appears_in_any_response(
    client: httpx.AsyncClient, manager: TaskManager
) -> None:
    texts: list[str] = []

    async def call(method: str, path: str, **kw: Any) -> httpx.Response:
        resp = await client.request(method, path, **kw)
        texts.append(f"{method} {path} -> {resp.status_code}\n{resp.text}")
        return resp

    accepted = await call("POST", "/api/tasks/login/runs",
                          json={"params": {"user": "ann", "password": SECRET}})  # fmt: skip
    assert accepted.status_code == 201 and accepted.json()["params"]["password"] == "**********"
    queued = await call("POST", "/api/tasks/add/runs", json={"params": {"x": 1}})
    assert queued.status_code == 201
    await call("POST", "/api/tasks/login/runs", json={"params": {"user": 5, "password": SECRET}})
    bad = await call("POST", "/api/tasks/login/runs",
                     json={"params": {"user": "ann", "password": [SECRET]}})  # fmt: skip
    assert bad.status_code == 422
    await call("POST", "/api/tasks/login/runs", json={"params": {"password": SECRET}, "x": SECRET})
    # executed here, the secret reaches the function but never the record
    done = await manager.execute("login", user="bob", password=SECRET)
    assert done.state is TaskState.success
    await call("GET", "/api/tasks")
    page = await call("GET", "/api/runs")
    for row in page.json()["runs"]:
        await call("GET", f"/api/runs/{row['id']}")
    await call("POST", f"/api/runs/{done.id}/retry")
    await call("POST", f"/api/runs/{queued.json()['id']}/cancel")
    for path in ("/api/stats", "/api/workers", "/health", "/metrics", "/"):
        await call("GET", path)
    everything = "\n".join(texts)
    assert "bob" in everything and "ann" in everything  # the responses did carry the runs
    assert SECRET not in everything
    assert "hunter2" not in everything


# -- mounting and lifespan ------------------------------------------------------------------------


async def test_mounted_under_a_prefix(manager: TaskManager) -> None:
    from fastapi import FastAPI

    parent_app = FastAPI()
    parent_app.mount("/tasks", create_app(manager))
    async with asgi_client(parent_app) as c:
        assert (await c.get("/tasks/api/tasks")).status_code == 200
        page = await c.get("/tasks/")
        assert page.status_code == 200 and '<base href="/tasks/">' in page.text
        assert (await c.get("/tasks/static/app.js")).status_code == 200
        assert (await c.get("/tasks/health")).json()["status"] == "ok"


async def test_lifespan_closes_only_what_it_opened(tmp_path: Path) -> None:
    fresh = TaskManager(f"sqlite:///{tmp_path}/life.db", tasks=TASKS)
    app = create_app(fresh)
    async with app.router.lifespan_context(app):
        assert fresh.loop is not None
        async with asgi_client(app) as c:
            assert (await c.get("/health")).status_code == 200
    assert fresh.loop is None  # opened by the app: closed by it

    async with TaskManager(f"sqlite:///{tmp_path}/own.db", tasks=TASKS) as owned:
        app = create_app(owned)
        async with app.router.lifespan_context(app):
            pass
        assert owned.loop is not None  # the caller's: left open
        assert (await owned.runs()) == []


# -- no 500s, whatever the input ------------------------------------------------------------------


def test_openapi_fuzz_no_server_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemathesis cases (valid and invalid) for every operation: no 5xx, schema-conformant."""
    from tests.conftest import unavailable

    try:
        import schemathesis
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import response_schema_conformance
    except ImportError as exc:
        unavailable(f"schemathesis not installed: {exc}")
        return

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with asyncio.Runner() as runner:
        manager = TaskManager(f"sqlite:///{tmp_path}/fuzz.db", tasks=TASKS)
        app = create_app(manager)
        runner.run(manager.connect())
        seeded = [
            runner.run(manager.execute("boom")).id,
            runner.run(manager.queue("add", x=1)).id,
            runner.run(manager.execute("parent", n=1)).id,
        ]
        client = asgi_client(app)
        schema = schemathesis.openapi.from_dict(app.openapi())
        known = {
            "name": st.sampled_from([t.name for t in TASKS]),
            "run_id": st.sampled_from(seeded),
        }
        cases = st.one_of(
            schema.as_strategy(),
            schema.as_strategy(schemathesis.GenerationMode.NEGATIVE),
            st.fixed_dictionaries(known).flatmap(lambda p: schema.as_strategy(path_parameters=p)),
        )
        failures: list[str] = []

        @settings(
            max_examples=100, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(case=cases)
        def check(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://taskloom")
            request = client.build_request(
                kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                headers=kwargs.get("headers"), json=kwargs.get("json"),
                content=kwargs.get("data") or kwargs.get("content"),
            )  # fmt: skip
            resp = runner.run(client.send(request))
            if resp.status_code >= 500:
                failures.append(f"{case.method} {resp.request.url}: {resp.status_code} {resp.text}")
            case.validate_response(resp, checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        finally:
            runner.run(client.aclose())
            runner.run(manager.close())
        assert failures == []
