"""Kubernetes kinds: a job is a bare pod made from a manifest template (`KubeTask`), or a Python
function run in a Kubernetes Job by taskloom's kubernetes executor (`KubeFunctionTask`).

Both run inside the job's taskloom run, so retries, timeouts, leases and the done record are the
pipeline's as for every kind. Every Kubernetes object is named from the run id and the attempt
(`k8s.manifests.job_name`): a restarted worker that is handed the same attempt finds the pod or
Job it launched before and adopts it instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import (
    ConfigError,
    NonRetryableError,
    TaskFailedError,
    TaskTimeoutError,
    missing_extra,
)
from ..executors.kubernetes import pod_reason
from ..k8s.client import (
    K8sClient,
    KubernetesApiError,
    KubernetesConflictError,
    KubernetesNotFoundError,
)
from ..k8s.manifests import (
    ANNOTATION_TASK,
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_TASK,
    MANAGED_BY,
    job_name,
    label_value,
)
from ..policies import K8sConfig, Resources, RetryPolicy
from ..run import TaskRun, is_in_cpu_process
from ..task import Task, make_task
from .kinds import JobBody, PipelineTask, _WithBody, link_kwargs
from .pipeline import internal_name
from .process import render, template_vars
from .quotas import ResourceManager
from .repositories import KeySet, LiveRepository, MemoryRepository, Repository

log = logging.getLogger("taskloom.pipeline.kube")

Manifest = dict[str, Any]

LABEL_PIPELINE = "taskloom.io/pipeline"
LABEL_JOB = "taskloom.io/job"
ANNOTATION_JOB = "taskloom.io/job-key"  # the exact key: a label value is cut and cleaned

_BUILTIN_VARS = ("job", "task", "run_id", "attempt", "pod", "namespace")
# The kubelet's own deadline sits this far past `timeout`, so that the task times a pod out
# first (and calls `handle_timeout`); it still bounds the pod if this process dies.
DEADLINE_GRACE = 30
LAUNCHER = Path(__file__).resolve().parent / "launcher"  # `python3 {{argv0}} launch TASK JOB`
_DONE_PHASES = ("Succeeded", "Failed")
# A placeholder is swapped for this plain word before YAML parsing, so `name: {{ job }}` needs
# no quotes and no value is ever parsed as YAML (a key holding `: ` or a newline stays a string).
_MARK = "TASKLOOM+{}+VAR"
_MARKED = re.compile(r"TASKLOOM\+([A-Za-z_][A-Za-z0-9_.-]*)\+VAR")


class PodFailedError(TaskFailedError):
    """A job's pod ended in phase Failed, or vanished before it ended.

    Its type name (what the done record shows as the error type) is the most specific reason
    Kubernetes gave: `OOMKilled`, `DeadlineExceeded`, `Evicted`, `Error`, ... or `PodGone`.
    The message ends with the last lines of the pod's log.
    """

    def __init__(
        self, pod: str, reason: str, detail: str, log_tail: str = "", run_id: str | None = None
    ) -> None:
        message = f"pod failed ({detail})"
        if log_tail:
            message += f"; last log lines:\n{log_tail}"
        super().__init__(message, run_id=run_id, type_name=reason, traceback=log_tail)
        self.pod = pod
        self.reason = reason
        self.log_tail = log_tail


# -- templates -----------------------------------------------------------------------------------
def parse_template(source: Mapping[str, Any] | str) -> Manifest:
    """A pod manifest template as a dict whose strings may hold `{{ name }}` placeholders.

    A string is read as JSON when it parses, else as YAML (the `k8s` extra's PyYAML).
    """
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    marked = render(source, {name: _MARK.format(name) for name in template_vars(source)})
    try:
        doc = json.loads(marked)
    except ValueError:
        try:
            yaml: Any = importlib.import_module("yaml")  # no stubs needed for one call
        except ImportError:
            raise missing_extra("k8s", "pyyaml") from None
        try:
            doc = yaml.safe_load(marked)
        except yaml.YAMLError as exc:
            raise ConfigError(f"pod template is neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"pod template must be one mapping (a Pod), got {type(doc).__name__}")
    unmarked: Manifest = _walk(doc, lambda s: _MARKED.sub(r"{{ \1 }}", s))
    return unmarked


def _walk(node: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a JSON-like tree with `fn` applied to every string, keys included."""
    if isinstance(node, dict):
        return {fn(k) if isinstance(k, str) else k: _walk(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str):
                yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def manifest_vars(template: Manifest) -> set[str]:
    """Every `{{ name }}` a parsed template uses."""
    return {var for text in _strings(template) for var in template_vars(text)}


def render_manifest(template: Manifest, values: Mapping[str, str]) -> Manifest:
    """The template with each placeholder replaced by its value (always inserted as text)."""
    rendered: Manifest = _walk(template, lambda s: render(s, values))
    return rendered


def _first_container(doc: Manifest) -> Manifest:
    containers = (doc.get("spec") or {}).get("containers") or []
    return containers[0] if containers and isinstance(containers[0], dict) else {}


# -- KubeTask ------------------------------------------------------------------------------------
class KubeTask(PipelineTask):
    """A job is a pod made from `template` (a Pod manifest: a dict, a JSON or YAML string, or a
    `Path` read when the pipeline opens), which ends Succeeded or Failed.

    Strings of the template may use `{{ job }}`, `{{ task }}`, `{{ run_id }}`, `{{ attempt }}`,
    `{{ pod }}`, `{{ namespace }}`, the keys of `values`, and `{{ <link> }}` for each input
    link: the job's value in that repository as UTF-8 text ("" when absent). The pod is named
    `job_name(task, run id, attempt)` and labelled with the pipeline (its queue), task, job, run
    and attempt; `restartPolicy` defaults to `Never`, `activeDeadlineSeconds` to `timeout`, and
    the first container's requests and limits to `resources` when the template sets none.

    The kind polls the pod every `poll_interval` seconds (default `K8sConfig().sleep`). When it
    ends, its log (of `container`, default the first) goes to `logs` if given, and the pod is
    deleted; it is also deleted on timeout and cancel. A Failed pod raises `PodFailedError`
    with the pod's reason and the last `log_lines` lines of its log. `client` defaults to an
    in-cluster `K8sClient`, `namespace` to the template's, else `K8sConfig().namespace`.

    `timeout` counts the time the pod has been seen running (not time spent pending): past it,
    `await self.handle_timeout(pod)` runs (override it, e.g. to save what the pod made so
    far), then the attempt fails with `TaskTimeoutError` and the pod is deleted. The pod's
    `activeDeadlineSeconds` (default `timeout` plus `DEADLINE_GRACE`) is the kubelet's
    backstop for when this process is gone.
    """

    kind = "kube"

    def __init__(
        self,
        name: str,
        template: Mapping[str, Any] | str | Path,
        done: Repository,
        *,
        logs: Repository | None = None,
        namespace: str | None = None,
        client: K8sClient | None = None,
        container: str | None = None,
        values: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        ready: KeySet | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        poll_interval: float | None = None,
        log_lines: int = 20,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            name, done=done, ready=ready, resources=resources, retry=retry, timeout=timeout,
            disabled=disabled,
        )  # fmt: skip
        self.template_source = template
        self.namespace = namespace
        self.container = container
        self.values = dict(values or {})
        self.poll_interval = K8sConfig().sleep if poll_interval is None else poll_interval
        self.log_lines = log_lines
        self._template: Manifest | None = None
        self._client = client
        self._owns_client = client is None
        # Deletions started while cancelled stay referenced until they finish.
        self._cleanups: set[asyncio.Task[None]] = set()
        if logs is not None:
            # Not inhibits_start (pydatatask's choice): `pipeline.retry` deletes only the done
            # record, and a kept log must not stop the job from launching again.
            self.link("logs", logs, is_status=True, required_for_output=True)

    @property
    def run_timeout(self) -> float | None:
        """None: the kind times pods out itself, on their running time."""
        return None

    async def handle_timeout(self, pod: Manifest) -> None:
        """Called when a pod ran longer than `timeout`, before it is deleted (default: nothing;
        the pod's log so far is still saved into `logs`). Override it to scrape in-progress
        data out of the pod. An error here is logged, never hides the timeout."""

    # -- configuration ------------------------------------------------------------------------
    def _load(self) -> Manifest:
        if self._template is None:
            source = self.template_source
            if isinstance(source, Path):
                source = source.read_text()
            self._template = parse_template(source)
        return self._template

    def problems(self) -> list[str]:
        return super().problems() + self.template_problems()

    def template_problems(self) -> list[str]:
        """What is wrong with the pod template (empty when nothing is)."""
        out: list[str] = []
        try:
            template = self._load()
        except (OSError, ConfigError) as exc:
            return [f"cannot read pod template: {exc}"]
        if template.get("kind", "Pod") != "Pod" or template.get("apiVersion", "v1") != "v1":
            out.append(f"template is a {template.get('apiVersion')}/{template.get('kind')}, "
                       "not a v1 Pod")  # fmt: skip
        spec = template.get("spec")
        if not isinstance(spec, dict) or not spec.get("containers"):
            out.append("template has no spec.containers")
        elif spec.get("restartPolicy", "Never") != "Never":
            out.append(f"template sets restartPolicy {spec['restartPolicy']!r}: a pod that "
                       "restarts itself never ends Failed; retries belong to retry=")  # fmt: skip
        inputs = {n for n, link in self.links.items() if link.is_input and not link.is_status}
        known = set(_BUILTIN_VARS) | set(self.values) | inputs
        for var in sorted(manifest_vars(template) - known):
            what = "a link that is not an input" if var in self.links else "not defined"
            out.append(f"template uses {{{{ {var} }}}}, which is {what} (known: "
                       f"{', '.join(sorted(known))})")  # fmt: skip
        return out

    async def setup(self) -> None:
        """Read and parse the template (a file is read again at every opening)."""
        if isinstance(self.template_source, Path):
            self._template = None
        self._load()

    async def teardown(self) -> None:
        """Let pending pod deletions finish; close a client this task built."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    def _k8s(self) -> K8sClient:
        if self._client is None:
            self._client = K8sClient()
        return self._client

    # -- the manifest -------------------------------------------------------------------------
    async def _values(self, job: str, run: TaskRun, pod: str, namespace: str) -> dict[str, str]:
        builtin = {"job": job, "task": self.name, "run_id": run.id, "pod": pod,
                   "attempt": str(run.retry_attempt), "namespace": namespace}  # fmt: skip
        values = {**self.values, **builtin}
        for var in manifest_vars(self._load()):
            link = self.links.get(var)
            if link is None or not link.is_input or link.is_status:
                continue
            try:
                data = await link.repo.read(job)
            except KeyError:  # an optional input may be absent
                data = b""
            try:
                values[var] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise NonRetryableError(
                    f"link {var!r} holds binary data for job {job!r}; a pod template takes text"
                ) from None
        return values

    async def pod_manifest(self, job: str, run: TaskRun) -> Manifest:
        """The Pod that runs this attempt of `job` (what `execute` creates)."""
        template = self._load()
        meta = template.get("metadata") or {}
        name = job_name(self.name, run.id, run.retry_attempt)
        namespace = self.namespace or str(meta.get("namespace") or "") or K8sConfig().namespace
        doc = render_manifest(template, await self._values(job, run, name, namespace))
        doc.setdefault("apiVersion", "v1")
        doc.setdefault("kind", "Pod")
        meta = doc["metadata"] = dict(doc.get("metadata") or {})
        meta.pop("generateName", None)
        meta["name"], meta["namespace"] = name, namespace
        meta["labels"] = {**(meta.get("labels") or {}), **MANAGED_BY,
                          LABEL_PIPELINE: label_value(run.queue) or "pipeline",
                          LABEL_TASK: label_value(self.name) or "task",
                          LABEL_JOB: label_value(job) or "job",
                          LABEL_RUN: label_value(run.id),
                          LABEL_ATTEMPT: str(run.retry_attempt)}  # fmt: skip
        meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_TASK: self.name,
                               ANNOTATION_JOB: job}  # fmt: skip
        spec = doc.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Never")
        if self.timeout and "activeDeadlineSeconds" not in spec:
            # The kubelet's own deadline still kills the pod if this process dies meanwhile.
            spec["activeDeadlineSeconds"] = max(1, math.ceil(self.timeout)) + DEADLINE_GRACE
        container = _first_container(doc)
        quantities = self.resources.k8s() if self.resources is not None else {}
        if quantities and container and "resources" not in container:
            # What the quota charges is what the cluster reserves.
            container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
        return doc

    # -- one job ------------------------------------------------------------------------------
    async def execute(self, job: str, run: TaskRun) -> Any:
        """Create (or adopt) the pod, wait for it to end, keep its log, delete it; returns
        what the done record keeps as `result` (pod, phase, exit code, times)."""
        manifest = await self.pod_manifest(job, run)
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        container = self.container or str(_first_container(manifest).get("name") or "")
        try:
            await self._launch(manifest, run.id)
            pod = await self._wait(namespace, name, run.id)
        except KubernetesConflictError:
            raise  # a pod of that name belongs to another run: not ours to delete
        except BaseException:
            await self._cleanup(job, namespace, name, container, keep_log=True)
            raise
        try:
            return await self._conclude(job, run, pod, container)
        finally:
            await self._cleanup(job, namespace, name, container, keep_log=False)

    async def _launch(self, manifest: Manifest, run_id: str) -> None:
        """Create the pod; adopt one of the same run and attempt (a restarted worker).

        A same-named pod still being deleted is waited out first.
        """
        client = self._k8s()
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        while True:
            try:
                await client.create_pod(namespace, manifest)
                return
            except KubernetesConflictError:
                try:
                    existing = await client.get_pod(namespace, name)
                except KubernetesNotFoundError:
                    continue  # deleted in between: create it again
            owner = (existing.get("metadata", {}).get("labels") or {}).get(LABEL_RUN)
            if owner != label_value(run_id):
                raise KubernetesConflictError(
                    f"pod {namespace}/{name} already exists for run {owner}, not {run_id} "
                    "(name clash)", status=409, reason="AlreadyExists",
                )  # fmt: skip
            if not existing.get("metadata", {}).get("deletionTimestamp"):
                log.info("adopting existing pod %s/%s of run %s", namespace, name, run_id)
                return
            await asyncio.sleep(self.poll_interval)

    async def _wait(self, namespace: str, name: str, run_id: str) -> Manifest:
        client = self._k8s()
        loop = asyncio.get_running_loop()
        running_since: float | None = None
        while True:
            try:
                pod = await client.get_pod(namespace, name)
            except KubernetesNotFoundError:
                raise PodFailedError(
                    name, "PodGone", f"pod {name} was deleted before it ended (evicted, or "
                    "deleted outside taskloom)", run_id=run_id,
                ) from None  # fmt: skip
            status = pod.get("status") or {}
            if status.get("phase") in _DONE_PHASES:
                return pod
            if status.get("phase") == "Running":
                running_since = loop.time() if running_since is None else running_since
                if self.timeout is not None and loop.time() - running_since >= self.timeout:
                    await self._timed_out(pod)
            else:
                running_since = None
            await asyncio.sleep(self.poll_interval)

    async def _timed_out(self, pod: Manifest) -> None:
        name = pod["metadata"]["name"]
        try:
            await self.handle_timeout(pod)
        except Exception:
            log.exception("handle_timeout of task %s failed for pod %s", self.name, name)
        raise TaskTimeoutError(f"pod {name} ran longer than its timeout of {self.timeout}s")

    async def _conclude(self, job: str, run: TaskRun, pod: Manifest, container: str) -> Any:
        status = pod.get("status") or {}
        name = pod["metadata"]["name"]
        namespace = pod["metadata"].get("namespace") or self.namespace or ""
        ok = status.get("phase") == "Succeeded"
        text = ""
        if "logs" in self.links:
            text = await self._read_log(namespace, name, container, None)
            await self.links["logs"].repo.write(job, text.encode())
        elif not ok:
            text = await self._read_log(namespace, name, container, self.log_lines)
        if not ok:
            reason, detail = pod_reason({}, pod, container)
            tail = "\n".join(text.rstrip("\n").splitlines()[-self.log_lines :])
            raise PodFailedError(name, reason, detail, tail, run_id=run.id)
        return _pod_record(pod, container)

    async def _read_log(
        self, namespace: str, name: str, container: str, tail_lines: int | None
    ) -> str:
        try:
            return await self._k8s().read_pod_log(
                namespace, name, container=container or None, tail_lines=tail_lines
            )
        except (KubernetesApiError, ConfigError) as exc:  # e.g. it never started
            log.warning("no log for pod %s/%s: %s", namespace, name, exc)
            return ""

    async def _cleanup(
        self, job: str, namespace: str, name: str, container: str, *, keep_log: bool
    ) -> None:
        """Delete the pod (first saving its log if `keep_log`), even if the awaiting task is
        cancelled again meanwhile."""
        task = asyncio.create_task(self._cleanup_now(job, namespace, name, container, keep_log))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _cleanup_now(
        self, job: str, namespace: str, name: str, container: str, keep_log: bool
    ) -> None:
        if keep_log and "logs" in self.links:  # what a timed-out pod printed so far
            text = await self._read_log(namespace, name, container, None)
            if text:
                with contextlib.suppress(Exception):  # never hide the original error
                    await self.links["logs"].repo.write(job, text.encode())
        try:
            await self._k8s().delete_pod(namespace, name, grace_seconds=0)
        except (KubernetesApiError, ConfigError) as exc:  # never hide the original error
            log.warning("could not delete pod %s/%s: %s", namespace, name, exc)


def _pod_record(pod: Manifest, container: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    mine = next(
        (s for s in statuses if s.get("name") == container), statuses[0] if statuses else {}
    )
    ended = (mine.get("state") or {}).get("terminated") or {}
    return {
        "pod": pod["metadata"]["name"],
        "namespace": pod["metadata"].get("namespace"),
        "phase": status.get("phase"),
        "exit_code": ended.get("exitCode"),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "started": status.get("startTime"),
        "finished": ended.get("finishedAt"),
    }


# -- KubeFunctionTask ----------------------------------------------------------------------------
async def _in_pod(ctx: TaskRun, job: str) -> Any:
    """Stands in for the pipeline's internal task, which the Job's pod runs (see below)."""
    raise RuntimeError("the pipeline's internal task runs in the pod, not this stand-in")


def _inside_its_pod(run: TaskRun) -> bool:
    """True in the pod that the kubernetes executor launched for this very run."""
    return is_in_cpu_process() and os.environ.get("TASKLOOM_RUN_ID") == run.id


class KubeFunctionTask(_WithBody):
    """A job is `await func(job, **links)` run on Kubernetes, in one of two ways.

    Without `template`: in a Kubernetes Job launched by taskloom's kubernetes executor (one
    Job per attempt, its container copied from the worker Deployment named by `k8s_config`,
    the outcome passed back through the store). The Job's pod runs `taskloom exec-run <run
    id>` for the job's own run: it imports the app, which builds this pipeline, and the
    pipeline's internal task calls this kind, which runs the body there. `env` adds container
    environment variables; `resources` is both the quota charge and the container's requests
    and limits; `timeout` also becomes the Job's `activeDeadlineSeconds`. The manager's
    kubernetes executor is used (`manager.set_executor("kubernetes", KubernetesExecutor(...))`).

    With `template` (pydatatask's way): a bare pod made from that Pod template, as `KubeTask`
    makes one, whose container runs `python3 {{argv0}} launch "{{task}}" "{{job}}" --force
    --sync`: `{{ argv0 }}` is taskloom's launcher (override it with `values={"argv0": ...}`
    if the image keeps taskloom elsewhere), which loads the app named by `TASKLOOM_APP` in
    the pod, runs the body and records it in `func_done`. `podman` is the `K8sClient` (or a
    callable returning one); `logs` receives the pod's log; `kube_done` is the `done`
    repository (the pod's lifetime and exit); `func_done` (status, inhibits_start,
    required_for_output) the function's own record. `resources` may be a `ResourceManager`:
    the task's jobs then count against it, each charged the first container's requests.

    Either way the body's links must be reachable from the pod (`StoreRepository`,
    `S3Repository`, or `FileRepository` on a shared volume); memory repositories are reported
    by `pipeline.validate()`. Usable as a decorator.
    """

    kind = "kube-function"

    def __init__(
        self,
        name: str,
        podman: K8sClient | Callable[[], K8sClient] | None = None,
        resources: Resources | ResourceManager | None = None,
        template: Mapping[str, Any] | str | Path | None = None,
        logs: Repository | None = None,
        kube_done: Repository | None = None,
        func_done: Repository | None = None,
        env: Mapping[str, str] | None = None,
        func: JobBody | None = None,
        *,
        done: Repository | None = None,
        k8s_config: K8sConfig | None = None,
        namespace: str | None = None,
        values: Mapping[str, str] | None = None,
        ready: KeySet | None = None,
        retry: RetryPolicy | int | None = None,
        timeout: float | timedelta | None = None,
        poll_interval: float | None = None,
        disabled: bool = False,
    ) -> None:
        if done is not None and kube_done is not None and done is not kube_done:
            raise ConfigError(f"task {name!r}: kube_done is the done repository; pass one")
        quota = resources if isinstance(resources, ResourceManager) else None
        charge = None if isinstance(resources, ResourceManager) else resources
        super().__init__(
            name, func=func, done=kube_done or done or MemoryRepository(f"{name}.done"),
            ready=ready, resources=charge, retry=retry, timeout=timeout, disabled=disabled,
        )  # fmt: skip
        if quota is not None:
            self.quotas.append(quota)
        self.k8s_config = k8s_config
        self.env = dict(env or {})
        self._job_task: Task | None = None
        self.pod: KubeTask | None = None
        if template is None:
            if podman is not None or logs is not None:
                raise ConfigError(
                    f"task {name!r}: podman= and logs= go with a pod template= (without one, "
                    "the function runs in a Job made by the kubernetes executor)"
                )
        else:
            client = podman if isinstance(podman, K8sClient) or podman is None else podman()
            self.pod = KubeTask(
                name, template, self.done, logs=logs, namespace=namespace, client=client,
                values={"argv0": str(LAUNCHER), **(values or {})},
                resources=charge, timeout=timeout, poll_interval=poll_interval,
            )  # fmt: skip
            self.pod.links = self.links  # one set of links: the pod's template sees ours
            if logs is not None:
                self.link("logs", logs, is_status=True, required_for_output=True)
        if func_done is not None:
            self.link("func_done", func_done, is_status=True, inhibits_start=True,
                      required_for_output=True)  # fmt: skip

    @property
    def run_timeout(self) -> float | None:
        """A pod times itself out (see `KubeTask`); a Job has the run's timeout."""
        return None if self.pod is not None else self.timeout

    def problems(self) -> list[str]:
        out = super().problems()
        if self.pod is not None:
            out += self.pod.template_problems()
        if self.func is not None:
            for name, repo in link_kwargs(self, self.func).items():
                if isinstance(repo, MemoryRepository | LiveRepository):
                    out.append(f"link {name!r} ({type(repo).__name__}) lives in the pipeline's "
                               "process and cannot reach the pod: use a StoreRepository or a "
                               "FileRepository on a shared volume")  # fmt: skip
        return out

    async def setup(self) -> None:
        """Read the pod template; charge a quota the first container's requests."""
        if self.pod is None:
            return
        await self.pod.setup()
        if self.quotas and self.resources is None:
            requests = (_first_container(self.pod._load()).get("resources") or {}).get(
                "requests"
            ) or {}
            self.resources = self.pod.resources = Resources(
                cpu=requests.get("cpu"), memory=requests.get("memory")
            )

    async def teardown(self) -> None:
        """Close the pod client this task built."""
        if self.pod is not None:
            await self.pod.teardown()

    @property
    def job_task(self) -> Task:
        """The taskloom task handed to the kubernetes executor: named like the pipeline's
        internal task and carrying this kind's Kubernetes settings. Never registered, so the
        pod resolves the run's task by name to the real internal task."""
        if self._job_task is None:
            self._job_task = make_task(
                _in_pod, name=internal_name(self.name), executor="kubernetes", cpu_bound=True,
                k8s_config=self.k8s_config or K8sConfig(), env=self.env or None,
                resources=self.resources, timeout_seconds=self.timeout,
            )  # fmt: skip
        return self._job_task

    async def run_body(self, job: str) -> bool:
        """Run the body for `job` here (what the pod's launcher does) and record it in
        `func_done`; True if it succeeded. Never raises for the body's own errors."""
        if self.func is None:
            raise ConfigError(f"task {self.name!r} has no body")
        started = datetime.now(UTC)
        error: BaseException | None = None
        try:
            await self.func(job, **link_kwargs(self, self.func))
        except Exception as exc:
            error = exc
            log.exception("job %s/%s failed in its pod", self.name, job)
        if "func_done" in self.links:
            await self.links["func_done"].repo.dump(job, {
                "task": self.name, "job": job, "success": error is None,
                "start": started.isoformat(), "end": datetime.now(UTC).isoformat(),
                "error": None if error is None
                else {"type": type(error).__name__, "message": str(error)},
            })  # fmt: skip
        return error is None

    async def execute(self, job: str, run: TaskRun) -> Any:
        """Run the pod from the template, or hand this attempt to the kubernetes executor;
        inside the executor's Job, run the body."""
        if self.func is None:
            raise ConfigError(f"task {self.name!r} has no body")
        if self.pod is not None:
            return await self.pod.execute(job, run)
        if _inside_its_pod(run):
            await self.func(job, **link_kwargs(self, self.func))
            return None
        task = self.job_task
        manager = run.manager
        executor = await manager.executor_for(task)
        # No timeout here: the job's run has the task's timeout, and cancelling this await
        # makes the executor delete the Job.
        await executor.execute(task, run, {"job": job}, None, manager.lifecycle.run_env(run))
        config = task.k8s_config or K8sConfig()
        return {"k8s_job": job_name(task.name, run.id, run.retry_attempt),
                "namespace": config.namespace}  # fmt: skip
