"""pydatatask's per-task hooks: `disabled`, overridable `update()` / `launch(job)`, and the
`plug` translation options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskloom import TaskManager
from taskloom.pipeline import (
    InProcessTask,
    MemoryRepository,
    Pipeline,
    ProcessTask,
    Repository,
    ResourceManager,
    TranslatedRepository,
)
from taskloom.policies import Resources


@pytest.fixture
async def manager() -> AsyncIterator[TaskManager]:
    async with TaskManager("memory://") as m:
        yield m


async def run(pipeline: Pipeline) -> None:
    async with asyncio.timeout(20):
        await pipeline.run()


def copier(name: str, src: Repository, **options: object) -> InProcessTask:
    out = MemoryRepository(f"{name}.out")

    @InProcessTask(name, MemoryRepository(f"{name}.done"), **options)  # type: ignore[arg-type]
    async def body(job: str, src: Repository, out: Repository) -> None:
        await out.write(job, await src.read(job))

    body.link("src", src, is_input=True)
    body.link("out", out, is_output=True)
    return body


async def test_disabled_tasks_are_never_launched(manager: TaskManager, tmp_path: Path) -> None:
    src = MemoryRepository("src")
    await src.write("a", b"1")
    off = copier("off", src, disabled=True)
    on = copier("on", src)
    process = ProcessTask("proc", "echo hi", MemoryRepository(), disabled=True)
    process.link("src", src, is_input=True)
    pipeline = Pipeline([off, on, process], manager=manager)
    await run(pipeline)
    assert pipeline.stats.launched == 1
    assert await off.output["out"].snapshot() == frozenset()
    assert await on.output["out"].snapshot() == {"a"}
    status = {s.task: s for s in await pipeline.status()}
    assert status["off"].ready == 1 and status["off"].done == 0  # still shown, never run


class Audited(InProcessTask):
    """A subclass overriding both hooks, as pydatatask subclasses do."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.updates = 0
        self.launched: list[str] = []
        self.extra_passes = 2

    async def update(self) -> bool:
        self.updates += 1
        if self.extra_passes:  # "something is still live": keep the loop going
            self.extra_passes -= 1
            return True
        return False

    async def launch(self, job: str) -> None:
        self.launched.append(job)
        if job == "skip":
            return  # declined: no run, and the quota charge is given back
        if job == "boom":
            raise RuntimeError("launch failed")
        await super().launch(job)


async def test_update_and_launch_overrides_are_called_by_the_loop(manager: TaskManager) -> None:
    src = MemoryRepository("src")
    for key in ("a", "skip", "boom"):
        await src.write(key, b"x")
    out = MemoryRepository("out")
    task = Audited("audited", MemoryRepository("done"), resources=Resources(cpu=1))

    @task
    async def body(job: str, src: Repository, out: Repository) -> None:
        await out.write(job, await src.read(job))

    task.link("src", src, is_input=True)
    task.link("out", out, is_output=True)
    quota = ResourceManager(Resources(cpu=2))
    async with Pipeline([task], manager=manager, quotas=[quota]) as pipeline:
        async with asyncio.timeout(20):
            await pipeline.update()
            while pipeline.live:
                await pipeline.wait()
                await pipeline.update()
        assert await out.snapshot() == {"a"}
        assert sorted(task.launched[:3]) == ["a", "boom", "skip"]
        assert pipeline.stats.launched == 1
        # declined and failed launches returned their quota charge: both fit again
        assert quota.denial(Resources(cpu=2), manager.clock()) is None
        # update() runs first in every pass, and its True keeps run() going
        before = task.updates
        await pipeline.run(max_passes=5)
        assert task.updates > before and task.extra_passes == 0
    assert task.launched.count("skip") >= 2  # a declined job stays ready


async def test_default_launch_needs_an_open_pipeline() -> None:
    from taskloom.errors import ConfigError

    task = copier("lonely", MemoryRepository())
    with pytest.raises(ConfigError, match="not in an open pipeline"):
        await task.launch("a")


async def test_plug_translation_options(manager: TaskManager) -> None:
    src = MemoryRepository("src")
    await src.write("up1", b"one")
    upstream = copier("upstream", src)
    translator = MemoryRepository("translator")
    await translator.dump("down1", "up1")
    down = InProcessTask("down", MemoryRepository("down.done"))
    down.plug(upstream, translator=translator, translate_allow_deletes=True)
    lazy = InProcessTask("lazy", MemoryRepository("lazy.done"))
    lazy.plug(upstream, translator=translator, translate_prefetch_lookup=False)
    view = down.links["upstream_out"].repo
    fresh = lazy.links["upstream_out"].repo
    assert isinstance(view, TranslatedRepository) and isinstance(fresh, TranslatedRepository)
    assert view.allow_deletes and view.prefetch_lookup
    assert not fresh.allow_deletes and not fresh.prefetch_lookup
    out = upstream.links["out"].repo
    await out.write("up1", b"one")
    assert await view.read("down1") == b"one" == await fresh.read("down1")
    # translations are prefetched once: a changed mapping is seen only without prefetching
    await out.write("up2", b"two")
    await translator.dump("down1", "up2")
    assert await view.read("down1") == b"one"
    assert await fresh.read("down1") == b"two"
    # a key the translator gains later is still looked up
    await translator.dump("down2", "up2")
    assert await view.contains("down2")
    # deletes go through only where allowed
    await fresh.delete("down1")
    assert await out.contains("up2")
    await view.delete("down1")
    assert not await out.contains("up1")
