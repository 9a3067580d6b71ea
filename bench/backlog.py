"""Backlog: listings, counts, `/api/stats` and the drain on a store holding N runs.

    python -m bench.backlog [--stores sqlite,postgres,redis] [--sizes 1000,100000] [--million]

For each store and size N: a fresh store gets N no-op runs queued in bulk (batches of 1000,
not timed); then each call below is timed 20 times and its median printed in ms:
- `runs(state="queued", limit=100)` and `runs(state="failure", limit=100)` (none failed: the
  cost of finding nothing), `runs(limit=100)` (newest first);
- `queue_length()`;
- `GET /api/stats` through the FastAPI app, in-process over httpx's ASGI transport;
- `counts()` (the maintained counters) and `queues()` (depth and oldest per queue);
- drain: the store's own claim (batches of 50) and finish (success records), in runs/s, at a
  steady backlog: the median of 9 timed rounds of draining 1,000 runs (N when smaller), each
  followed by queueing as many again (not timed). No worker process: this is the store's cost.
Then a second fresh store gets N finished runs (records as a worker leaves them: result, one
attempt, end, worker, metrics), written in bulk, and:
- bytes per finished run: what the store grew by, indexes and counters included, over N
  (SQLite: used pages after a checkpoint; PostgreSQL: `pg_total_relation_size` of runs and
  run_counts; Redis: `used_memory`);
- `runs(state="success", limit=100)` and `GET /api/stats` over that store;
- purge of all N in the retention sweeper's batches (100 runs, with its pause between
  batches) while another task queues, claims and finishes one run at a time: purge runs/s,
  the median, 99th percentile and longest purge batch, and the same for that claim round
  during the purge and alone (after the purge, for as long as it took, at least 200 rounds):
  what purging costs the workers, against what the disk costs them anyway.
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
from taskloom.run import Attempt, TaskRun, TaskState, run_id_at  # noqa: E402
from taskloom.store.base import dt  # noqa: E402

URLS = {
    "sqlite": "sqlite:///{dir}/backlog-{tag}.db",
    "redis": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379") + "/9?prefix=backlog-{tag}:",
    "postgres": os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    + "?schema=backlog_{tag}",
}
REPEAT = 20
DRAIN_ROUND = 1_000  # runs drained per timed round
DRAIN_ROUNDS = 9
BATCH = 1_000
from taskloom.retention import (  # noqa: E402  (what the sweeper asks for per call, and its pause)
    BATCH_PAUSE,
    PURGE_BATCH,
)


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


async def _stats_ms(manager: TaskManager) -> float:
    """Median ms of `GET /api/stats` through the FastAPI app, in-process over httpx's ASGI."""
    transport = httpx.ASGITransport(app=create_app(manager, token="bench"))
    headers = {"Authorization": "Bearer bench"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def stats() -> None:
            (await client.get("/api/stats", headers=headers)).raise_for_status()

        return await _median_ms(stats)


async def _drain(manager: TaskManager, n: int) -> float:
    """Claim + finish rate at a steady backlog of `n`: DRAIN_ROUNDS rounds, each timing the
    drain of min(n, DRAIN_ROUND) runs, then (untimed) queueing as many again; the median
    round's rate (a round is half a second or less: one disk stall, such as the kernel
    writing back a bulk load, would otherwise decide the figure)."""
    store = manager.store
    per = min(n, DRAIN_ROUND)
    rates = []
    for _ in range(DRAIN_ROUNDS):
        t0 = time.perf_counter()
        taken = 0
        while taken < per:
            now = time.time()
            leases = await store.claim("bench", None, min(50, per - taken), 30.0, now)
            if not leases:
                break
            finished = []
            for lease in leases:
                run = lease.run.record()
                run.state = TaskState.success
                run.result = 0
                finished.append((lease, run))
            await store.finish(finished)
            taken += len(leases)
        rates.append(taken / (time.perf_counter() - t0))
        await manager.queue_many(noop, [{"i": i} for i in range(taken)])
    return statistics.median(rates)


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
        out["GET /api/stats ms"] = await _stats_ms(manager)
        out["counts() ms"] = await _median_ms(manager.store.counts)
        out["queues() ms"] = await _median_ms(manager.queues)
        out["drain runs/s"] = await _drain(manager, n)
    finally:
        await manager.store.drop()
        await manager.store.close()
    out.update(await measure_finished(kind, n, workdir))
    return out


def _finished_run(i: int, t0: float) -> TaskRun:
    """A no-op run as a worker leaves it finished, its id made when it was queued."""
    at = t0 + i * 1e-4
    start, end = dt(at), dt(at + 5e-5)
    return TaskRun(
        id=run_id_at(at),
        task="noop",
        params={"i": i},
        state=TaskState.success,
        queued=start,
        start=start,
        end=end,
        result=i,
        worker="worker-1",
        metrics={"elapsed": 5.0175e-05},
        attempts=[
            Attempt(attempt=0, state=TaskState.success, start=start, end=end, worker="worker-1")
        ],
    )


async def _store_bytes(kind: str, manager: TaskManager) -> float:
    """How much the store holds now, by the measure of its kind (see the module doc)."""
    store: Any = manager.store
    if kind == "sqlite":

        def used(conn: Any) -> int:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * size)

        return float(await store._run(used))
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(store._dsn)
        try:
            return float(
                await conn.fetchval(
                    f"SELECT pg_total_relation_size('{store._ident}.runs')"
                    f" + pg_total_relation_size('{store._ident}.run_counts')"
                )
            )
        finally:
            await conn.close()
    info = await store._redis.info("memory")
    return float(info["used_memory"])


def _p99(times: list[float]) -> float:
    return sorted(times)[min(len(times) - 1, int(len(times) * 0.99))]


async def _claim_loop(
    manager: TaskManager, stop: asyncio.Event, rounds: int = 0, seconds: float = 0.0
) -> list[float]:
    """Queue, claim and finish one run at a time until `stop` (or, when given, until both
    `rounds` rounds and `seconds` have passed): each round's time in ms (what a worker's
    store calls cost meanwhile)."""
    store = manager.store
    times: list[float] = []
    end = time.perf_counter() + seconds
    while not stop.is_set() and (not rounds or len(times) < rounds or time.perf_counter() < end):
        t0 = time.perf_counter()
        await store.enqueue([TaskRun(task="noop", state=TaskState.queued, queue="bench")])
        leases = await store.claim("bench", ["bench"], 1, 30.0, time.time())
        for lease in leases:
            done = lease.run.record()
            done.state = TaskState.success
            await store.finish([(lease, done)])
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.005)
    return times


async def measure_finished(kind: str, n: int, workdir: str) -> dict[str, float]:
    """Bytes per finished run, listings over finished runs, and purge under claims."""
    url = URLS[kind].format(dir=workdir, tag=uuid.uuid4().hex[:8])
    manager = TaskManager(url, tasks=[noop])
    await manager.store.connect()
    out: dict[str, float] = {}
    try:
        await manager.store.enqueue([TaskRun(task="noop", state=TaskState.queued, queue="warm")])
        before = await _store_bytes(kind, manager)
        t0 = time.time() - 86_400
        for start in range(0, n, BATCH):
            runs = [_finished_run(i, t0) for i in range(start, min(n, start + BATCH))]
            await manager.store.enqueue(runs)
        out["bytes/finished run"] = (await _store_bytes(kind, manager) - before) / n
        out["runs(state=success) ms"] = await _median_ms(lambda: manager.runs(state="success"))
        out["finished: /api/stats ms"] = await _stats_ms(manager)
        stop = asyncio.Event()
        claims = asyncio.create_task(_claim_loop(manager, stop))
        purged, batches, began = 0, [], time.perf_counter()
        while True:
            b0 = time.perf_counter()
            gone = await manager.store.purge(time.time() - 3600, limit=PURGE_BATCH)
            batches.append((time.perf_counter() - b0) * 1000)
            purged += gone
            if gone == 0:
                break
            await asyncio.sleep(BATCH_PAUSE)  # the sweeper's own pause between batches
        elapsed = time.perf_counter() - began
        stop.set()
        during = await claims
        # the same claim rounds with no purge, for as long (a longer window meets more of
        # the disk's own stalls: checkpoints, fsyncs), at least 200 rounds
        alone = await _claim_loop(manager, asyncio.Event(), rounds=200, seconds=elapsed)
        out["purge runs/s"] = purged / elapsed
        for name, times in (("purge batch", batches), ("claim round alone", alone),
                            ("claim round in purge", during)):  # fmt: skip
            out[f"{name} p50 ms"] = statistics.median(times)
            out[f"{name} p99 ms"] = _p99(times)
            out[f"{name} max ms"] = max(times)
        assert purged == n, (purged, n)
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
