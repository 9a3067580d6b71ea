"""`Task[P, R]` under the type checker: a user-style module checked with the pinned mypy."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

USER_MODULE = """
from collections.abc import Awaitable
from taskloom import Task, TaskEnvironment, TaskManager, TaskRun, task

@task
def add(a: int, b: int) -> int:
    return a + b

@task(retries=2)
async def greet(name: str) -> str:
    return "hi " + name

@task
def with_context(ctx: TaskRun, n: int) -> float:
    return n / 2

manager = TaskManager("memory://")

@manager.task(priority="low")
def shout(word: str) -> str:
    return word.upper()

env = TaskEnvironment("etl", retries=1)

@env.task
async def load(path: str) -> bytes:
    return b""

async def main() -> None:
    reveal_type(add(1, 2))
    reveal_type(await add.aio(1, 2))
    pending: Awaitable[str] = greet.aio("x")
    await pending
    reveal_type(add.override(timeout=3))
    reveal_type(with_context(4))
    reveal_type(shout("x"))
    reveal_type(await load.aio("x"))
    add("nope")
    greet(1)
    some: Task = add
"""


def check(source: str, tmp_path: Path) -> tuple[dict[int, str], list[str]]:
    """Revealed types by line and error lines from mypy --strict over `source`."""
    path = tmp_path / "user_tasks.py"
    path.write_text(textwrap.dedent(source))
    out, err, _status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(path)]
    )
    assert not err, err
    revealed: dict[int, str] = {}
    errors: list[str] = []
    for line in out.splitlines():
        m = re.match(r".*user_tasks\.py:(\d+): (note|error): (.*)", line)
        if m is None:
            continue
        lineno, kind, text = int(m[1]), m[2], m[3]
        if kind == "note" and text.startswith("Revealed type is"):
            revealed[lineno] = text.split('"')[1]
        elif kind == "error":
            errors.append(f"{lineno}: {text}")
    return revealed, errors


def test_task_is_generic_over_params_and_result(tmp_path: Path) -> None:
    revealed, errors = check(USER_MODULE, tmp_path)
    lines = textwrap.dedent(USER_MODULE).splitlines()

    def at(snippet: str) -> int:
        return next(i for i, text in enumerate(lines, 1) if snippet in text)

    assert revealed[at("reveal_type(add(1, 2))")] == "int"
    assert revealed[at("await add.aio(1, 2)")] == "int"
    assert revealed[at("add.override")] == "taskloom.task.Task[[a: int, b: int], int]"
    assert revealed[at("with_context(4)")] == "float"
    assert revealed[at('shout("x")')] == "str"
    assert revealed[at('load.aio("x")')] == "bytes"
    bad = {e.split(":")[0] for e in errors}
    assert bad == {str(at('add("nope")')), str(at("greet(1)"))}, errors
    assert any("incompatible type" in e and '"str"' in e for e in errors), errors
