"""Flyte 2's TaskTemplate names on Task, and what they change in a task's Kubernetes Job."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from taskloom import (
    ConfigError,
    Documentation,
    K8sConfig,
    K8sInterruptible,
    K8sResourceRequirements,
    Resources,
    SerializationSettings,
    Task,
    TaskEnvironment,
    TaskManager,
    TaskRun,
    task,
)
from taskloom.cli import app as cli_app
from taskloom.k8s import job_manifest, worker_manifests
from taskloom.k8s.manifests import exec_argv

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]


def validate(manifest: dict[str, Any]) -> None:
    for version in ("1.30", kubernetes_validate.utils.latest_version()):
        kubernetes_validate.validate(manifest, version, strict=True)


def deployment(**container: Any) -> dict[str, Any]:
    dep = worker_manifests("jobs", "ghcr.io/acme/app:1", "app:manager", scheduler=False)[0]
    dep["spec"]["template"]["spec"]["containers"][0].update(container)
    return dep


@task(cpu_bound=True)
def crunch(n: int) -> int:
    """Crunch numbers.

    At length."""
    return n * 2


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


# -- names -----------------------------------------------------------------------------------------
def test_flyte_names_and_their_defaults() -> None:
    assert crunch.short_name == "crunch" and crunch.task_type == "python"
    assert crunch.task_type_version == 0 and crunch.debuggable is False
    assert crunch.docs == Documentation("Crunch numbers.", "Crunch numbers.\n\nAt length.")
    assert crunch.native_interface is crunch.interface
    assert crunch.native_interface.input_names == ("n",)
    assert crunch.source_file == inspect.getsourcefile(test_flyte_names_and_their_defaults)
    assert crunch.parent_env is None and crunch.parent_env_name is None
    assert crunch.execute(n=4) == 8  # the bare function


def test_docs_short_name_and_debuggable_options() -> None:
    @task(docs=Documentation("One line.", "All of it."), short_name="sq", debuggable=True)
    def square(x: int) -> int:
        """Ignored: docs win."""
        return x * x

    assert square.docs.short_description == "One line." and square.description == "All of it."
    assert square.short_name == "sq" and square.debuggable
    info = square.info()
    assert (info.short_name, info.task_type, info.task_type_version) == ("sq", "python", 0)
    assert square.override(short_name="sq2").short_name == "sq2"
    assert square.override(retries=1).short_name == "sq"


def test_override_refuses_image_and_docs_as_flyte_does() -> None:
    with pytest.raises(ConfigError, match="'image'"):
        crunch.override(image="other:1")
    with pytest.raises(ConfigError, match="'docs'"):
        crunch.override(docs=Documentation("x"))


async def test_execute_of_an_async_task_returns_its_coroutine() -> None:
    @task
    async def double(x: int) -> int:
        return 2 * x

    pending = double.execute(x=3)
    assert inspect.iscoroutine(pending) and await pending == 6


def test_task_environment_is_the_parent_env() -> None:
    env = TaskEnvironment("etl", retries=2)

    @env.task
    def step(x: int) -> int:
        return x

    assert step.parent_env_name == "etl" and step.info().parent_env_name == "etl"
    assert step.parent_env is not None and step.parent_env() is env


def test_hooks_have_the_reference_defaults() -> None:
    settings = SerializationSettings(run_id="r1", container={"command": ["taskloom", "worker"]})
    for s in (None, settings):
        assert crunch.config(s) == {} and crunch.custom_config(s) == {}
        assert crunch.data_loading_config(s) is None and crunch.sql(s) is None
    assert crunch.container_args(None) == []
    assert crunch.container_args(settings) == ["taskloom", "exec-run", "r1"]


class AnnotatedTask(Task):
    """Overrides the hooks that shape a Job."""

    def custom_config(self, settings: SerializationSettings | None = None) -> dict[str, str]:
        return {"acme.io/team": "data", "attempt": str(settings.attempt if settings else -1)}

    def container_args(self, settings: SerializationSettings | None = None) -> list[str]:
        assert settings is not None
        return ["python", "-m", "taskloom", "exec-run", settings.run_id]


def annotated_fn(n: int) -> int:
    return n


def test_container_args_builds_the_command_and_custom_config_lands_in_annotations() -> None:
    t = AnnotatedTask.from_function(annotated_fn, cpu_bound=True)
    assert isinstance(t, AnnotatedTask) and t.name == "annotated_fn"
    run = TaskRun(task=t.name)
    job = job_manifest(t, run, deployment(), attempt=1)
    validate(job)
    [container] = pod_of(job)["containers"]
    assert container["command"] == ["python", "-m", "taskloom", "exec-run", run.id]
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["annotations"]["acme.io/team"] == "data"
        assert meta["annotations"]["attempt"] == "1"
        assert meta["annotations"]["taskloom.io/task-name"] == t.name


def test_bad_hook_output_is_refused() -> None:
    class NoCommand(Task):
        def container_args(self, settings: SerializationSettings | None = None) -> list[str]:
            return []

    class BadKey(Task):
        def custom_config(self, settings: SerializationSettings | None = None) -> dict[str, str]:
            return {"not a key!": "x"}

    run = TaskRun(task="annotated_fn")
    with pytest.raises(ConfigError, match="no command"):
        job_manifest(NoCommand.from_function(annotated_fn), run, deployment())
    with pytest.raises(ConfigError, match="not a valid annotation"):
        job_manifest(BadKey.from_function(annotated_fn), run, deployment())


def test_exec_argv_keeps_the_worker_wrapper() -> None:
    worker = {"command": ["python", "-m", "taskloom", "worker", "--app", "a:m", "-c", "4"]}
    assert exec_argv(worker, "r") == ["python", "-m", "taskloom", "exec-run", "r", "--app", "a:m"]


# -- Job options -----------------------------------------------------------------------------------
def test_image_sets_the_jobs_image_and_auto_keeps_the_workers() -> None:
    run = TaskRun(task="crunch")
    job = job_manifest(crunch.override(), run, deployment())
    assert pod_of(job)["containers"][0]["image"] == "ghcr.io/acme/app:1"

    @task(cpu_bound=True, image="ghcr.io/acme/gpu:2")
    def on_gpu(n: int) -> int:
        return n

    job = job_manifest(on_gpu, TaskRun(task="on_gpu"), deployment())
    validate(job)
    assert pod_of(job)["containers"][0]["image"] == "ghcr.io/acme/gpu:2"
    auto = task(cpu_bound=True, image="auto")(annotated_fn)
    assert pod_of(job_manifest(auto, run, deployment()))["containers"][0]["image"] == (
        "ghcr.io/acme/app:1"
    )


POD_TEMPLATE = {
    "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "from template"}},
    "spec": {
        "nodeSelector": {"pool": "highmem"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                         "effect": "NoSchedule"}],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "restartPolicy": "Always",
        "containers": [
            {"name": "primary", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
             "env": [{"name": "FROM_TEMPLATE", "value": "1"}]},
            {"name": "proxy", "image": "envoyproxy/envoy:v1.30"},
        ],
    },
}  # fmt: skip


def test_pod_template_is_merged_into_the_jobs_pod() -> None:
    t = task(cpu_bound=True, pod_template=POD_TEMPLATE)(annotated_fn)
    run = TaskRun(task=t.name)
    job = job_manifest(t, run, deployment())
    validate(job)
    meta, pod = job["spec"]["template"]["metadata"], pod_of(job)
    assert meta["labels"]["team"] == "ml" and meta["labels"]["taskloom.io/run-id"] == run.id
    assert meta["annotations"]["note"] == "from template"
    assert pod["nodeSelector"] == {"pool": "highmem"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    assert pod["restartPolicy"] == "Never"  # retries stay taskloom's
    main, proxy = pod["containers"]
    assert main["name"] == "main" and main["command"][1] == "exec-run"
    assert main["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    env = {e["name"]: e for e in main["env"]}
    assert env["FROM_TEMPLATE"]["value"] == "1" and env["TASKLOOM_RUN_ID"]["value"] == run.id
    assert proxy == {"name": "proxy", "image": "envoyproxy/envoy:v1.30"}


def test_pod_template_by_name_or_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ConfigError, match="PodTemplateSpec"):
        task(pod_template="gpu-template")(annotated_fn)
    t = task(cpu_bound=True, pod_template={"nodeSelector": {"a": "b"}})(annotated_fn)
    with pytest.raises(ConfigError, match="nodeSelector"):
        job_manifest(t, TaskRun(task=t.name), deployment())


def test_interruptible_adds_spot_tolerations_and_affinity() -> None:
    run = TaskRun(task="annotated_fn")
    plain = pod_of(job_manifest(task(cpu_bound=True)(annotated_fn), run, deployment()))
    assert "tolerations" not in plain and "affinity" not in plain
    spot = task(cpu_bound=True, interruptible=True)(annotated_fn)
    job = job_manifest(spot, run, deployment())
    validate(job)
    pod = pod_of(job)
    assert {t["key"] for t in pod["tolerations"]} >= {"cloud.google.com/gke-spot"}
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    keys = {p["preference"]["matchExpressions"][0]["key"] for p in preferred}
    assert "karpenter.sh/capacity-type" in keys
    # configurable per task
    mine = K8sInterruptible(
        tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        node_affinity={"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "spot", "operator": "Exists"}]}]}},
    )  # fmt: skip
    custom = spot.override(k8s_config=K8sConfig(interruptible=mine))
    job = job_manifest(custom, run, deployment())
    validate(job)
    assert pod_of(job)["tolerations"] == mine.tolerations
    assert pod_of(job)["affinity"]["nodeAffinity"] == mine.node_affinity


def test_job_copies_the_workers_resources_when_none_are_set() -> None:
    worker = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    run = TaskRun(task="crunch")
    job = job_manifest(crunch, run, deployment(resources=worker))
    validate(job)
    assert pod_of(job)["containers"][0]["resources"] == worker
    own = crunch.override(resources=Resources(cpu="2"))
    assert pod_of(job_manifest(own, run, deployment(resources=worker)))["containers"][0][
        "resources"
    ] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    cfg = crunch.override(
        k8s_config=K8sConfig(resources=K8sResourceRequirements(limits={"cpu": "1"}))
    )
    assert pod_of(job_manifest(cfg, run, deployment(resources=worker)))["containers"][0][
        "resources"
    ] == {"limits": {"cpu": "1"}}


# -- configuration -----------------------------------------------------------------------------------
def test_get_k8s_config_and_fluid_environment_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NAMESPACE", "DEPLOYMENT", "CONTAINER", "JOB_TTL", "SLEEP"):
        monkeypatch.delenv(f"TASKLOOM_K8S_{name}", raising=False)
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_NAMESPACE", "fluid-ns")
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_DEPLOYMENT", "fluid-task")
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_CONTAINER", "app")
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_JOB_TTL", "42")
    cfg = crunch.get_k8s_config()
    assert (cfg.namespace, cfg.deployment, cfg.container, cfg.job_ttl) == (
        "fluid-ns", "fluid-task", "app", 42,
    )  # fmt: skip
    monkeypatch.setenv("TASKLOOM_K8S_NAMESPACE", "new-ns")  # the new name wins
    assert crunch.get_k8s_config().namespace == "new-ns"
    own = K8sConfig(namespace="own")
    assert crunch.override(k8s_config=own).get_k8s_config() is own


async def test_get_one_task_over_http(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from taskloom.api import create_app

    async with TaskManager(f"sqlite:///{tmp_path}/t.db", tasks=[crunch]) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            one = await client.get("/api/tasks/crunch")
            missing = await client.get("/api/tasks/nope")
    assert one.status_code == 200
    body = one.json()
    assert body["name"] == "crunch" and body["short_name"] == "crunch"
    assert body["task_type"] == "python" and body["params"]["required"] == ["n"]
    assert missing.status_code == 404 and "nope" in json.dumps(missing.json())


def test_cli_params_win_over_key_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_STORE", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(
        cli_app,
        ["run", "colorize", "color=red", "shade=dark", "--params", '{"color": "blue"}',
         "--app", "tests.apps.colors_app:make"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "painted blue (dark)"


def test_job_for_each_option_together_validates() -> None:
    t = task(
        cpu_bound=True, image="ghcr.io/acme/x:3", interruptible=True, pod_template=POD_TEMPLATE,
        resources=Resources(cpu="1", memory="1Gi"),
    )(annotated_fn)  # fmt: skip
    job = job_manifest(t, TaskRun(task=t.name), deployment())
    validate(job)
    assert asyncio.iscoroutinefunction(crunch.forward)
