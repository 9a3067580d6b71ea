"""Links, plug dispositions, the ready set, and `Pipeline.validate()`."""

from __future__ import annotations

import pytest

from taskloom import Resources, TaskManager
from taskloom.errors import ConfigError
from taskloom.pipeline import (
    InProcessTask,
    Link,
    MemoryRepository,
    Pipeline,
    ProcessTask,
    ResourceManager,
    TranslatedRepository,
)


async def noop(job: str) -> None:
    pass


def make(name: str, **links: Link) -> InProcessTask:
    return InProcessTask(name, done=MemoryRepository(f"{name}.done"), func=noop)


def test_link_defaults_follow_pydatatask() -> None:
    repo = MemoryRepository()
    assert Link.make(repo, is_input=True).required_for_start
    assert not Link.make(repo, is_input=True, required_for_start=False).required_for_start
    assert Link.make(repo, is_output=True).required_for_output
    assert Link.make(repo, is_output=True).flags == ["is_output", "required_for_output"]


def test_every_task_links_done_and_live() -> None:
    t = make("t")
    assert t.links["done"].flags == ["is_status", "inhibits_start", "required_for_output"]
    assert t.links["live"].flags == ["is_status", "inhibits_start", "inhibits_output"]
    assert set(t.status) == {"done", "live"}
    with pytest.raises(ConfigError):
        t.link("done", MemoryRepository())
    with pytest.raises(ConfigError):
        t.link("bad name", MemoryRepository())


def test_plug_with_meta_carries_dispositions() -> None:
    up, down = make("up"), make("down")
    out, log = MemoryRepository("out"), MemoryRepository("log")
    up.link("out", out, is_output=True)
    up.link("log", log, is_output=True, required_for_output=False)
    up.link("src", MemoryRepository("src"), is_input=True)
    names = down.plug(up)
    assert names == ["up_done", "up_live", "up_out", "up_log"]  # inputs are not carried
    links = down.links
    assert links["up_out"].repo is out
    assert links["up_out"].flags == ["is_input", "required_for_start"]
    assert links["up_log"].flags == ["is_input"]  # an output, but not required downstream
    assert links["up_done"].flags == ["required_for_start"]  # done upstream gates the start
    assert links["up_live"].flags == ["inhibits_start"]  # jobs in flight upstream hold it
    assert (links["up_out"].upstream, links["up_out"].upstream_link) == ("up", "out")
    assert set(down.required_for_start) == {"up_done", "up_out"}
    assert set(down.inhibits_start) == {"done", "live", "up_live"}
    assert set(down.input) == {"up_out", "up_log"}
    assert down.upstreams == {"up"}


def test_plug_without_meta_and_with_an_allowlist() -> None:
    up, down, other = make("up"), make("down"), make("other")
    up.link("a", MemoryRepository("a"), is_output=True)
    up.link("b", MemoryRepository("b"), is_output=True)
    down.plug(up, meta=False)
    assert set(down.links) == {"done", "live", "up_a", "up_b"}
    assert down.links["up_a"].flags == ["is_input", "required_for_start"]
    other.plug(up, output_links=["b", "done"])
    assert set(other.links) == {"done", "live", "up_b", "up_done"}
    with pytest.raises(ConfigError, match="no link named nope"):
        make("x").plug(up, output_links=["nope"])
    with pytest.raises(ConfigError, match="already has links"):
        down.plug(up)


def test_plug_with_a_translator_wraps_every_link() -> None:
    up, down = make("up"), make("down")
    up.link("out", MemoryRepository("out"), is_output=True)
    translator = MemoryRepository("map")
    down.plug(up, translator=translator)
    view = down.links["up_out"].repo
    assert isinstance(view, TranslatedRepository)
    assert view.translator is translator
    assert isinstance(down.links["up_done"].repo, TranslatedRepository)


async def test_ready_is_required_minus_inhibiting() -> None:
    t = make("t")
    a, b, skip = MemoryRepository("a"), MemoryRepository("b"), MemoryRepository("skip")
    t.link("a", a, is_input=True)
    t.link("b", b, is_input=True)
    t.link("skip", skip, inhibits_start=True)
    for key in ("1", "2", "3", "4"):
        await a.write(key, b"")
    for key in ("2", "3", "4"):
        await b.write(key, b"")
    await skip.write("3", b"")
    await t.done.dump("4", {})
    assert await t.ready.snapshot() == {"2"}
    assert await t.ready.contains("2") and not await t.ready.contains("4")


async def test_ready_override() -> None:
    chosen = MemoryRepository("chosen")
    await chosen.write("x", b"")
    t = InProcessTask("t", done=MemoryRepository(), func=noop, ready=chosen)
    assert t.has_ready_override and t.ready is chosen
    assert await t.ready.snapshot() == {"x"}


def validation_errors(tasks: list[InProcessTask | ProcessTask], **options: object) -> list[str]:
    pipeline = Pipeline(tasks, manager=TaskManager("memory://"), **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        pipeline.validate()
    assert pipeline.problems() == str(info.value).split("\n  ")[1:]
    return pipeline.problems()


def test_validate_accepts_a_sound_pipeline() -> None:
    up, down = make("up"), make("down")
    up.link("src", MemoryRepository(), is_input=True)
    up.link("out", MemoryRepository(), is_output=True)
    down.plug(up)
    Pipeline([up, down], manager=TaskManager("memory://")).validate()


def test_validate_errors() -> None:
    src = MemoryRepository("src")
    a, a2, lonely, orphan = make("a"), make("a"), make("lonely"), make("orphan")
    a.link("src", src, is_input=True)
    a2.link("src", src, is_input=True)
    outside = make("outside")
    outside.link("out", MemoryRepository(), is_output=True)
    orphan.plug(outside)

    async def wants(job: str, missing: MemoryRepository) -> None:
        pass

    needy = InProcessTask("needy", done=MemoryRepository(), func=wants)
    needy.link("src", src, is_input=True)
    sync_body = InProcessTask("sync", done=MemoryRepository(), func=lambda job: None)  # type: ignore[arg-type,return-value]
    sync_body.link("src", src, is_input=True)
    bodiless = InProcessTask("bodiless", done=MemoryRepository())
    bodiless.link("src", src, is_input=True)
    errors = validation_errors([a, a2, lonely, orphan, needy, sync_body, bodiless])
    assert errors == [
        "duplicate task name 'a'",
        "task 'lonely': no link is required_for_start and no ready= override: it never launches",
        "task 'orphan' is plugged into task 'outside', which is not in this pipeline",
        "task 'needy': body takes 'missing', which is not a link (links: done, live, src)",
        "task 'sync': body '<lambda>' must be an async def",
        "task 'bodiless': has no body: pass func= or use the task as a decorator",
    ]


def test_validate_finds_dependency_cycles() -> None:
    a, b, c = make("a"), make("b"), make("c")
    for t in (a, b, c):
        t.link("out", MemoryRepository(f"{t.name}.out"), is_output=True)
    a.plug(c)
    b.plug(a)
    c.plug(b)
    errors = validation_errors([a, b, c])
    assert errors == [
        "cycle: a -> b -> c -> a (each waits for the next one's output, so none can start; "
        "give one a ready= override if intended)"
    ]
    # through a shared repository, without plug
    shared_in, shared_out = MemoryRepository("x"), MemoryRepository("y")
    p, q = make("p"), make("q")
    p.link("x", shared_in, is_input=True)
    p.link("y", shared_out, is_output=True)
    q.link("y", shared_out, is_input=True)
    q.link("x", shared_in, is_output=True)
    assert validation_errors([p, q])[0].startswith("cycle: p -> q -> p")
    # an in-place update (a task reading and writing one repository) is not a cycle
    inplace = make("inplace")
    inplace.link("data", shared_in, is_input=True, is_output=True)
    Pipeline([inplace], manager=TaskManager("memory://")).validate()


def test_validate_checks_quotas_and_templates() -> None:
    big = InProcessTask("big", done=MemoryRepository(), func=noop, resources=Resources(cpu="4"))
    big.link("src", MemoryRepository(), is_input=True)
    script = ProcessTask("script", "cat {{ src }} {{ nope }}", done=MemoryRepository())
    script.link("src", MemoryRepository(), is_input=True)
    errors = validation_errors(
        [big, script], quotas=[ResourceManager(Resources(cpu="2"), name="cluster")]
    )
    assert errors == [
        "task 'big' can never launch: cluster: cpu 0 + 4 would exceed 2",
        "task 'script': template uses {{ nope }}, which is neither a link nor one of job, "
        "task, run_id, attempt, workdir",
    ]
