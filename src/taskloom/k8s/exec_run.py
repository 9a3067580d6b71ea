"""What `taskloom exec-run <run id>` does inside a Kubernetes Job: run one attempt, store it.

The consumer that launched the Job holds the run's lease, so the pod never finishes the run:
it leaves the attempt's outcome (the shared `outcome` codec: the encoded result, or the error
as data) in the store's key/value space under `outcome_key(run id, attempt)`, where the waiting
executor takes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from .. import outcome
from ..errors import RunNotFoundError
from ..interface import check_size
from ..outcome import StoreOutcomes
from ..policies import K8sConfig
from ..secret_inputs import inputs_of
from .manifests import input_env

if TYPE_CHECKING:
    from ..manager import TaskManager
    from ..run import TaskRun
    from ..task import Task

# The outcome outlives the Job by this much, so a consumer that adopts a finished Job after a
# restart (same run, same attempt) still finds it.
OUTCOME_MARGIN_SECONDS = 3600.0


def _secrets(task: Task) -> dict[str, str]:
    # Inside the Job each secret arrives through a secretKeyRef as its target variable.
    return {
        s.key: os.environ[s.target_env] if s.target_env in os.environ else s.resolve()
        for s in task.secrets
    }


def _params(task: Task, run: TaskRun) -> dict[str, Any]:
    # The worker hands each secret input over in a Secret of this attempt, as JSON.
    params = dict(run.params)
    for field in task.interface.secret_fields:
        if input_env(field) in os.environ:
            params[field] = json.loads(os.environ[input_env(field)])
    return params


async def _call(manager: TaskManager, task: Task, run: TaskRun) -> Any:
    # a sealed input without its Secret opens only with the manager's own key (SecretKeyError)
    kwargs = inputs_of(task, _params(task, run), manager.secret_box)
    run._manager = manager
    run._secrets = _secrets(task)
    if task.is_async:
        value = await task.invoke(run, kwargs)
    else:
        value = await asyncio.to_thread(task.invoke_sync, run, kwargs)
    data = task.interface.encode_result(value)
    check_size(task.name, "output", data, task.max_inline_io_bytes)
    return data


async def exec_run(manager: TaskManager, run_id: str, *, attempt: int | None = None) -> int:
    """Run one attempt of `run_id` here and store its outcome; return the exit code (0/1).

    `attempt` defaults to `TASKLOOM_ATTEMPT` (set on the Job), else the run's retry attempt.
    The manager is connected if needed and left open for the caller to close.
    """
    await manager.connect()
    try:
        run = await manager.get_run(run_id)
    except RunNotFoundError:
        print(
            f"taskloom exec-run: run {run_id} not found in store {manager.store.url}; "
            "the Job must use the worker's store (TASKLOOM_STORE)",
            file=sys.stderr,
        )
        return 1
    env_attempt = os.environ.get("TASKLOOM_ATTEMPT")
    if attempt is None:
        attempt = int(env_attempt) if env_attempt else run.retry_attempt
    config = K8sConfig()
    try:
        task = manager.get_task(run.task)
        config = task.get_k8s_config()
        result = outcome.success(await _call(manager, task, run))
        code = 0
    except Exception as exc:
        # The traceback also goes to the pod log, the only trace left if the store write fails.
        traceback.print_exc()
        result = outcome.failure(exc, run.id)
        code = 1
    if run._report:  # the worker's ReportHooks never sees this pod's run object
        from ..report import save_report

        await save_report(manager.store, run, manager.clock, run._report)
    channel = StoreOutcomes(manager.store, manager.store.url, manager.clock)
    await channel.put(run.id, attempt, result, config.job_ttl + OUTCOME_MARGIN_SECONDS)
    return code
