"""An app for CLI precedence tests: `--app tests.apps.colors_app:make`."""

from __future__ import annotations

import os

from taskloom import TaskManager, task


@task
def colorize(color: str, shade: str = "plain") -> str:
    """Paint in one color."""
    return f"painted {color} ({shade})"


def make() -> TaskManager:
    """The manager on the store named by TASKLOOM_STORE."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[colorize])
