"""Backlog: listings, counts, `/api/stats` and the drain on a store holding N runs.

    python -m bench.backlog [--stores sqlite,postgres,redis] [--sizes 1000,100000] [--million]

For each store and size N: a fresh store gets N no-op runs queued in bulk (batches of 1000,
not timed); then each call below is timed 20 times and its median printed in ms:
- `runs(state="queued", limit=100)` and `runs(state="failure", limit=100)` (none failed: the
  cost of finding nothing), `runs(limit=100)` (newest first);
- `queue_length()`;
- `GET /api/stats` through the FastAPI app, in-process over httpx's ASGI transport;
- drain: the store's own claim (batches of 50) and finish (success records) for 5,000 runs
  (all of them when N is smaller), in runs/s. No worker process: this is the store's cost.
With `--vacuum`, PostgreSQL's runs table is vacuumed and analysed after the bulk queue, as
autovacuum does on a server that has it on (this machine's has it off). One table per store,
one column per N. No peers: the figure to read is how a column compares
with the 1k column of the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import httpx  # noqa: E402

from taskloom import TaskManager, task  # noqa: E402
from taskloom.api import create_app  # noqa: E402
from taskloom.run import TaskState  # noqa: E402

URLS = {
    "sqlite": "sqlite:///{dir}/backlog-{tag}.db",
    "redis": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379") + "/9?prefix=backlog-{tag}:",
    "postgres": os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    + "?schema=backlog_{tag}",
}
REPEAT = 20
DRAIN = 5_000
BATCH = 1_000


@task()
async def noop(i: int = 0) -> int:
    """The queued run: never executed here, only claimed and finished by the store."""
    return i


async def _median_ms(call: Callable[[], Awaitable[Any]]) -> float:
    await call()  # warm: plans cached, pages in memory
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def _drain(manager: TaskManager, count: int) -> float:
    store = manager.store
    done = 0
    t0 = time.perf_counter()
    while done < count:
        now = time.time()
        leases = await store.claim("bench", None, min(50, count - done), 30.0, now)
        if not leases:
            break
        finished = []
        for lease in leases:
            run = lease.run.record()
            run.state = TaskState.success
            run.result = 0
            finished.append((lease, run))
        await store.finish(finished)
        done += len(leases)
    return done / (time.perf_counter() - t0)


async def _vacuum(manager: TaskManager) -> None:
    """What autovacuum would have done after the bulk insert: visibility map and statistics."""
    import asyncpg

    store: Any = manager.store
    conn = await asyncpg.connect(store._dsn)
    try:
        await conn.execute(f"VACUUM ANALYZE {store._ident}.runs")
    finally:
        await conn.close()


async def measure(kind: str, n: int, workdir: str, vacuum: bool) -> dict[str, float]:
    """The figures of one store holding `n` queued runs."""
    url = URLS[kind].format(dir=workdir, tag=uuid.uuid4().hex[:8])
    manager = TaskManager(url, tasks=[noop])
    await manager.store.connect()
    out: dict[str, float] = {}
    try:
        for start in range(0, n, BATCH):
            await manager.queue_many(noop, [{"i": i} for i in range(start, min(n, start + BATCH))])
        if vacuum and kind == "postgres":
            await _vacuum(manager)
        out["runs(state=queued) ms"] = await _median_ms(lambda: manager.runs(state="queued"))
        out["runs(state=failure) ms"] = await _median_ms(lambda: manager.runs(state="failure"))
        out["runs() newest ms"] = await _median_ms(lambda: manager.runs())
        out["queue_length() ms"] = await _median_ms(manager.queue_length)
        app = create_app(manager, token="bench")
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer bench"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def stats() -> None:
                (await client.get("/api/stats", headers=headers)).raise_for_status()

            out["GET /api/stats ms"] = await _median_ms(stats)
        out["drain runs/s"] = await _drain(manager, min(n, DRAIN))
    finally:
        await manager.store.drop()
        await manager.store.close()
    return out


def _table(kind: str, sizes: list[int], rows: dict[int, dict[str, float]]) -> str:
    names = list(next(iter(rows.values())))
    head = f"{kind:<24}" + "".join(f"{f'N={n:,}':>14}" for n in sizes)
    lines = [head, "-" * len(head)]
    for name in names:
        cells = "".join(f"{rows[n][name]:>14,.2f}" for n in sizes)
        lines.append(f"{name:<24}{cells}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    """Entry point; prints one table per store."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--sizes", default="1000,100000", help="comma list of N")
    parser.add_argument("--million", action="store_true", help="add N=1,000,000")
    parser.add_argument("--vacuum", action="store_true", help="VACUUM ANALYZE after queueing")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million:
        sizes.append(1_000_000)
    print(f"load average at start: {[round(x, 2) for x in os.getloadavg()]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="taskloom-backlog-") as workdir:
        for kind in args.stores.split(","):
            rows = {n: await measure(kind, n, workdir, args.vacuum) for n in sizes}
            print(_table(kind, sizes, rows), "\n", flush=True)
    print(f"load average at end: {[round(x, 2) for x in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
