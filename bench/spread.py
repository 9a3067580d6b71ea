"""Spread: several queues of one app on a Redis Cluster, in one hash slot or over several.

    python -m bench.spread --cluster redis+cluster://127.0.0.1:7000,127.0.0.1:7001/0
    python -m bench.spread --start        # a private 3-master cluster on loopback (tests/)

For each layout, one slot (`prefix=` only: every key of the app on one master) and
`shards=S` (each queue in one of S slots, spread over the masters), and each worker count W:
a fresh prefix gets N no-op runs queued in bulk over Q queues (round robin, not timed; the
names are picked so they deal evenly over the slices); then
W `taskloom worker --burst` processes serving every queue drain them. Printed per row:
- drain runs/s between 10% and 90% done (start-up and stragglers left out);
- Redis CPU per run: user + system CPU of every master over the drain (INFO cpu), over N;
- the busiest master's share of that CPU: 100% means one master did all the Redis work.
The machine's own cores are shared by the masters, the workers and this producer, so the
drain rate says where one machine stops; the busiest master's share says how the Redis work
would spread over masters on machines of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from itertools import count
from pathlib import Path
from typing import Any

from bench.apps.taskloom_app import noop
from bench.peers.base import WorkerSpec, repo_env
from bench.procs import Workers
from taskloom import TaskManager, TaskState
from taskloom.store import open_store
from taskloom.store.redis_shards import shard_of

CONCURRENCY = 50
BATCH = 1_000


def _with(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def _master_cpu(store: Any) -> dict[str, float]:
    """Seconds of CPU (user + system) each master has used, by node name."""
    client = store._home._redis if hasattr(store, "_home") else store._redis
    out: dict[str, float] = {}
    for node in client.get_primaries():
        info = await client.info("cpu", target_nodes=node)
        out[node.name] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


async def _finished(store: Any) -> int:
    counts = await store.counts()
    return sum(c.n for c in counts if c.state is TaskState.success)


def queue_names(queues: int, shards: int) -> list[str]:
    """`queues` names that `shard_of` deals evenly over `shards` slices (q<i>, the first
    free ones per slice): a queue's slice is a hash of its name, and a handful of names
    hashed at random share slices (6 names over 6 slices land on 4)."""
    per = -(-queues // shards)
    taken: dict[int, list[str]] = {}
    names: list[str] = []
    for i in count():
        name, k = f"q{i}", shard_of(f"q{i}", shards)
        if len(taken.setdefault(k, [])) < per:
            taken[k].append(name)
            names.append(name)
            if len(names) == queues:
                return names
    raise AssertionError


async def measure(
    url: str, queues: int, shards: int, n: int, workers: int, logdir: Path
) -> dict[str, float]:
    """One drain of `n` runs over `queues` queues by `workers` worker processes."""
    manager = TaskManager(url, tasks=[noop])
    await manager.connect()
    store: Any = manager.store
    try:
        names = queue_names(queues, shards)
        for start in range(0, n, BATCH):
            for q, name in enumerate(names):
                chunk = range(start + q, min(start + BATCH, n), queues)
                if chunk:
                    await manager.queue_many(noop, [{"i": i} for i in chunk], queue=name)
        argv = [sys.executable, "-m", "taskloom", "worker", "--app",
                "bench.apps.taskloom_app:make", "--concurrency", str(CONCURRENCY),
                "--log-level", "WARNING", "--burst"]  # fmt: skip
        spec = WorkerSpec(argv, repo_env(BENCH_STORE_URL=url, BENCH_POLL="1.0"))
        cpu0 = await _master_cpu(store)
        low, high = max(1, n // 10), max(2, n * 9 // 10)
        with Workers(spec, workers, logdir) as procs:
            wait = 60 + n / 200
            first = await procs.wait_done(lambda: _finished(store), low, wait, allow_exit=True)
            last = await procs.wait_done(lambda: _finished(store), high, wait, allow_exit=True)
            await procs.wait_done(lambda: _finished(store), n, wait, allow_exit=True)
        cpu1 = await _master_cpu(store)
        used = {node: cpu1[node] - cpu0.get(node, 0.0) for node in cpu1}
        total = sum(used.values())
        return {
            "drain runs/s": (high - low) / max(last - first, 1e-3),
            "Redis CPU µs/run": total / n * 1e6,
            "busiest master %": 100 * max(used.values()) / total if total else 0.0,
        }
    finally:
        await store.drop()
        await manager.close()


async def main(argv: list[str] | None = None) -> int:
    """Entry point; prints one table, a row per layout and worker count."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.spread",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cluster", default="", help="redis+cluster://host:port,.../0")
    parser.add_argument("--start", action="store_true", help="start a 3-master cluster here")
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4", help="comma list of worker processes")
    args = parser.parse_args(argv)
    cluster = None
    if args.start:
        from tests.redis_cluster import start_cluster

        cluster = start_cluster(masters=3)
        args.cluster = cluster.url
    if not args.cluster:
        raise SystemExit("pass --cluster redis+cluster://host:port,... or --start")
    probe = open_store(args.cluster)
    await probe.ping()
    await probe.close()
    counts = [int(w) for w in args.workers.split(",") if w]
    print(f"load average at start: {[round(x, 2) for x in os.getloadavg()]}", flush=True)
    head = f"{'layout':<22}{'workers':>8}{'drain runs/s':>14}{'Redis CPU µs/run':>18}"
    head += f"{'busiest master %':>18}"
    print(f"N={args.n:,} no-op runs over {args.queues} queues\n{head}\n{'-' * len(head)}")
    try:
        with tempfile.TemporaryDirectory(prefix="taskloom-spread-") as workdir:
            layouts = [("one slot", {}), (f"shards={args.shards}", {"shards": str(args.shards)})]
            for name, extra in layouts:
                for w in counts:
                    tag = uuid.uuid4().hex[:8]
                    url = _with(args.cluster, prefix=f"spread-{tag}:", **extra)
                    row = await measure(
                        url, args.queues, args.shards, args.n, w, Path(workdir) / tag
                    )
                    print(
                        f"{name:<22}{w:>8}{row['drain runs/s']:>14,.0f}"
                        f"{row['Redis CPU µs/run']:>18,.1f}{row['busiest master %']:>18,.0f}",
                        flush=True,
                    )
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"load average at end: {[round(x, 2) for x in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = asyncio.run(main())
    print(f"({time.perf_counter() - started:.0f} s)")
    sys.exit(code)
