"""procrastinate's side of the benchmark: `procrastinate --app bench.apps.procrastinate_app.app`.

The app is built at import from `BENCH_PG_DSN` and `BENCH_PG_SCHEMA` (first on `search_path`,
where procrastinate's schema is applied).
"""

from __future__ import annotations

import asyncio
import os

import procrastinate

NAP_SECONDS = 0.1


def build(dsn: str, schema: str) -> procrastinate.App:
    """An app whose connections use `schema`."""
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, kwargs={"options": f"-c search_path={schema}"}
    )
    return procrastinate.App(connector=connector)


app = build(
    os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    os.environ.get("BENCH_PG_SCHEMA", "bench_procrastinate"),
)


@app.task(name="noop")
async def noop(i: int) -> int:
    """Do nothing."""
    return i


@app.task(name="nap")
async def nap(i: int) -> int:
    """Sleep 0.1 s without blocking the loop."""
    await asyncio.sleep(NAP_SECONDS)
    return i
