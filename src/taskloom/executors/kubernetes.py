"""Runs cpu_bound tasks as Kubernetes Jobs (chosen automatically inside a cluster).

One Job per attempt, named from the run id and the attempt, its container copied from the
worker Deployment and running `taskloom exec-run <run id>`. The pod leaves the attempt's
outcome in the run's outcome channel (`k8s.exec_run`, the shared `outcome` codec); this
executor polls the Job every `K8sConfig.sleep` seconds, then takes that outcome from its
`RunEnv`. On timeout, cancel or any error while waiting the Job is
deleted, so no pod outlives the attempt that launched it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TaskFailedError, TaskTimeoutError
from ..k8s.client import (
    K8sClient,
    KubernetesApiError,
    KubernetesConflictError,
    KubernetesNotFoundError,
)
from ..k8s.manifests import (
    LABEL_RUN,
    inputs_secret_manifest,
    inputs_secret_name,
    job_manifest,
)
from ..outcome import value_of
from ..policies import K8sConfig
from ..secret_inputs import secret_values
from .base import RunEnv, with_timeout

if TYPE_CHECKING:
    from ..run import TaskRun
    from ..task import Task

log = logging.getLogger("taskloom.executors.kubernetes")

Body = dict[str, Any]

# Container end reasons that say nothing beyond "it exited non-zero".
_GENERIC_REASONS = frozenset({"", "Error", "Completed"})


def job_state(job: Body) -> str | None:
    """ "succeeded", "failed", or None while the Job is still going."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if status.get("succeeded") or conditions.get("Complete", {}).get("status") == "True":
        return "succeeded"
    if status.get("failed") or conditions.get("Failed", {}).get("status") == "True":
        return "failed"
    return None


def pod_reason(job: Body, pod: Body | None, container: str) -> tuple[str, str]:
    """(reason, detail) explaining why a Job's pod ended or never started."""
    conditions = (job.get("status") or {}).get("conditions") or []
    job_reason = next(
        (str(c.get("reason") or "") for c in conditions if c.get("type") == "Failed"), ""
    )
    if pod is None:
        return job_reason or "JobFailed", "no pod found"
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    mine = next(
        (s for s in statuses if s.get("name") == container), statuses[0] if statuses else {}
    )
    state = mine.get("state") or {}
    ended = state.get("terminated") or mine.get("lastState", {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    detail = f"pod {pod.get('metadata', {}).get('name', '?')}"
    if ended:
        detail += f", container {mine.get('name', container)} exit code {ended.get('exitCode')}"
    elif waiting:
        detail += f", container waiting: {waiting.get('message') or waiting.get('reason')}"
    # Most specific first: OOMKilled says more than the Job's BackoffLimitExceeded.
    for reason in (
        job_reason if job_reason == "DeadlineExceeded" else "",
        str(ended.get("reason") or ""),
        str(waiting.get("reason") or ""),
        str(status.get("reason") or ""),
        job_reason,
    ):
        if reason not in _GENERIC_REASONS:
            return reason, detail
    return "Error", detail


class KubernetesExecutor:
    """Executes each attempt of a cpu_bound task as a Kubernetes Job.

    `client` defaults to an in-cluster `K8sClient` (closed by `stop()`); `log_lines` is how
    many trailing log lines of a failed pod go into the error.
    """

    name = "kubernetes"

    def __init__(self, client: K8sClient | None = None, *, log_lines: int = 20) -> None:
        self._client = client
        self._owns_client = client is None
        self.log_lines = log_lines
        # Deletions started while cancelled are kept referenced until they finish.
        self._cleanups: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Build the in-cluster client if none was given (it connects on first call)."""
        if self._client is None:
            self._client = K8sClient()

    async def stop(self) -> None:
        """Let pending Job deletions finish, then close a client this executor built."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Run one attempt as a Job; return the result the pod stored, or raise its error."""
        await self.start()
        client, cfg, attempt = (
            self._require_client(),
            task.get_k8s_config(),
            run.retry_attempt,
        )
        deployment = await client.read_deployment(cfg.namespace, cfg.deployment)
        manifest = job_manifest(task, run, deployment, attempt=attempt, config=cfg)
        name = manifest["metadata"]["name"]
        fields = task.interface.secret_fields
        if not fields:
            return await self._run_job(env, task, run, manifest, cfg, attempt, timeout)
        # SecretStr inputs reach the pod through a Secret of this attempt, never the store
        values = secret_values(kwargs, fields)
        secret = inputs_secret_manifest(task, run, attempt, cfg.namespace, values)
        await self._put_secret(cfg.namespace, secret)
        try:
            return await self._run_job(env, task, run, manifest, cfg, attempt, timeout)
        finally:
            await self._cleanup(self._delete_secret_now(cfg.namespace, inputs_secret_name(name)))

    async def _run_job(
        self, env: RunEnv, task: Task, run: TaskRun, manifest: Body, cfg: K8sConfig,
        attempt: int, timeout: float | None,
    ) -> Any:  # fmt: skip
        name = manifest["metadata"]["name"]
        try:
            job = await with_timeout(
                self._launch_and_wait(manifest, run.id, cfg), timeout, task.name
            )
        except TaskTimeoutError as exc:
            why = await self._diagnose(cfg.namespace, name, cfg.container)
            await self._delete(cfg.namespace, name)
            raise TaskTimeoutError(f"{exc}; Job {name} deleted ({why})") from None
        except KubernetesConflictError:
            raise  # a Job of that name belongs to another run: not ours to delete
        except BaseException:
            await self._delete(cfg.namespace, name)
            raise
        return await self._outcome(env, task, run, job, cfg, attempt)

    # -- steps ------------------------------------------------------------------------------------
    async def _launch_and_wait(self, manifest: Body, run_id: str, cfg: K8sConfig) -> Body:
        await self._launch(manifest, run_id, cfg)
        name = manifest["metadata"]["name"]
        while True:
            job = await self._require_client().get_job(cfg.namespace, name)
            if job_state(job) is not None:
                return job
            await asyncio.sleep(cfg.sleep)

    async def _launch(self, manifest: Body, run_id: str, cfg: K8sConfig) -> None:
        """Create the Job; adopt one of the same run and attempt (a restarted consumer).

        A same-named Job still being deleted (a drained attempt requeued at once) is waited
        out first.
        """
        client, name = self._require_client(), manifest["metadata"]["name"]
        while True:
            try:
                await client.create_job(cfg.namespace, manifest)
                return
            except KubernetesConflictError:
                try:
                    existing = await client.get_job(cfg.namespace, name)
                except KubernetesNotFoundError:
                    continue  # deleted in between: create it again
            owner = existing.get("metadata", {}).get("labels", {}).get(LABEL_RUN)
            if owner != run_id:
                raise KubernetesConflictError(
                    f"Job {name} already exists for run {owner}, not {run_id} (name clash)",
                    status=409, reason="AlreadyExists",
                )  # fmt: skip
            if not existing.get("metadata", {}).get("deletionTimestamp"):
                log.info("adopting existing Job %s of run %s", name, run_id)
                return
            await asyncio.sleep(cfg.sleep)

    async def _outcome(
        self, env: RunEnv, task: Task, run: TaskRun, job: Body, cfg: K8sConfig, attempt: int
    ) -> Any:
        outcome = await env.outcomes.take(run.id, attempt)
        name = job["metadata"]["name"]
        if outcome is not None:
            return value_of(task, outcome, run.id)
        if job_state(job) == "succeeded":
            raise TaskFailedError(
                f"Job {name} succeeded but left no outcome in {env.outcomes.where}; the "
                "Job and the worker must share one store (TASKLOOM_STORE)",
                run_id=run.id, type_name="MissingOutcome",
            )  # fmt: skip
        reason, detail, logs = await self._failure(cfg.namespace, job, cfg.container)
        message = f"Job {name} failed ({detail})"
        if logs:
            message += f"; last log lines:\n{logs}"
        raise TaskFailedError(message, run_id=run.id, type_name=reason, traceback=logs)

    async def _failure(self, namespace: str, job: Body, container: str) -> tuple[str, str, str]:
        """(reason, detail, log tail) of a Job that ended without an outcome."""
        client, name = self._require_client(), job["metadata"]["name"]
        try:
            pods = await client.pods_of_job(namespace, name)
        except (KubernetesApiError, ConfigError) as exc:  # ConfigError: no RBAC for pods
            log.warning("cannot list pods of Job %s: %s", name, exc)
            pods = []
        pod = pods[-1] if pods else None
        reason, detail = pod_reason(job, pod, container)
        logs = ""
        if pod is not None:
            try:
                logs = await client.read_pod_log(
                    namespace, pod["metadata"]["name"], container=container,
                    tail_lines=self.log_lines,
                )  # fmt: skip
            except (KubernetesApiError, ConfigError) as exc:  # e.g. it never started
                detail += f"; no log: {exc}"
        return reason, detail, logs.rstrip("\n")

    async def _diagnose(self, namespace: str, name: str, container: str) -> str:
        """A short note on where a Job stood when its attempt timed out."""
        try:
            job = await self._require_client().get_job(namespace, name)
            pods = await self._require_client().pods_of_job(namespace, name)
        except (KubernetesApiError, ConfigError) as exc:
            return f"state unknown: {exc}"
        reason, detail = pod_reason(job, pods[-1] if pods else None, container)
        return detail if reason == "Error" else f"{reason}: {detail}"

    async def _delete(self, namespace: str, name: str) -> None:
        """Delete the Job even if the awaiting task is cancelled again meanwhile."""
        await self._cleanup(self._delete_now(namespace, name))

    async def _cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` to the end even if the awaiting task is cancelled again meanwhile."""
        task = asyncio.create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _put_secret(self, namespace: str, body: Body) -> None:
        """Create the inputs Secret; one left by an earlier try of this attempt is replaced."""
        client = self._require_client()
        try:
            await client.create_secret(namespace, body)
        except KubernetesConflictError:
            await client.delete_secret(namespace, body["metadata"]["name"])
            await client.create_secret(namespace, body)

    async def _delete_secret_now(self, namespace: str, name: str) -> None:
        try:
            await self._require_client().delete_secret(namespace, name)
        except (KubernetesApiError, ConfigError) as exc:  # never hide the original error
            log.warning("could not delete Secret %s/%s: %s", namespace, name, exc)

    async def _delete_now(self, namespace: str, name: str) -> None:
        try:
            await self._require_client().delete_job(namespace, name)
        except (KubernetesApiError, ConfigError) as exc:  # never hide the original error
            log.warning("could not delete Job %s/%s: %s", namespace, name, exc)

    def _require_client(self) -> K8sClient:
        if self._client is None:
            raise ConfigError("KubernetesExecutor was stopped")
        return self._client
