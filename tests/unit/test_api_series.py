"""`GET /api/stats/series`: finished runs per time bucket (the dashboard's throughput chart)."""

from __future__ import annotations

import httpx
import pytest

from taskloom import TaskManager, task
from taskloom.testing import FakeClock

pytest.importorskip("fastapi")


@task
def ok() -> int:
    return 1


@task
def bad() -> None:
    raise ValueError("no")


async def test_series_counts_finished_runs_per_bucket() -> None:
    from taskloom.api import create_app

    clock = FakeClock()
    start = clock.now
    async with TaskManager("memory://", tasks=[ok, bad], clock=clock) as manager:
        await manager.execute("ok")  # bucket 0 of 6 (10 minutes each)
        clock.advance(30 * 60)
        await manager.execute("ok")  # bucket 3
        await manager.execute("bad")
        await manager.queue("ok")  # not finished: not counted
        clock.advance(25 * 60)
        await manager.execute("bad")  # bucket 5
        clock.set(start + 3600 - 1)
        app = create_app(manager)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            got = await client.get("/api/stats/series", params={"span": 3600, "buckets": 6})
            assert got.status_code == 200
            body = got.json()
            assert body["bucket_seconds"] == 600 and body["counted"] == 5
            assert not body["truncated"]
            counts = [(b["success"], b["failure"]) for b in body["buckets"]]
            assert counts == [(1, 0), (0, 0), (0, 0), (1, 1), (0, 0), (0, 1)]
            short = await client.get("/api/stats/series", params={"span": 3600, "limit": 2})
            assert short.json()["truncated"] is True
            assert (await client.get("/api/stats/series", params={"span": 5})).status_code == 422
