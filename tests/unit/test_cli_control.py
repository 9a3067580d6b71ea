"""`taskloom queue ...` and `taskloom schedule ...` through typer's runner, on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskloom.cli import app
from taskloom.schedule_cli import parse_interval

APP = "tests.apps.control_app:make"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TASKLOOM_STORE", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("TASKLOOM_APP", APP)
    monkeypatch.setenv("CONTROL_LOG", str(tmp_path / "log"))
    monkeypatch.chdir(ROOT)
    return CliRunner(env={"COLUMNS": "200"})


def test_queue_pause_resume_limit_and_ls(cli: CliRunner) -> None:
    assert cli.invoke(app, ["enqueue", "steady", "i=1"]).exit_code == 0
    paused = cli.invoke(app, ["queue", "pause", "steady"])
    assert paused.exit_code == 0 and "paused" in paused.output
    limited = cli.invoke(app, ["queue", "limit", "steady", "10/m"])
    assert limited.exit_code == 0 and "10/m" in limited.output
    listed = {q["name"]: q for q in json.loads(cli.invoke(app, ["queue", "ls", "--json"]).output)}
    steady = listed["steady"]
    assert steady["paused"] is True and steady["depth"]["medium"] == 1
    assert steady["rate_limit"] == "10/m" and steady["oldest_queued_age"] >= 0
    assert cli.invoke(app, ["queue", "resume", "steady"]).exit_code == 0
    assert cli.invoke(app, ["queue", "limit", "steady", "--off"]).exit_code == 0
    listed = {q["name"]: q for q in json.loads(cli.invoke(app, ["queue", "ls", "--json"]).output)}
    assert listed["steady"]["paused"] is False and listed["steady"]["rate_limit"] is None
    assert cli.invoke(app, ["queue", "limit", "steady", "lots"]).exit_code == 2
    assert cli.invoke(app, ["queue", "limit", "steady"]).exit_code == 2


def test_schedule_add_ls_disable_rm(cli: CliRunner) -> None:
    added = cli.invoke(app, ["schedule", "add", "beat", "report", "--every", "30s", "day=3"])
    assert added.exit_code == 0, added.output
    cron = ["schedule", "add", "nine", "report", "--cron", "0 9 * * *", "--tz", "Europe/Rome"]
    assert cli.invoke(app, [*cron, "--params", '{"day": 4}']).exit_code == 0
    listed = {
        s["name"]: s for s in json.loads(cli.invoke(app, ["schedule", "ls", "--json"]).output)
    }
    assert listed["beat"]["source"] == "stored" and listed["beat"]["params"] == {"day": 3}
    assert "Europe/Rome" in listed["nine"]["schedule"]
    assert cli.invoke(app, ["schedule", "disable", "beat"]).exit_code == 0
    listed = {
        s["name"]: s for s in json.loads(cli.invoke(app, ["schedule", "ls", "--json"]).output)
    }
    assert listed["beat"]["enabled"] is False and listed["beat"]["next_fire"] is None
    assert cli.invoke(app, ["schedule", "rm", "beat"]).exit_code == 0
    gone = cli.invoke(app, ["schedule", "rm", "beat"])
    assert gone.exit_code == 2 and "not found" in gone.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope", "--every", "1s"], "unknown task 'nope'"),
        (["report", "--every", "1s", "day=monday"], "invalid params"),
        (["report", "--every", "1s"], "day"),
        (["report", "--cron", "99 * * * *", "day=1"], "invalid cron"),
        (["report", "--every", "soon", "day=1"], "invalid interval"),
        (["report", "day=1"], "exactly one of --every and --cron"),
        (["report", "--every", "1s", "--tz", "UTC", "day=1"], "--tz applies to --cron"),
    ],
)
def test_bad_schedules_exit_2(cli: CliRunner, args: list[str], says: str) -> None:
    out = cli.invoke(app, ["schedule", "add", "x", *args])
    assert out.exit_code == 2, out.output
    assert says in out.output


def test_parse_interval() -> None:
    assert parse_interval("1s").total_seconds() == 1
    assert parse_interval("500ms").total_seconds() == 0.5
    assert parse_interval("5m").total_seconds() == 300
    assert parse_interval("2h").total_seconds() == 7200
    assert parse_interval("90").total_seconds() == 90
