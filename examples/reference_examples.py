"""The examples of the reference documents, unchanged apart from the import line.

aio-fluid's `hello` (reference 000) and Flyte 2's `my_task` / `aio` examples (reference 001).
Run them with `taskloom run hello --app examples.reference_examples:manager`.
"""

from __future__ import annotations

import asyncio
import os
from typing import List  # noqa: UP035 - kept as the reference wrote it

from taskloom import Resources, TaskEnvironment, TaskManager, TaskRun, task


@task
async def hello(ctx: TaskRun) -> None:
    print("Hello, world!")


@task(name="my_task", image="my_image", resources=Resources(cpu="1", memory="1Gi"))
def my_task():  # type: ignore[no-untyped-def]
    pass


env = TaskEnvironment("reference")


@env.task
def my_legacy_task(x: int) -> int:
    return x


@env.task
async def my_new_parent_task(n: int) -> List[int]:  # noqa: UP006
    collect = []
    for x in range(n):
        collect.append(my_legacy_task.aio(x))
    return asyncio.gather(*collect)  # type: ignore[return-value]


manager = TaskManager(
    os.environ.get("TASKLOOM_STORE", "sqlite:///taskloom.db"),
    tasks=[hello, my_task, my_legacy_task, my_new_parent_task],
)
