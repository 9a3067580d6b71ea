"""Running one job's body in the pod of a `KubeFunctionTask` (see `launcher/__main__.py`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from ..errors import ConfigError
from .pipeline import Pipeline


async def launch_job(pipelines: Sequence[Pipeline], task: str, job: str) -> int:
    """Run `job` of `task` here; the exit status the pod should end with (0: success)."""
    from .kube import KubeFunctionTask

    for pipeline in pipelines:
        found = pipeline.tasks.get(task)
        if found is None:
            continue
        if not isinstance(found, KubeFunctionTask):
            raise ConfigError(f"task {task!r} is a {found.kind} task, not a function task")
        await pipeline.manager.connect()
        return 0 if await found.run_body(job) else 1
    raise ConfigError(f"no task {task!r} in the app's pipelines")


def main(argv: Sequence[str] | None = None) -> int:
    """The launcher's command line: `launch TASK JOB [--force] [--sync] [--app SPEC]`."""
    from .cli import load_pipelines

    parser = argparse.ArgumentParser(prog="taskloom-launch")
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="run one job's body here")
    launch.add_argument("task")
    launch.add_argument("job")
    launch.add_argument("--force", action="store_true", help="accepted: the job always runs")
    launch.add_argument("--sync", action="store_true", help="accepted: the job always runs here")
    launch.add_argument("--app", default=os.environ.get("TASKLOOM_APP"))
    args = parser.parse_args(argv)
    try:
        pipelines = load_pipelines(args.app)
        return asyncio.run(launch_job(pipelines, args.task, args.job))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
