"""Quotas: cpu/memory budgets and the launch-rate window deny launches until they fit."""

from __future__ import annotations

import asyncio

import pytest

from taskloom import Resources, TaskManager
from taskloom.errors import ConfigError
from taskloom.pipeline import InProcessTask, MemoryRepository, Pipeline, ResourceManager
from taskloom.testing import FakeClock


def test_budget_accounting() -> None:
    quota = ResourceManager(Resources(cpu="1", memory="1Gi"), name="q")
    half = Resources(cpu="500m", memory="256Mi")
    assert quota.denial(half, 0.0) is None
    quota.acquire("a", half, 0.0)
    quota.acquire("b", half, 0.0)
    assert quota.usage.cpu == 1.0 and quota.usage.jobs == 2
    assert quota.denial(half, 0.0) == "q: cpu 1 + 0.5 would exceed 1"
    assert quota.denial(Resources(memory="256Mi"), 0.0) is None  # needs no cpu: fits
    assert quota.denial(None, 0.0) is None
    quota.release("a")
    quota.release("a")  # twice is harmless
    assert quota.denial(half, 0.0) is None
    assert quota.never_fits(Resources(memory="2Gi")) is not None
    assert quota.never_fits(half) is None


def test_launch_window() -> None:
    quota = ResourceManager(launches_per_window=2, window_seconds=60, name="rate")
    quota.acquire("a", None, 100.0)
    quota.acquire("b", None, 130.0)
    assert quota.denial(None, 140.0) == "rate: 2 launches in the last 60s (limit 2)"
    assert quota.next_opening(140.0) == 160.0
    assert quota.denial(None, 160.0) is None  # the first launch left the window
    assert quota.next_opening(160.0) is None
    assert quota.usage.jobs == 2  # the window limits launches, not jobs in flight


def test_quota_arguments_are_checked() -> None:
    with pytest.raises(ConfigError):
        ResourceManager(launches_per_window=0)
    with pytest.raises(ConfigError):
        ResourceManager(window_seconds=0)
    assert ResourceManager(tasks=["a"]).governs("a")
    assert not ResourceManager(tasks=["a"]).governs("b")


async def test_cpu_quota_caps_jobs_in_flight() -> None:
    src, done = MemoryRepository(), MemoryRepository()
    for i in range(5):
        await src.write(f"k{i}", b"")
    gate, two_running = asyncio.Event(), asyncio.Event()
    running = peak = 0

    async def body(job: str) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_running.set()
        await gate.wait()
        running -= 1

    task = InProcessTask("heavy", done=done, func=body, resources=Resources(cpu="500m"))
    task.link("src", src, is_input=True)
    quota = ResourceManager(Resources(cpu="1"), name="cpu")
    async with TaskManager("memory://") as manager:
        async with Pipeline([task], manager=manager, quotas=[quota]) as pipeline:
            assert await pipeline.update()
            assert pipeline.stats.launched == 2 and pipeline.stats.denied == 3
            assert pipeline.stats.denials == {"heavy": "cpu: cpu 1 + 0.5 would exceed 1"}
            async with asyncio.timeout(10):
                await two_running.wait()
            assert await pipeline.update()  # still full: nothing more launches
            assert pipeline.stats.launched == 2 and quota.usage.cpu == 1.0
            gate.set()
            async with asyncio.timeout(10):
                await pipeline.run()
    assert peak == 2 and len(await done.snapshot()) == 5
    assert quota.usage.jobs == 0  # everything was given back at reaping


async def test_launch_window_follows_the_managers_clock() -> None:
    clock = FakeClock()
    src, done = MemoryRepository(), MemoryRepository()
    for i in range(5):
        await src.write(f"k{i}", b"")

    async def body(job: str) -> None:
        pass

    task = InProcessTask("paced", done=done, func=body)
    task.link("src", src, is_input=True)
    other = InProcessTask("free", done=MemoryRepository(), func=body)
    other.link("src", src, is_input=True)
    scoped = ResourceManager(launches_per_window=2, window_seconds=60, tasks=["paced"])

    async def settle(pipeline: Pipeline) -> None:
        async with asyncio.timeout(10):
            await pipeline.update()
            while pipeline.live:
                await pipeline.wait()
                await pipeline.update()

    async with TaskManager("memory://", clock=clock) as manager:
        async with Pipeline([task, other], manager=manager, quotas=[scoped]) as pipeline:
            await settle(pipeline)
            assert len(await done.snapshot()) == 2  # the window is full
            assert len(await other.done.snapshot()) == 5  # a task the quota does not govern
            assert pipeline.stats.denied == 3
            clock.advance(59)
            await settle(pipeline)
            assert len(await done.snapshot()) == 2
            clock.advance(2)  # the first launches leave the window
            await settle(pipeline)
            assert len(await done.snapshot()) == 4
            clock.advance(61)
            await settle(pipeline)
            assert len(await done.snapshot()) == 5
            assert not await pipeline.update()
    assert scoped.usage.jobs == 0
