"""Encoding inputs and results: typed errors, and the opt-in pickle serializer."""

from __future__ import annotations

import pytest

from taskloom import ConfigError, InvalidParamsError, ResultEncodingError, TaskRun, TaskState, task
from taskloom.testing import memory_manager, run_burst


class Handle:
    """A plain class: no JSON form."""

    def __init__(self, name: str) -> None:
        self.name = name


@task
def use_handle(h: Handle) -> str:
    return h.name


@task
def make_handle(name: str) -> Handle:
    return Handle(name)


@task(serializer="pickle")
def make_handle_pickled(name: str) -> Handle:
    return Handle(name)


@task(serializer="pickle")
def leak(name: str) -> object:
    return lambda: name  # a lambda: not picklable by the stdlib


async def test_an_input_without_json_form_is_invalid_params() -> None:
    async with memory_manager([use_handle]) as manager:
        with pytest.raises(InvalidParamsError) as caught:
            await manager.queue("use_handle", h=Handle("x"))
    assert caught.value.errors[0]["loc"] == ("h",)
    assert "Handle value cannot be encoded with the json serializer" in str(caught.value)
    assert "serializer='pickle'" in str(caught.value)


async def test_a_result_without_json_form_is_a_result_encoding_error() -> None:
    with pytest.raises(ResultEncodingError, match="Handle value cannot be encoded with the json"):
        make_handle("x")
    async with memory_manager([make_handle]) as manager:
        done = await manager.execute("make_handle", name="x")
    assert done.state is TaskState.failure
    assert done.failure is not None and done.failure.type_name == "ResultEncodingError"


async def test_pickle_serializer_keeps_any_picklable_object() -> None:
    assert make_handle_pickled("x").name == "x"
    async with memory_manager([make_handle_pickled, leak]) as manager:
        queued = await manager.queue("make_handle_pickled", name="y")
        await run_burst(manager)
        got = await manager.get_run(queued.id)
        assert isinstance(got.result, Handle) and got.result.name == "y"
        raw = await manager.get_run(queued.id, decode=False)
        assert set(raw.result) == {"__pickle__"}
        failed = await manager.execute("leak", name="z")
    assert failed.failure is not None and failed.failure.type_name == "ResultEncodingError"
    assert "pickle serializer" in failed.failure.message


def test_unknown_serializer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="serializer must be one of json, pickle"):
        task(serializer="yaml")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="serializer must be one of"):
        memory_manager(serializer="marshal")


@task
def double_handle(h: Handle) -> Handle:
    return Handle(h.name * 2)


@task
async def parent_of_handles(ctx: TaskRun, name: str) -> str:
    child = await double_handle.aio(Handle(name))
    return child.name


async def test_manager_serializer_reaches_child_runs() -> None:
    async with memory_manager([double_handle, parent_of_handles], serializer="pickle") as manager:
        done = await manager.execute("parent_of_handles", name="ab")
        assert done.state is TaskState.success and done.result == "abab"
        [child] = await manager.runs(parent_id=done.id)
        assert isinstance(child.result, dict) and set(child.result) == {"__pickle__"}
