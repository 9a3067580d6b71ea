"""`taskloom pipeline status|run|graph` through typer's CliRunner, on an app module."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskloom.pipeline.cli import app

runner = CliRunner()

APP = """
from taskloom import TaskManager
from taskloom.pipeline import FileRepository, InProcessTask, Pipeline

manager = TaskManager("memory://")
src = FileRepository({src!r})


@InProcessTask("copy", done=FileRepository({done!r}))
async def copy(job, src, out):
    if job == "{fail}":
        raise RuntimeError("cannot copy " + job)
    await out.write(job, await src.read(job))


copy.link("src", src, is_input=True)
copy.link("out", FileRepository({out!r}), is_output=True)
pipeline = Pipeline([copy], manager=manager)


def make():
    return pipeline
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable app module with three inputs; returns its module name."""
    return _write_app(tmp_path, monkeypatch, fail="none")


def _write_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> str:
    (tmp_path / "src").mkdir()
    for key in ("a", "b", "c"):
        (tmp_path / "src" / key).write_text(key * 3)
    name = f"plapp_{uuid.uuid4().hex[:8]}"
    source = APP.format(
        src=str(tmp_path / "src"), done=str(tmp_path / "done"), out=str(tmp_path / "out"),
        fail=fail,
    )  # fmt: skip
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TASKLOOM_APP", raising=False)
    return name


def test_status_run_status(app_module: str, tmp_path: Path) -> None:
    before = runner.invoke(app, ["status", "--app", f"{app_module}:pipeline", "--json"])
    assert before.exit_code == 0, before.output
    assert json.loads(before.output) == [
        {"task": "copy", "kind": "in-process", "ready": 3, "running": 0, "done": 0, "failed": 0}
    ]
    ran = runner.invoke(app, ["run", "--app", f"{app_module}:pipeline"])
    assert ran.exit_code == 0, ran.output
    assert "3 launched, 3 succeeded, 0 failed" in ran.output
    assert (tmp_path / "out" / "b").read_text() == "bbb"
    table = runner.invoke(app, ["status", "--app", f"{app_module}:manager"])
    assert table.exit_code == 0, table.output
    assert "copy" in table.output and "in-process" in table.output
    again = runner.invoke(app, ["run", "--app", f"{app_module}:make"])
    assert again.exit_code == 0 and "0 launched" in again.output


def test_run_exits_1_when_a_job_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _write_app(tmp_path, monkeypatch, fail="b")
    monkeypatch.setenv("TASKLOOM_APP", f"{module}:pipeline")
    ran = runner.invoke(app, ["run"])
    assert ran.exit_code == 1
    assert "3 launched, 2 succeeded, 1 failed" in ran.output
    status = runner.invoke(app, ["status", "--json"])
    [row] = json.loads(status.output)
    assert (row["done"], row["failed"]) == (2, 1)


def test_graph_text_and_dot(app_module: str) -> None:
    text = runner.invoke(app, ["graph", "--app", f"{app_module}:pipeline"])
    assert text.exit_code == 0
    assert text.output.splitlines()[0] == "task copy (in-process)"
    assert "<- src" in text.output and "-> out" in text.output
    dot = runner.invoke(app, ["graph", "--app", f"{app_module}:pipeline", "--dot"])
    assert dot.exit_code == 0
    assert dot.output.startswith("digraph pipeline {") and dot.output.rstrip().endswith("}")
    assert '"task:copy" -> "repo' in dot.output


def test_bad_apps_exit_2(app_module: str) -> None:
    for spec in ("nocolon", f"{app_module}:nothing", f"{app_module}:src", "no_such_mod:x"):
        result = runner.invoke(app, ["status", "--app", spec])
        assert result.exit_code == 2, (spec, result.output)
    result = runner.invoke(app, ["graph"])
    assert result.exit_code == 2 and "TASKLOOM_APP" in result.output


def test_ls_cat_inject_repositories(app_module: str, tmp_path: Path) -> None:
    spec = ["--app", f"{app_module}:pipeline"]
    listing = runner.invoke(app, ["ls", *spec])
    assert listing.exit_code == 0, listing.output
    assert "copy.src\tFileRepository\tis_input,required_for_start" in listing.output
    assert "copy.done\tFileRepository" in listing.output
    keys = runner.invoke(app, ["ls", "copy.src", *spec])
    assert keys.exit_code == 0 and keys.output.split() == ["a", "b", "c"]
    shown = runner.invoke(app, ["cat", "copy.src", "b", *spec])
    assert shown.exit_code == 0 and shown.stdout == "bbb"
    injected = runner.invoke(app, ["inject", "copy.src", "d", *spec], input="from stdin\n")
    assert injected.exit_code == 0, injected.output
    assert (tmp_path / "src" / "d").read_text() == "from stdin\n"
    (tmp_path / "value.bin").write_bytes(b"\x00\x01")
    from_file = runner.invoke(
        app, ["inject", "copy.src", "e", "-f", str(tmp_path / "value.bin"), *spec]
    )
    assert from_file.exit_code == 0 and (tmp_path / "src" / "e").read_bytes() == b"\x00\x01"
    assert runner.invoke(app, ["ls", "copy.src", *spec]).output.split() == ["a", "b", "c", "d", "e"]
    missing = runner.invoke(app, ["cat", "copy.src", "zzz", *spec])
    assert missing.exit_code == 2 and "no key 'zzz'" in missing.output
    unknown = runner.invoke(app, ["ls", "copy.nope", *spec])
    assert unknown.exit_code == 2 and "copy.src" in unknown.output  # lists what exists
    bad_file = runner.invoke(
        app, ["inject", "copy.src", "f", "-f", str(tmp_path / "absent"), *spec]
    )
    assert bad_file.exit_code == 2


FUNCTION_APP = """
from taskloom import TaskManager
from taskloom.pipeline import FileRepository, KubeFunctionTask, Pipeline

TEMPLATE = {{"spec": {{"containers": [{{"name": "main", "image": "x",
            "command": ["python3", "{{{{argv0}}}}", "launch", "{{{{task}}}}", "{{{{job}}}}"]}}]}}}}
manager = TaskManager("memory://")


async def body(job, src, out):
    if job == "bad":
        raise ValueError("bad job")
    await out.write(job, (await src.read(job)).upper())


square = KubeFunctionTask("up", None, None, TEMPLATE, None, FileRepository({done!r}),
                          FileRepository({func_done!r}), func=body)
square.link("src", FileRepository({src!r}), is_input=True)
square.link("out", FileRepository({out!r}), is_output=True)
pipeline = Pipeline([square], manager=manager)
"""


def test_the_pod_launcher_runs_one_job_body(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from taskloom.pipeline.kube import LAUNCHER

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("abc")
    (tmp_path / "src" / "bad").write_text("x")
    name = f"kfapp_{uuid.uuid4().hex[:8]}"
    dirs = {k: str(tmp_path / k) for k in ("src", "out", "done", "func_done")}
    (tmp_path / f"{name}.py").write_text(FUNCTION_APP.format(**dirs))
    paths = [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "TASKLOOM_APP": f"{name}:pipeline"}

    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(LAUNCHER), "launch", *args], env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip

    ok = launch("up", "a", "--force", "--sync")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "a").read_text() == "ABC"
    assert json.loads((tmp_path / "func_done" / "a").read_text())["success"] is True
    failed = launch("up", "bad")
    assert failed.returncode == 1 and "bad job" in failed.stderr
    assert json.loads((tmp_path / "func_done" / "bad").read_text())["error"]["type"] == "ValueError"
    unknown = launch("nope", "a")
    assert unknown.returncode == 2 and "no task 'nope'" in unknown.stderr
