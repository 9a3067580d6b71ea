"""The CLI through typer's runner, plus real subprocesses of the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskloom.cli import app, parse_params

APP = "tests.apps.cli_app:make"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    pytest.importorskip("taskloom.store.sqlite")
    monkeypatch.setenv("TASKLOOM_STORE", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("TASKLOOM_APP", APP)
    monkeypatch.chdir(ROOT)
    return CliRunner(env={"COLUMNS": "200"})


def test_parse_params() -> None:
    assert parse_params(["x=1", "name=otter", "f=1.5", "l=[1,2]", "s=\"1\""], '{"y": true}') == {
        "y": True, "x": 1, "name": "otter", "f": 1.5, "l": [1, 2], "s": "1"
    }  # fmt: skip


def test_ls(cli: CliRunner) -> None:
    out = cli.invoke(app, ["ls"])
    assert out.exit_code == 0, out.output
    assert "add" in out.output and "Add two numbers." in out.output
    data = json.loads(cli.invoke(app, ["ls", "--json"]).output)
    assert {t["name"] for t in data} == {"add", "fails", "aborts", "flaky"}


def test_run_success_failure_and_bad_input(cli: CliRunner) -> None:
    ok = cli.invoke(app, ["run", "add", "a=1", "b=2"])
    assert ok.exit_code == 0 and ok.output.strip() == "3"
    js = cli.invoke(app, ["run", "add", "--params", '{"a": 5}', "--json"])
    assert js.exit_code == 0 and json.loads(js.output)["result"] == 6
    bad = cli.invoke(app, ["run", "fails", "why=nope"])
    assert bad.exit_code == 1 and "failure" in bad.output and "ValueError: nope" in bad.output
    ab = cli.invoke(app, ["run", "aborts"])
    assert ab.exit_code == 1 and "aborted" in ab.output
    inv = cli.invoke(app, ["run", "add", "a=x"])
    assert inv.exit_code == 2 and "invalid params" in inv.output and "a:" in inv.output
    unk = cli.invoke(app, ["run", "nope"])
    assert unk.exit_code == 2 and "unknown task 'nope'" in unk.output
    usage = cli.invoke(app, ["run", "add", "novalue"])
    assert usage.exit_code == 2 and "not key=value" in usage.output


def test_queue_work_inspect_cancel_retry(cli: CliRunner) -> None:
    queued = cli.invoke(app, ["enqueue", "add", "a=41"])
    assert queued.exit_code == 0, queued.output
    run_id = queued.output.strip()
    other = cli.invoke(app, ["enqueue", "add", "a=1", "--priority", "low"]).output.strip()
    assert cli.invoke(app, ["cancel", other]).output.startswith(f"{other} aborted")
    listed = cli.invoke(app, ["runs", "--state", "queued", "--json"])
    assert [r["id"] for r in json.loads(listed.output)] == [run_id]
    work = cli.invoke(app, ["worker", "--burst", "--log-level", "WARNING"])
    assert work.exit_code == 0, work.output
    shown = json.loads(cli.invoke(app, ["show", run_id, "--json"]).output)
    assert shown["state"] == "success" and shown["result"] == 42
    tree = cli.invoke(app, ["show", run_id])
    assert tree.exit_code == 0 and "add" in tree.output and "success" in tree.output
    retried = cli.invoke(app, ["retry", run_id]).output.strip()
    assert json.loads(cli.invoke(app, ["show", retried, "--json"]).output)["from_run_id"] == run_id
    table = cli.invoke(app, ["runs"])
    assert table.exit_code == 0 and "success" in table.output
    missing = cli.invoke(app, ["show", "nope"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_no_app_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_APP", raising=False)
    out = CliRunner().invoke(app, ["ls"])
    assert out.exit_code == 2 and "--app" in out.output


def test_console_script_subprocess(tmp_path: Path) -> None:
    pytest.importorskip("taskloom.store.sqlite")
    env = {
        **os.environ,
        "TASKLOOM_STORE": f"sqlite:///{tmp_path}/sub.db",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    script = Path(sys.executable).parent / "taskloom"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "taskloom"]
    ok = subprocess.run(
        [*cmd, "run", "add", "a=2", "--app", APP], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip() == "3", ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "taskloom", "run", "fails", "--app", APP], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "ValueError: boom" in bad.stderr


def test_demo_subprocess(tmp_path: Path) -> None:
    pytest.importorskip("taskloom.store.sqlite")
    out = subprocess.run(
        [sys.executable, "-m", "taskloom", "demo", "--db", str(tmp_path / "demo.db"), "--runs", "12"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and "ValueError" in out.stdout and "checksum" in out.stdout
