"""(f) Per-child overhead of a workflow: a parent fanning out inline no-op children.

There is no queue peer for this: the comparison is the same `asyncio.gather` over plain
coroutines, so the difference is what recording and executing each child durably costs.
"""

from __future__ import annotations

import asyncio
import time

from .apps.taskloom_app import build
from .peers.base import Target, reset
from .peers.taskloom import store_url
from .phases import Metric, Settings
from .results import Report

KEY = "f"
TITLE = "(f) workflow fan-out: one parent, N inline no-op children via asyncio.gather"
METRIC = Metric("children", "children/s")
OVERHEAD = Metric("overhead per child", "µs", higher_is_better=False)


async def _leaf(i: int) -> int:
    return i


async def plain_gather(n: int) -> float:
    """Seconds for `asyncio.gather` over n plain coroutines."""
    started = time.perf_counter()
    results = await asyncio.gather(*(_leaf(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    assert len(results) == n
    return elapsed


async def taskloom_fan_out(target: Target, n: int) -> float:
    """Seconds for `manager.execute("fan_out", n=n)`: n durable inline children."""
    await reset(target)
    manager = build(store_url(target))
    try:
        await manager.connect()
        started = time.perf_counter()
        run = await manager.execute("fan_out", n=n)
        elapsed = time.perf_counter() - started
        if run.state.value != "success" or run.result != n:
            raise RuntimeError(f"fan_out ended {run.state}: {run.error}")
        return elapsed
    finally:
        await manager.close()
        await reset(target)


async def sample(report: Report, target: Target, s: Settings) -> None:
    """One repetition on one store: taskloom, then plain asyncio, recorded as a pair."""
    report.titles[KEY] = TITLE
    tl = await taskloom_fan_out(target, s.n)
    base = await plain_gather(s.n)
    for system, seconds in (("taskloom", tl), ("asyncio", base)):
        report.add(KEY, target.store, system, METRIC.name, s.n / seconds, unit=METRIC.unit,
                   higher_is_better=True)  # fmt: skip
    report.add(KEY, target.store, "taskloom", OVERHEAD.name, (tl - base) / s.n * 1e6,
               unit=OVERHEAD.unit, higher_is_better=False)  # fmt: skip
