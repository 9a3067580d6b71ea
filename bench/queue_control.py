"""Queue control measured across real processes (no peer: these are properties, not speeds).

    python -m bench.queue_control [--stores sqlite,redis,postgres] [--runs 300]

For each store:
- rate limit: two `taskloom worker` processes serve `capped` (`rate_limit="50/s"`); prints the
  most starts in any 1 s window (sliding, from the starts the store recorded and from the
  timestamps the task bodies logged) and the starts per whole second;
- pause: two workers serve a steady stream on queue `steady`; prints how long after
  `manager.pause()` returned the last run started, and how long after `resume()` the first
  run started (the workers are woken, not polled: their poll interval is 0.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.apps.control_app import make  # noqa: E402
from tests.apps.workers import spawn_worker  # noqa: E402

from taskloom import TaskManager  # noqa: E402

APP = "tests.apps.control_app:make"
URLS = {
    "sqlite": "sqlite:///{dir}/control.db",
    "redis": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0") + "?prefix=qc-{tag}:",
    "postgres": os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    + "?schema=qc_{tag}",
}


def most_in_any_window(times: list[float], width: float = 1.0) -> int:
    """The largest number of `times` inside any window [t, t + width)."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _read(path: Path) -> str:
    return path.read_text()


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=30)


async def rate_limit(url: str, env: dict[str, str], runs: int, log: Path) -> None:
    async with make() as m:
        queued = await m.queue_many("capped", [{"i": i} for i in range(runs)])
        workers = [spawn_worker(APP, env, concurrency=16) for _ in range(2)]
        try:
            done = [await m.wait(r.id, timeout=300) for r in queued]
        finally:
            _stop(workers)
    recorded = [r.start.timestamp() for r in done if r.start]
    lines = [line.split() for line in _read(log).splitlines()]
    logged = [float(t) for _i, _pid, t in lines]
    pids = Counter(pid for _i, pid, _t in lines)
    first = int(min(recorded))
    per_second = Counter(int(t) - first for t in recorded)
    print(f"  rate_limit=50/s, {runs} runs, 2 workers (runs per worker: {sorted(pids.values())})")
    print(f"    most starts in any 1 s window: recorded {most_in_any_window(recorded)}, "
          f"logged by the task body {most_in_any_window(logged)}")  # fmt: skip
    print(f"    starts per whole second: {[per_second[s] for s in sorted(per_second)]}")
    print(f"    attempts counted: {sum(r.retry_attempt for r in done)}, "
          f"states: {dict(Counter(str(r.state) for r in done))}")  # fmt: skip


async def pause(url: str, env: dict[str, str]) -> None:
    async with make() as m:
        workers = [spawn_worker(APP, env, concurrency=8) for _ in range(2)]
        stop = asyncio.Event()
        ids: list[str] = []

        async def feed() -> None:
            while not stop.is_set():
                batch = await m.queue_many("steady", [{"i": len(ids) + k} for k in range(10)])
                ids.extend(r.id for r in batch)
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.sleep(0.5)
            await m.wait(ids[-1], timeout=60)  # the stream is flowing
            asked = time.time()
            await m.pause("steady")
            paused = time.time()
            await asyncio.sleep(2.0)
            resumed_at = time.time()
            await m.resume("steady")
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await feeder
            _stop(workers)
        starts = [r.start.timestamp() for r in await m.runs(task="steady", limit=100_000)
                  if r.start]  # fmt: skip
    after_pause = [t for t in starts if paused <= t < resumed_at]
    during = [t for t in starts if asked <= t < paused]
    before = max(t for t in starts if t < asked)
    first_after = min(t for t in starts if t >= resumed_at)
    ms = 1000
    print(
        f"  pause: the call took {(paused - asked) * ms:.1f} ms; last start before it began "
        f"{(before - asked) * ms:+.1f} ms; starts after it returned (2 s paused, stream going "
        f"on): {len(after_pause)}; during the call: {len(during)}"
    )
    if after_pause:  # a claim sent just before resume() and served after it records its send time
        near = [round((t - resumed_at) * ms, 1) for t in after_pause]
        print(f"    (their recorded starts, ms from the resume call: {sorted(set(near))})")
    print(f"  resume: first start {(first_after - resumed_at) * ms:.1f} ms after the call began")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", default="sqlite,redis,postgres")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory() as folder:
            tag = os.urandom(4).hex()
            url = URLS[kind].format(dir=folder, tag=tag)
            log = Path(folder) / "starts.log"
            env = {**os.environ, "TASKLOOM_STORE": url, "CONTROL_LOG": str(log)}
            os.environ.update(TASKLOOM_STORE=url, CONTROL_LOG=str(log))
            print(f"{kind}:")
            try:
                await rate_limit(url, env, args.runs, log)
                await pause(url, env)
            finally:
                async with TaskManager(url) as m:
                    drop = getattr(m.store, "drop", None)
                    if drop is not None:
                        await drop()


if __name__ == "__main__":
    asyncio.run(main())
