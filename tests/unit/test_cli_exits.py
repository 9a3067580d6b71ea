"""The console script as a user runs it (real subprocesses): exit codes, one-line errors,
brackets kept, run id prefixes, `show`, `--version`, `--store`, `db migrate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import taskloom

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
APP = "tests.apps.cli_app:make"

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {
        **os.environ, "TASKLOOM_STORE": f"sqlite:///{tmp_path}/cli.db", "TASKLOOM_APP": APP,
        "PYTHONPATH": PYTHONPATH, "COLUMNS": "80",
    }  # fmt: skip
    env.pop("TASKLOOM_DEBUG", None)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskloom", *args], env={**env, **extra_env}, cwd=ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    return run


def one_line_error(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert out.returncode == code, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_option_values_exit_2_with_one_line(cli: Cli) -> None:
    one_line_error(cli("enqueue", "add", "a=1", "--priority", "urgent"), 2, "--priority")
    one_line_error(cli("worker", "--log-level", "LOUD"), 2, "--log-level")
    one_line_error(cli("worker", "--catch-up", "bogus"), 2, "--catch-up")
    one_line_error(cli("scheduler", "--catch-up", "bogus"), 2, "--catch-up")
    one_line_error(cli("worker", "--log-format", "xml"), 2, "--log-format")
    one_line_error(cli("worker", "--concurrency", "0"), 2, "--concurrency")
    one_line_error(cli("worker", TASKLOOM_WORKER_CATCH_UP="never"), 2, "TASKLOOM_WORKER_CATCH_UP")
    one_line_error(cli("run", "nope"), 2, "unknown task 'nope'")
    one_line_error(cli("run", "add", "a=x"), 2, "invalid params")
    one_line_error(cli("--store", "bogus://x", "runs"), 2, "unknown store URL")


def test_store_failures_are_one_line(cli: Cli, tmp_path: Path) -> None:
    pg = os.environ.get("TASKLOOM_TEST_POSTGRES_URL")
    if pg:
        bad_user = pg.replace("postgres@", "taskloom_no_such_role@", 1)
        one_line_error(cli("--store", bad_user, "runs"), 1, "taskloom_no_such_role")
    one_line_error(cli("--store", "redis://127.0.0.1:1/0", "runs"), 1, "127.0.0.1:1")
    debug = cli("--debug", "--store", "redis://127.0.0.1:1/0", "runs")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_brackets_print_verbatim(cli: Cli) -> None:
    failed = cli("run", "fails", "why=expected list[int], got str")
    assert failed.returncode == 1 and "expected list[int], got str" in failed.stderr
    assert "Fails its first attempt [then succeeds]" in cli("ls", COLUMNS="200").stdout
    run_id = cli("enqueue", "fails", "why=see [docs] for list[int]").stdout.strip()
    assert cli("worker", "--burst").returncode == 0
    shown = cli("show", run_id)
    assert "see [docs] for list[int]" in shown.stdout
    assert "list[int]" in cli("runs").stdout


def test_unknown_and_ambiguous_run_ids_exit_2(cli: Cli) -> None:
    for command in ("show", "cancel", "retry"):
        one_line_error(cli(command, "0123456789abcdef"), 2, "not found")
    one_line_error(cli("show", "abc"), 2, "6 or more")
    first = cli("enqueue", "add", "a=1").stdout.strip()
    second = cli("enqueue", "add", "a=2").stdout.strip()
    common = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)]
    if len(common) >= 6:
        out = cli("show", common)
        one_line_error(out, 2, "several runs", first, second)
    unique = first[: len(common) + 1]
    shown = cli("show", unique if len(unique) >= 6 else first[:6], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == first


def test_show_prints_params_result_attempts_children_and_logs(cli: Cli) -> None:
    run_id = cli("enqueue", "flaky").stdout.strip()
    ok = cli("enqueue", "add", "a=40", "b=2").stdout.strip()
    worker = cli("worker", "--burst")
    assert worker.returncode == 0, worker.stderr
    while json.loads(cli("show", run_id, "--json").stdout)["state"] != "success":
        assert cli("worker", "--burst").returncode == 0  # the retry waits 50 ms
    shown = cli("show", run_id[:10])
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    for needle in (
        "params",
        "result",
        '"ok"',
        "attempts",
        "ConnectionError",
        "flaky backend",
        "logs (3)",
        "attempt 1 of [flaky]",
        "first attempt: failing on purpose",
    ):
        assert needle in out, (needle, out)  # fmt: skip
    added = cli("show", ok).stdout
    assert '"a": 40' in added and "42" in added


def test_runs_ids_at_80_columns_are_accepted_by_show(cli: Cli) -> None:
    ids = [cli("enqueue", "add", f"a={i}").stdout.strip() for i in range(3)]
    listing = cli("runs").stdout
    shown_ids = [line.split("│")[1].strip() for line in listing.splitlines() if "add" in line]
    assert len(shown_ids) == 3 and len(set(shown_ids)) == 3
    for short, full in zip(shown_ids, reversed(ids), strict=True):
        assert full.startswith(short) and len(short) >= 6
        assert json.loads(cli("show", short, "--json").stdout)["id"] == full


def test_version(cli: Cli) -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"taskloom {taskloom.__version__}"


def test_store_option_and_env_override_the_apps_url(cli: Cli, tmp_path: Path) -> None:
    """The app builds its manager on one file; --store and TASKLOOM_STORE pick another."""
    fixed = "tests.apps.cli_app:fixed_url"
    other = f"sqlite:///{tmp_path}/other.db"
    env = {"TASKLOOM_FIXED_URL": f"sqlite:///{tmp_path}/fixed.db"}
    queued = cli("--store", other, "enqueue", "add", "a=1", "--app", fixed, **env).stdout.strip()
    assert cli("show", queued, "--app", fixed, **env, TASKLOOM_STORE=other).returncode == 0
    missing = cli("show", queued, "--app", fixed, **env, TASKLOOM_STORE="")
    assert missing.returncode == 2  # the app's own URL: a different file


def test_db_migrate_says_it_created_the_schema(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    first = cli("db", "migrate", "--url", url)
    assert first.returncode == 0 and "created the schema" in first.stdout, first.stdout
    again = cli("db", "migrate", "--url", url)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_serve_without_the_api_extra_is_one_line(cli: Cli, tmp_path: Path) -> None:
    # a module named fastapi that fails to import stands in for the missing extra
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "fastapi.py").write_text("raise ImportError('No module named fastapi', name='fastapi')")
    out = cli("serve", PYTHONPATH=f"{fake}{os.pathsep}{PYTHONPATH}")
    one_line_error(out, 2, "pip install 'taskloom[api]'")
