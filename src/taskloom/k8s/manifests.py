"""Pure builders of the Kubernetes manifests taskloom needs: plain dicts in the API's wire form.

Nothing here talks to a cluster. `job_manifest` turns one attempt of a run into a Job whose
container is copied from the worker Deployment; `rbac_manifests` and `worker_manifests` are what
`taskloom k8s rbac|manifests` print.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..policies import K8sConfig, Secret
from ..template import SerializationSettings

if TYPE_CHECKING:
    from ..run import TaskRun
    from ..task import Task

Manifest = dict[str, Any]

DEPLOYMENT = "taskloom-worker"
CONTAINER = "main"
SCHEDULER = "taskloom-scheduler"
SERVICE_ACCOUNT = "taskloom"
ROLE = "taskloom-jobs"
STORE_SECRET = "taskloom-store"
DEFAULT_GRACE_SECONDS = 30.0  # TaskConsumer's default drain grace

LABEL_TASK = "taskloom.io/task"
LABEL_RUN = "taskloom.io/run-id"
LABEL_ATTEMPT = "taskloom.io/attempt"
ANNOTATION_TASK = "taskloom.io/task-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "taskloom"}

# Kubernetes adds this label to every pod of a Job (also as batch.kubernetes.io/job-name since
# 1.27); both spellings exist on current clusters, the short one on old ones too.
JOB_NAME_LABEL = "job-name"

# Arguments that start a long-running process; a Job runs one run instead.
LONG_RUNNING = frozenset({"worker", "serve", "scheduler"})

_MAX_LABEL = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_dns_label(value: str) -> bool:
    """True if `value` is a valid RFC 1123 label (what Job and pod label names must be)."""
    return len(value) <= _MAX_LABEL and bool(_DNS_LABEL.match(value))


def _dns_part(text: str, fallback: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower().replace("_", "-"))
    out = re.sub(r"-{2,}", "-", out).strip("-")
    return out or fallback


def label_value(text: str) -> str:
    """A label value (63 chars, alphanumeric at both ends) derived from arbitrary text."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:_MAX_LABEL]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", out)


def job_name(task_name: str, run_id: str, attempt: int = 0) -> str:
    """`<task name, "_" as "-">-<8 hex of a hash of the run id>-<attempt>`, a DNS label.

    Only the task-name part is shortened, so the hash and the attempt always survive the
    63-character limit. Run ids are time-ordered and share their first digits, hence a hash.
    """
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    suffix = f"-{digest}-{int(attempt)}"
    prefix = _dns_part(task_name, "task")[: _MAX_LABEL - len(suffix)].rstrip("-") or "task"
    return f"{prefix}{suffix}"


# -- the Job of one attempt ----------------------------------------------------------------------
def find_container(deployment: Mapping[str, Any], name: str) -> Manifest:
    """The container called `name` in a Deployment; ConfigError naming those that exist."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    containers = pod.get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return dict(container)
    dep = deployment.get("metadata", {}).get("name", "?")
    found = ", ".join(repr(c.get("name")) for c in containers) or "none"
    raise ConfigError(
        f"deployment {dep!r} has no container {name!r} (containers: {found}); "
        "set K8sConfig(container=...) or TASKLOOM_K8S_CONTAINER"
    )


def _app_options(tokens: list[str]) -> list[str]:
    """The `--app` option among a long-running command's arguments (exec-run needs it too)."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        if token in ("--app", "-a") and i + 1 < len(tokens):
            out += [token, tokens[i + 1]]
        elif token.startswith("--app="):
            out.append(token)
    return out


def _tokens(container: Mapping[str, Any]) -> tuple[list[str], int | None]:
    tokens = [str(c) for c in container.get("command") or []]
    tokens += [str(a) for a in container.get("args") or []]
    return tokens, next((i for i, t in enumerate(tokens) if t in LONG_RUNNING), None)


def exec_argv(container: Mapping[str, Any], run_id: str) -> list[str]:
    """The argv that makes the copied container run `taskloom exec-run <run id>`.

    The worker's command is kept up to its `worker`/`serve`/`scheduler` argument (so wrappers
    such as `python -m taskloom` or an entrypoint script still apply); what follows is dropped
    except `--app`.
    """
    tokens, idx = _tokens(container)
    if idx is None:
        return ["taskloom", "exec-run", run_id]
    return [*tokens[:idx], "exec-run", run_id, *_app_options(tokens[idx + 1 :])]


def _argv_field(container: Mapping[str, Any]) -> str:
    """`args` when the worker set only args (the image's entrypoint stays in charge)."""
    idx = _tokens(container)[1]
    return "args" if idx is not None and not container.get("command") else "command"


def exec_command(container: Mapping[str, Any], run_id: str) -> Manifest:
    """`command` or `args` (see `exec_argv`) for a Job copying `container`."""
    return {_argv_field(container): exec_argv(container, run_id)}


def secret_env(secret: Secret) -> Manifest:
    """The env entry exposing a `Secret` through a `secretKeyRef` (`group` or `key` names it)."""
    name = secret.group or secret.key
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ConfigError(
            f"Secret(key={secret.key!r}) maps to Kubernetes secret {name!r}, which is not a "
            "valid secret name (lowercase letters, digits, '-', '.'); set Secret(group=...)"
        )
    ref = {"name": name, "key": secret.key}
    return {"name": secret.target_env, "valueFrom": {"secretKeyRef": ref}}


def inputs_secret_name(job: str) -> str:
    """The Secret carrying the secret inputs of the Job named `job`."""
    return f"{job}-inputs"


def input_env(field: str) -> str:
    """The environment variable a secret input `field` reaches the Job's container as."""
    return f"TASKLOOM_SECRET_INPUT_{field}"


def inputs_secret_manifest(
    task: Task, run: TaskRun, attempt: int, namespace: str, values: Mapping[str, Any]
) -> Manifest:
    """The Secret holding one attempt's secret inputs (each value as JSON) for its Job.

    The worker creates it just before the Job and deletes it when the attempt ends.
    """
    name = inputs_secret_name(job_name(task.name, run.id, attempt))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": job_labels(task, run, attempt)},
        "type": "Opaque",
        "stringData": {field: json.dumps(value) for field, value in values.items()},
    }  # fmt: skip


def _merge_env(*groups: Iterable[Manifest]) -> list[Manifest]:
    """Later entries win by name; order of first appearance is kept."""
    merged: dict[str, Manifest] = {}
    for group in groups:
        for entry in group:
            merged.pop(entry["name"], None)
            merged[entry["name"]] = entry
    return list(merged.values())


def _resources(task: Task, config: K8sConfig, source: Mapping[str, Any]) -> Manifest | None:
    if config.resources is not None:
        spec = {"limits": config.resources.limits, "requests": config.resources.requests}
        return {k: dict(v) for k, v in spec.items() if v} or None
    quantities = task.resources.k8s() if task.resources is not None else {}
    if not quantities:  # neither says: the Job gets what the worker container has
        return copy.deepcopy(source.get("resources")) or None
    # Requests equal to limits: a cpu_bound Job gets the Guaranteed class and is not overcommitted.
    return {"requests": dict(quantities), "limits": dict(quantities)}


def job_labels(task: Task, run: TaskRun, attempt: int) -> dict[str, str]:
    """Labels put on a Job and its pods (find them with a label selector)."""
    return {
        **MANAGED_BY,
        LABEL_TASK: label_value(task.name) or "task",
        LABEL_RUN: label_value(run.id),
        LABEL_ATTEMPT: str(attempt),
    }


_POD_FIELDS = ("serviceAccountName", "volumes", "imagePullSecrets", "securityContext")
_CONTAINER_FIELDS = (
    "image", "imagePullPolicy", "envFrom", "volumeMounts", "workingDir", "securityContext",
)  # fmt: skip


def job_manifest(
    task: Task,
    run: TaskRun,
    deployment: Mapping[str, Any],
    *,
    attempt: int = 0,
    config: K8sConfig | None = None,
) -> Manifest:
    """The Job that runs one attempt of `run`, its container copied from `deployment`.

    `config` defaults to the task's `k8s_config`, else `K8sConfig()` (the TASKLOOM_K8S_*
    environment). Retries belong to taskloom, so the Job never retries a pod itself.
    """
    cfg = config or task.get_k8s_config()
    source = find_container(deployment, cfg.container)
    pod_source = deployment.get("spec", {}).get("template", {}).get("spec", {})
    own_env = [
        {"name": "TASKLOOM_RUN_ID", "value": run.id},
        {"name": "TASKLOOM_ATTEMPT", "value": str(attempt)},
        {"name": "TASK_MANAGER_SPAWN", "value": "true"},
    ]
    container: Manifest = {"name": cfg.container}
    container.update({k: copy.deepcopy(source[k]) for k in _CONTAINER_FIELDS if k in source})
    if task.image and task.image != "auto":
        container["image"] = task.image
    settings = SerializationSettings(run.id, attempt, cfg.namespace, source)
    argv = task.container_args(settings)
    if not argv:
        raise ConfigError(f"task {task.name!r}: container_args() returned no command for its Job")
    container[_argv_field(source)] = [str(a) for a in argv]
    container["env"] = _merge_env(
        copy.deepcopy(source.get("env") or []),
        ({"name": k, "value": str(v)} for k, v in task.env.items()),
        (secret_env(s) for s in task.secrets),
        own_env,
        (
            {"name": input_env(f), "valueFrom": {"secretKeyRef": {
                "name": inputs_secret_name(job_name(task.name, run.id, attempt)), "key": f}}}
            for f in sorted(task.interface.secret_fields)
        ),
    )  # fmt: skip
    resources = _resources(task, cfg, source)
    if resources:
        container["resources"] = resources
    pod: Manifest = {k: copy.deepcopy(pod_source[k]) for k in _POD_FIELDS if k in pod_source}
    pod["containers"] = [container]
    labels = job_labels(task, run, attempt)
    # The Deployment's own labels are not copied: a Service selecting them would send traffic
    # to the Job's pod.
    annotations = {**_custom_annotations(task, settings), ANNOTATION_TASK: task.name}
    meta = {"labels": labels, "annotations": annotations}
    template: Manifest = {"metadata": copy.deepcopy(meta), "spec": pod}
    if task.interruptible:
        spot = cfg.interruptible
        extra = {"tolerations": spot.tolerations, "affinity": {"nodeAffinity": spot.node_affinity}}
        template = merge_pod_template(template, {"spec": extra}, cfg.container)
    if task.pod_template:
        template = merge_pod_template(template, task.pod_template, cfg.container)
        # ours win: the Job must stay findable and must name its task
        template["metadata"]["labels"].update(labels)
        template["metadata"]["annotations"].update(annotations)
    template["spec"]["restartPolicy"] = "Never"  # retries belong to taskloom
    spec: Manifest = {"backoffLimit": 0, "ttlSecondsAfterFinished": int(cfg.job_ttl),
                      "template": template}  # fmt: skip
    if task.timeout_seconds:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(task.timeout_seconds))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(task.name, run.id, attempt), "namespace": cfg.namespace,
                     **meta},
        "spec": spec,
    }  # fmt: skip


_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _custom_annotations(task: Task, settings: SerializationSettings) -> dict[str, str]:
    """`task.custom_config(settings)` as annotations; ConfigError names a bad key."""
    out: dict[str, str] = {}
    for key, value in task.custom_config(settings).items():
        if not _QUALIFIED_NAME.match(key) or len(key.partition("/")[0]) > 253:
            raise ConfigError(
                f"task {task.name!r}: custom_config key {key!r} is not a valid annotation name "
                "(an optional DNS prefix and '/', then letters, digits, '-', '_', '.')"
            )
        out[key] = str(value)
    return out


def _merge(base: Any, extra: Any) -> Any:
    """Deep merge: dicts by key, lists of named items by name, other lists appended."""
    if isinstance(base, dict) and isinstance(extra, Mapping):
        out = dict(base)
        for key, value in extra.items():
            out[key] = _merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(extra, list):
        named = all(isinstance(i, Mapping) and "name" in i for i in [*base, *extra])
        if not named:
            return [*base, *(copy.deepcopy(i) for i in extra if i not in base)]
        out_list = list(base)
        index = {item["name"]: n for n, item in enumerate(out_list)}
        for item in extra:
            if item["name"] in index:
                out_list[index[item["name"]]] = _merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(extra)


def merge_pod_template(
    template: Mapping[str, Any], extra: Mapping[str, Any], container: str = CONTAINER
) -> Manifest:
    """`template` (a PodTemplateSpec) with the PodTemplateSpec `extra` merged in.

    Maps merge key by key (node selectors, labels); lists of named items merge by name
    (containers, volumes, env) and other lists are appended (tolerations). A container in
    `extra` named `primary` (Flyte's convention) or `container` is the task's own; any other
    container is added beside it (a sidecar). ConfigError for anything but metadata and spec.
    """
    unknown = set(extra) - {"metadata", "spec"}
    if unknown:
        raise ConfigError(
            f"pod_template must be a PodTemplateSpec ({{'metadata': ..., 'spec': ...}}); "
            f"unexpected keys: {', '.join(sorted(unknown))}"
        )
    extra = copy.deepcopy(dict(extra))
    for item in (extra.get("spec") or {}).get("containers") or []:
        if item.get("name") == "primary":
            item["name"] = container
    merged: Manifest = _merge(
        {"metadata": {"labels": {}, "annotations": {}}, **copy.deepcopy(dict(template))}, extra
    )
    return merged


# -- what a cluster needs ------------------------------------------------------------------------
def rbac_manifests(
    namespace: str = "default",
    *,
    service_account: str = SERVICE_ACCOUNT,
    role: str = ROLE,
    pod_tasks: bool = False,
) -> list[Manifest]:
    """Role, ServiceAccount and RoleBinding letting workers run cpu_bound tasks as Jobs.

    Reads Deployments, manages Jobs, reads pods and their logs (to explain a failed Job), and
    creates and deletes the short-lived Secrets that carry `SecretStr` inputs to a Job.
    `pod_tasks=True` also lets it create and delete pods, for pipeline tasks run as bare pods.
    """
    pods: list[Manifest] = [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
    ]
    if pod_tasks:
        pods = [
            {"apiGroups": [""], "resources": ["pods"],
             "verbs": ["create", "delete", "get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list"]},
        ]  # fmt: skip
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["batch"],
            "resources": ["jobs", "cronjobs", "jobs/status"],
            "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"],
        },
        *pods,
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    ]
    meta = {"namespace": namespace, "labels": dict(MANAGED_BY)}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": role, **meta}, "rules": rules},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": service_account, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, **meta},
            "subjects": [{"kind": "ServiceAccount", "name": service_account,
                          "namespace": namespace}],
            "roleRef": {"kind": "Role", "name": role, "apiGroup": "rbac.authorization.k8s.io"},
        },
    ]  # fmt: skip


def _deployment(
    name: str, namespace: str, component: str, container: Manifest, service_account: str,
    replicas: int, extra_pod: Manifest,
) -> Manifest:  # fmt: skip
    labels = {"app.kubernetes.io/name": "taskloom", "app.kubernetes.io/component": component}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"serviceAccountName": service_account, **extra_pod,
                         "containers": [container]},
            },
        },
    }  # fmt: skip


def worker_manifests(
    namespace: str = "default",
    image: str = "taskloom:latest",
    app: str = "app:manager",
    *,
    name: str = DEPLOYMENT,
    container: str = CONTAINER,
    service_account: str = SERVICE_ACCOUNT,
    replicas: int = 1,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    store_secret: str = STORE_SECRET,
    scheduler: bool = True,
) -> list[Manifest]:
    """The worker Deployment (and the scheduler's, unless `scheduler=False`).

    Both run as `service_account` and read the store URL from secret `store_secret`, key
    `url`. The worker gets `grace_seconds` to drain on SIGTERM plus a margin to requeue what is
    left, and a liveness probe (`taskloom k8s probe`) that fails once its heartbeats stop.
    """
    env: list[Manifest] = [
        {"name": "TASKLOOM_APP", "value": app},
        {"name": "TASKLOOM_STORE",
         "valueFrom": {"secretKeyRef": {"name": store_secret, "key": "url"}}},
        {"name": "TASKLOOM_K8S_NAMESPACE", "value": namespace},
        {"name": "TASKLOOM_K8S_DEPLOYMENT", "value": name},
        {"name": "TASKLOOM_K8S_CONTAINER", "value": container},
    ]  # fmt: skip
    command = ["taskloom", "worker", "--app", app, "--grace", f"{grace_seconds:g}"]
    worker: Manifest = {
        "name": container,
        "image": image,
        "command": command,
        "env": env,
        "livenessProbe": {
            "exec": {"command": ["taskloom", "k8s", "probe", "--app", app]},
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
            "timeoutSeconds": 20,
            "failureThreshold": 4,
        },
    }
    # The pod is killed this long after SIGTERM: the drain grace, plus time to write the
    # `interrupted` records of runs still going when the grace ends.
    termination = math.ceil(grace_seconds) + 15
    out = [
        _deployment(name, namespace, "worker", worker, service_account, replicas,
                    {"terminationGracePeriodSeconds": termination}),
    ]  # fmt: skip
    if scheduler:
        sched: Manifest = {
            "name": container,
            "image": image,
            "command": ["taskloom", "scheduler", "--app", app],
            "env": copy.deepcopy(env),
        }
        out.append(_deployment(SCHEDULER, namespace, "scheduler", sched, service_account, 1, {}))
    return out
