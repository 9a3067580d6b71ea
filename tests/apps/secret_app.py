"""Tasks with SecretStr inputs, served by real worker processes in the secret-input tests."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from taskloom import Cache, TaskManager, TaskRun, task

CALLS: list[str] = []


@task
async def login(ctx: TaskRun, user: str, password: SecretStr) -> str:
    """Gets the plain secret where it runs; logs only the user."""
    ctx.logger.info("logging in %s", user)
    return f"{user}:{len(password.get_secret_value())}:{password.get_secret_value()[::-1]}"


@task(cache=Cache(version="1"))
def fetch(account: str, token: SecretStr) -> str:
    """Cached: what it returns depends on the token, so the token must key the cache."""
    CALLS.append(account)
    return f"{account} seen by {token.get_secret_value()[:4]}"


@task(cpu_bound=True)
def in_child(ctx: TaskRun, password: SecretStr) -> dict[str, object]:
    """Runs in a pool child: the secret came over the pipe, not argv or the environment."""
    pid, plain = os.getpid(), password.get_secret_value().encode()
    return {
        "pid": pid,
        "length": len(plain),
        "in_argv": plain in Path(f"/proc/{pid}/cmdline").read_bytes(),
        "in_environ": plain in Path(f"/proc/{pid}/environ").read_bytes(),
    }


@task
def fails(password: SecretStr) -> None:
    """Fails; its error must not carry the secret."""
    raise ValueError("wrong password")


def make() -> TaskManager:
    """The manager on TASKLOOM_STORE (the key, if any, from TASKLOOM_SECRET_KEY)."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[login, fetch, in_child, fails])
