"""Bad per-run options are typed errors naming the option; errors never echo an input."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from taskloom import InvalidParamsError, TaskManager, task
from taskloom.cli import app

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pa55-w0rd-do-not-echo"


@task
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


@task
def login(user: int, password: SecretStr) -> str:
    """Takes a secret input."""
    return str(user)


async def test_an_unknown_priority_names_the_option() -> None:
    async with TaskManager("memory://", tasks=[add]) as m:
        with pytest.raises(InvalidParamsError) as caught:
            await m.enqueue("add", {"a": 1}, priority="urgent")
    assert caught.value.errors[0]["loc"] == ("priority",)
    assert "'urgent'" in str(caught.value) and "high, medium, low" in str(caught.value)


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf, -1.0, timedelta(seconds=-5)])
async def test_a_delay_that_is_not_finite_and_positive_names_the_option(
    delay: float | timedelta,
) -> None:
    async with TaskManager("memory://", tasks=[add]) as m:
        with pytest.raises(InvalidParamsError) as caught:
            await m.enqueue("add", {"a": 1}, delay=delay)
        assert await m.runs() == []
    assert caught.value.errors[0]["loc"] == ("delay",)


async def test_a_zero_or_positive_delay_is_accepted() -> None:
    async with TaskManager("memory://", tasks=[add]) as m:
        now = await m.enqueue("add", {"a": 1}, delay=0)
        later = await m.enqueue("add", {"a": 1}, delay=timedelta(seconds=5))
    assert now.execute_after is None and later.execute_after is not None


async def test_invalid_params_never_keep_the_raw_input() -> None:
    async with TaskManager("memory://", tasks=[login]) as m:
        with pytest.raises(InvalidParamsError) as caught:
            await m.execute("login", user=SECRET, password=12345)
    errors = caught.value.errors
    assert {err["loc"][0] for err in errors} == {"user", "password"}
    assert all("input" not in err for err in errors)
    assert SECRET not in repr(errors) and SECRET not in str(caught.value)


def test_cli_bad_priority_and_delay_exit_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKLOOM_STORE", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("TASKLOOM_APP", "tests.apps.cli_app:make")
    monkeypatch.chdir(ROOT)
    cli = CliRunner(env={"COLUMNS": "200"})
    for option in (["--priority", "urgent"], ["--delay", "nan"], ["--delay", "-3"]):
        out = cli.invoke(app, ["enqueue", "add", "a=1", *option])
        assert out.exit_code == 2, out.output
        assert "Traceback" not in out.output and option[0][2:] in out.output
