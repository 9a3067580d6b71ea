"""Every manifest taskloom generates passes the Kubernetes schema (strict), and Job names hold.

Schema versions: 1.30 and the newest one the installed kubernetes-validate ships.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from taskloom import (
    ConfigError,
    K8sConfig,
    K8sResourceRequirements,
    Resources,
    Secret,
    TaskRun,
    task,
)
from taskloom.k8s import job_manifest, job_name, rbac_manifests, worker_manifests
from taskloom.k8s.cli import app as k8s_app
from taskloom.k8s.cli import dump_documents
from taskloom.k8s.manifests import exec_command, find_container, is_dns_label
from taskloom.run import new_run_id

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]


def validate(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@task(
    cpu_bound=True,
    env={"MODE": "fast", "LEVEL": "3"},
    secrets=[Secret("api-token", group="creds"), Secret("db-password", as_env_var="PGPASSWORD")],
    resources=Resources(cpu="2", memory="1Gi", gpu=1, disk="10Gi"),
    timeout_seconds=90.5,
    k8s_config=K8sConfig(namespace="jobs", job_ttl=600),
)
def crunch(ctx: TaskRun, n: int) -> int:
    """A cpu_bound task with everything a Job can carry."""
    return n


@task(cpu_bound=True)
def plain(n: int) -> int:
    """No env, no secrets, no resources, no timeout."""
    return n


def worker_deployment(**changes: Any) -> dict[str, Any]:
    dep = worker_manifests("jobs", "ghcr.io/acme/app:1", "app:manager", scheduler=False)[0]
    dep["spec"]["template"]["spec"]["containers"][0].update(changes)
    return dep


# -- schema validation ---------------------------------------------------------------------------
def test_job_for_a_task_with_env_secrets_and_resources_validates() -> None:
    run = TaskRun(task="crunch", retry_attempt=2)
    job = job_manifest(crunch, run, worker_deployment(), attempt=2)
    validate(job)
    assert job["metadata"]["namespace"] == "jobs"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (0, 600)
    assert spec["activeDeadlineSeconds"] == 91
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "taskloom"
    [container] = pod["containers"]
    assert container["command"] == ["taskloom", "exec-run", run.id, "--app", "app:manager"]
    assert "livenessProbe" not in container
    quantities = {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "10Gi"}
    assert container["resources"] == {"requests": quantities, "limits": quantities}
    env = {e["name"]: e for e in container["env"]}
    assert env["MODE"] == {"name": "MODE", "value": "fast"}
    assert env["LEVEL"] == {"name": "LEVEL", "value": "3"}
    assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "api-token"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "db-password",
        "key": "db-password",
    }
    assert env["TASKLOOM_RUN_ID"]["value"] == run.id
    assert env["TASKLOOM_ATTEMPT"]["value"] == "2"
    assert env["TASK_MANAGER_SPAWN"]["value"] == "true"
    assert env["TASKLOOM_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "taskloom-store"
    labels = job["metadata"]["labels"]
    assert labels["taskloom.io/run-id"] == run.id
    assert labels["taskloom.io/attempt"] == "2"
    assert labels["taskloom.io/task"] == "crunch"
    assert spec["template"]["metadata"]["labels"] == labels
    assert "app.kubernetes.io/component" not in labels  # a worker Service must not select it


def test_job_for_a_plain_task_and_k8s_resources_validate() -> None:
    run = TaskRun(task="plain")
    job = job_manifest(plain, run, worker_deployment())
    validate(job)
    assert "activeDeadlineSeconds" not in job["spec"]
    assert "resources" not in job["spec"]["template"]["spec"]["containers"][0]
    reqs = K8sResourceRequirements(limits={"memory": "2Gi"}, requests={"cpu": "500m"})
    tuned = plain.override(k8s_config=K8sConfig(resources=reqs), resources=Resources(cpu="9"))
    job = job_manifest(tuned, run, worker_deployment())
    validate(job)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "2Gi"},
        "requests": {"cpu": "500m"},
    }


def test_rbac_has_exactly_the_reference_rules_plus_pod_reads() -> None:
    role, account, binding = rbac_manifests("workers")
    for manifest in (role, account, binding):
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "workers"
    assert (role["kind"], account["kind"], binding["kind"]) == (
        "Role",
        "ServiceAccount",
        "RoleBinding",
    )
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["batch"],
            "resources": ["jobs", "cronjobs", "jobs/status"],
            "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"],
        },
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "workers"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_rbac_for_pod_tasks_adds_pod_writes() -> None:
    role = rbac_manifests("workers", pod_tasks=True)[0]
    validate(role)
    pods = next(r for r in role["rules"] if r["resources"] == ["pods"])
    assert {"create", "delete"} <= set(pods["verbs"])


def test_worker_and_scheduler_deployments() -> None:
    worker, scheduler = worker_manifests("workers", "img:1", "app:manager", grace_seconds=60)
    validate(worker)
    validate(scheduler)
    assert (worker["metadata"]["name"], scheduler["metadata"]["name"]) == (
        "taskloom-worker",
        "taskloom-scheduler",
    )
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == rbac_manifests("workers")[1]["metadata"]["name"]
    [main] = pod["containers"]
    assert main["name"] == "main"  # the executor's default container
    assert main["command"] == ["taskloom", "worker", "--app", "app:manager", "--grace", "60"]
    # The pod outlives the drain grace, with room to requeue what is left.
    assert pod["terminationGracePeriodSeconds"] == 75
    assert main["livenessProbe"]["exec"]["command"][:3] == ["taskloom", "k8s", "probe"]
    sched_pod = scheduler["spec"]["template"]["spec"]
    assert sched_pod["serviceAccountName"] == pod["serviceAccountName"]
    assert sched_pod["containers"][0]["command"][:2] == ["taskloom", "scheduler"]
    assert worker["spec"]["selector"]["matchLabels"] != scheduler["spec"]["selector"]["matchLabels"]


# -- Job names -----------------------------------------------------------------------------------
def test_job_names_differ_per_attempt_and_per_run() -> None:
    run_id = new_run_id()
    names = {job_name("crunch_numbers", run_id, n) for n in range(5)}
    assert len(names) == 5
    assert job_name("crunch_numbers", run_id, 3).startswith("crunch-numbers-")
    assert job_name("crunch_numbers", run_id, 3).endswith("-3")


def test_time_ordered_ids_sharing_a_prefix_give_different_names() -> None:
    ids = [new_run_id() for _ in range(200)]
    assert len({i[:8] for i in ids}) < 5  # they do share their first digits
    assert len({job_name("t", i, 0) for i in ids}) == 200


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=0, max_size=200), run_id=st.text(min_size=1, max_size=40),
       attempt=st.integers(min_value=0, max_value=10**6))  # fmt: skip
def test_job_names_are_dns_labels_for_any_task_name(name: str, run_id: str, attempt: int) -> None:
    out = job_name(name, run_id, attempt)
    assert is_dns_label(out), out
    assert out.endswith(f"-{attempt}")


def test_long_and_odd_names_keep_hash_and_attempt() -> None:
    run_id = new_run_id()
    long = job_name("x" * 300, run_id, 12)
    assert len(long) == 63 and long.endswith("-12")
    assert job_name("x" * 300, run_id, 12) != job_name("x" * 300, new_run_id(), 12)
    assert is_dns_label(job_name("__Weird.Name__!!", run_id))
    assert job_name("__Weird.Name__!!", run_id).startswith("weird-name-")
    assert job_name("___", run_id).startswith("task-")


# -- container copying ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"command": ["taskloom", "worker", "-c", "4", "--app", "a:m"]},
         {"command": ["taskloom", "exec-run", "RID", "--app", "a:m"]}),
        ({"command": ["python", "-m", "taskloom"], "args": ["worker", "--app=a:m", "--burst"]},
         {"command": ["python", "-m", "taskloom", "exec-run", "RID", "--app=a:m"]}),
        ({"args": ["taskloom", "serve", "-a", "a:m", "--port", "80"]},
         {"args": ["taskloom", "exec-run", "RID", "-a", "a:m"]}),
        ({"command": ["taskloom", "--app", "a:m", "worker"]},
         {"command": ["taskloom", "--app", "a:m", "exec-run", "RID"]}),
        ({"command": ["/entrypoint.sh"]}, {"command": ["taskloom", "exec-run", "RID"]}),
    ],
)  # fmt: skip
def test_exec_command_drops_the_long_running_arguments(
    container: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert exec_command(container, "RID") == expected


def test_missing_container_names_those_that_exist() -> None:
    dep = worker_deployment()
    dep["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    with pytest.raises(ConfigError, match=r"no container 'gpu' \(containers: 'main', 'sidecar'\)"):
        find_container(dep, "gpu")
    with pytest.raises(ConfigError, match="no container 'gpu'"):
        job_manifest(
            plain.override(k8s_config=K8sConfig(container="gpu")), TaskRun(task="plain"), dep
        )


def test_invalid_secret_name_is_a_config_error() -> None:
    bad = plain.override(secrets=[Secret("API_TOKEN")])
    with pytest.raises(ConfigError, match="group="):
        job_manifest(bad, TaskRun(task="plain"), worker_deployment())


def test_k8s_config_reads_env_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_K8S_NAMESPACE", "elsewhere")
    monkeypatch.setenv("TASKLOOM_K8S_JOB_TTL", "42")
    job = job_manifest(plain, TaskRun(task="plain"), worker_deployment())
    assert job["metadata"]["namespace"] == "elsewhere"
    assert job["spec"]["ttlSecondsAfterFinished"] == 42


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_prints_valid_yaml() -> None:
    runner = CliRunner()
    rbac = runner.invoke(k8s_app, ["rbac", "--namespace", "workers"])
    assert rbac.exit_code == 0, rbac.output
    docs = list(yaml.safe_load_all(rbac.output))
    assert [d["kind"] for d in docs] == ["Role", "ServiceAccount", "RoleBinding"]
    out = runner.invoke(
        k8s_app, ["manifests", "-n", "workers", "--image", "img:1", "--app", "app:manager"]
    )
    assert out.exit_code == 0, out.output
    assert "&id" not in out.output  # no YAML anchors
    docs = list(yaml.safe_load_all(out.output))
    kinds = ["Role", "ServiceAccount", "RoleBinding", "Deployment", "Deployment"]
    assert [d["kind"] for d in docs] == kinds
    for doc in docs:
        validate(doc)


def test_without_pyyaml_documents_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails
    text = dump_documents(rbac_manifests("w"))
    parts = [p for p in text.split("---\n") if p.strip()]
    assert [json.loads(p)["kind"] for p in parts] == ["Role", "ServiceAccount", "RoleBinding"]


def test_probe_checks_this_hosts_worker_beat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"probe_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from taskloom import TaskManager\nmanager = TaskManager('memory://')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(k8s_app, ["probe", "--app", f"{module}:manager"]).exit_code == 1
    manager = __import__(module).manager

    async def beat() -> None:
        async with manager:
            host = socket.gethostname()
            await manager.store.worker_beat(f"{host}-1-ab", {}, 30, manager.clock())

    asyncio.run(beat())
    result = runner.invoke(k8s_app, ["probe", "--app", f"{module}:manager"])
    assert result.exit_code == 0, result.output
