"""Phases (a) to (e) and the scale phases (s1, s2, s4): one sample per call, every system.

Each sample starts from an empty namespace and leaves none behind. Times are wall-clock
(`perf_counter`) in the harness process; completion is read from the system's own store or
result backend, never guessed from a sleep.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .peers.base import NAP, NAP_SECONDS, Client, System, Target, reset
from .procs import DONE_POLL, Workers

#: One sample's values: metric name -> value.
Values = dict[str, float]


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    n: int = 10_000
    reps: int = 3
    batch: int = 1000
    latency_runs: int = 200
    sleep_runs: int = 1000
    sleep_concurrency: int = 100
    workdir: Path = Path("/tmp/taskloom-bench")


@dataclass(frozen=True)
class Metric:
    """A value a phase reports."""

    name: str
    unit: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Phase:
    """A measurement applied to every system that supports the store."""

    key: str
    title: str
    metrics: tuple[Metric, ...]
    sample: Callable[[System, Target, Settings], Awaitable[Values]]


@asynccontextmanager
async def opened(system: System, target: Target) -> AsyncIterator[Client]:
    """A client on an empty namespace, emptied again afterwards."""
    await reset(target)
    client = await system.open(target)
    try:
        yield client
    finally:
        await client.close()
        await reset(target)


def _timeout(n: int) -> float:
    return 120.0 + n / 20  # generous: even 20 runs/s finishes


def _logdir(s: Settings, target: Target, phase: str) -> Path:
    return s.workdir / "logs" / f"{phase}-{target.store}-{target.system}"


async def sequential_enqueue(system: System, target: Target, s: Settings) -> Values:
    """(a) n runs queued one awaited call at a time."""
    async with opened(system, target) as client:
        started = time.perf_counter()
        for i in range(s.n):
            await client.enqueue_one(i)
        return {"enqueue": s.n / (time.perf_counter() - started)}


async def bulk_enqueue(system: System, target: Target, s: Settings) -> Values:
    """(b) n runs queued in batches through the system's bulk path."""
    async with opened(system, target) as client:
        started = time.perf_counter()
        await client.enqueue_many("noop", s.n, s.batch)
        return {"bulk enqueue": s.n / (time.perf_counter() - started)}


async def end_to_end(system: System, target: Target, s: Settings) -> Values:
    """(c) one warm worker process; the producer queues n no-ops one awaited call at a time
    (each system's per-job API) while it works; clock from the first call until all are done."""
    async with opened(system, target) as client:
        spec = system.worker(target, None, burst=False)
        with Workers(spec, 1, _logdir(s, target, "e2e")) as workers:
            await _warm(client)
            workers.check_alive(allow_exit=False)
            before = await client.finished()
            started = time.perf_counter()
            for i in range(s.n):
                await client.enqueue_one(i)
            done = await workers.wait_done(client.finished, before + s.n, _timeout(s.n))
        return {"runs": s.n / (done - started)}


def drain(processes: int) -> Callable[[System, Target, Settings], Awaitable[Values]]:
    """(s) n no-ops queued in bulk first (not timed), then `processes` workers drain them.

    The rate is taken between 10% and 90% done, so worker start-up and the last stragglers
    do not count: it is the steady drain rate, with no producer in the way.
    """

    async def sample(system: System, target: Target, s: Settings) -> Values:
        async with opened(system, target) as client:
            await client.enqueue_many("noop", s.n, s.batch)
            low, high = max(1, s.n // 10), max(2, s.n * 9 // 10)
            spec = system.worker(target, None, burst=True)
            with Workers(spec, processes, _logdir(s, target, f"drain{processes}")) as workers:
                wait = _timeout(s.n)
                first = await workers.wait_done(client.finished, low, wait, allow_exit=True)
                last = await workers.wait_done(client.finished, high, wait, allow_exit=True)
                await workers.wait_done(client.finished, s.n, wait, allow_exit=True)
            return {"runs": (high - low) / max(last - first, DONE_POLL)}

    return sample


async def _warm(client: Client) -> None:
    """Five round trips: the first waits for the worker to start; all warm it up."""
    for i in range(5):
        await client.run_and_wait(-1 - i)


async def latency(system: System, target: Target, s: Settings) -> Values:
    """(d) enqueue→result of sequential runs with one warm worker process."""
    async with opened(system, target) as client:
        spec = system.worker(target, None, burst=False)
        with Workers(spec, 1, _logdir(s, target, "latency")) as workers:
            await _warm(client)
            workers.check_alive(allow_exit=False)
            times = []
            for i in range(s.latency_runs):
                started = time.perf_counter()
                await client.run_and_wait(i)
                times.append((time.perf_counter() - started) * 1000)
        cuts = statistics.quantiles(times, n=100, method="inclusive")
        return {"p50": statistics.median(times), "p99": cuts[98]}


async def sleep_concurrency(system: System, target: Target, s: Settings) -> Values:
    """(e) runs sleeping 0.1 s on one warm worker at concurrency 100: runs·0.1 s / wall."""
    async with opened(system, target) as client:
        spec = system.worker(target, s.sleep_concurrency, burst=False)
        with Workers(spec, 1, _logdir(s, target, "sleep")) as workers:
            await client.run_and_wait(-1)  # warm: the worker is up before the clock starts
            before = await client.finished()
            started = time.perf_counter()
            await client.enqueue_many(NAP, s.sleep_runs, s.batch)
            done = await workers.wait_done(
                client.finished, before + s.sleep_runs, _timeout(s.sleep_runs * 10)
            )
        return {"effective concurrency": s.sleep_runs * NAP_SECONDS / (done - started)}


PHASES = (
    Phase("a", "(a) sequential enqueue: one awaited call per run",
          (Metric("enqueue", "runs/s"),), sequential_enqueue),
    Phase("b", "(b) bulk enqueue: batches of 1000 (bulk API, else the fastest loop)",
          (Metric("bulk enqueue", "runs/s"),), bulk_enqueue),
    Phase("c", "(c) end to end: a producer queues one run per call, one warm worker process",
          (Metric("runs", "runs/s"),), end_to_end),
    Phase("d", "(d) enqueue→result latency, sequential runs, one warm worker process",
          (Metric("p50", "ms", False), Metric("p99", "ms", False)), latency),
    Phase("e", "(e) runs sleeping 0.1 s, one warm worker at concurrency 100",
          (Metric("effective concurrency", "runs at once"),), sleep_concurrency),
    Phase("s1", "(s) scale: drain of a pre-filled queue, 1 worker process (10%→90% done)",
          (Metric("runs", "runs/s"),), drain(1)),
    Phase("s2", "(s) scale: drain of a pre-filled queue, 2 worker processes (10%→90% done)",
          (Metric("runs", "runs/s"),), drain(2)),
    Phase("s4", "(s) scale: drain of a pre-filled queue, 4 worker processes (10%→90% done)",
          (Metric("runs", "runs/s"),), drain(4)),
)  # fmt: skip
