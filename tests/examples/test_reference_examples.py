"""The reference documents' examples run unchanged (but for the import) via execute and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskloom import TaskManager, TaskState

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/ref.db"
    monkeypatch.setenv("TASKLOOM_STORE", url)
    return url


async def test_through_execute(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    from examples import reference_examples as ref

    async with TaskManager(store, tasks=ref.manager.tasks.values()) as m:
        hello = await m.execute("hello")
        mine = await m.execute("my_task")
        legacy = await m.execute("my_legacy_task", x=3)
        parent = await m.execute("my_new_parent_task", n=4)
        children = await m.runs(parent_id=parent.id)
    assert "Hello, world!" in capsys.readouterr().out
    assert [r.state for r in (hello, mine, legacy, parent)] == [TaskState.success] * 4
    assert legacy.result == 3 and parent.result == [0, 1, 2, 3]
    assert sorted(c.result for c in children) == [0, 1, 2, 3]  # durable child runs
    assert ref.my_task.resources is not None and ref.my_task.image == "my_image"


@pytest.mark.parametrize(
    ("args", "out"),
    [(["hello"], "Hello, world!"), (["my_task"], ""), (["my_new_parent_task", "n=3"], "[0, 1, 2]")],
)
def test_through_the_cli(store: str, args: list[str], out: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskloom", "run", *args, "--app", "examples.reference_examples:manager"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == out
