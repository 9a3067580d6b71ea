"""The reference examples that use the Flyte and aio-fluid names, run as written (but for the
import): reference 003's cpu_bound tasks with and without `K8sConfig`, reference 001's
`my_task` with its `image`, and reference 000's `Task` attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples import reference_003_cpu_bound as ref003
from examples import reference_003_k8s_config as ref003_config
from examples import reference_examples as ref
from taskloom import ConfigError, K8sConfig, TaskManager, TaskRun, TaskState
from taskloom.k8s import job_manifest, worker_manifests

kubernetes_validate = pytest.importorskip("kubernetes_validate")


def deployment(namespace: str, name: str) -> dict[str, Any]:
    return worker_manifests(namespace, "ghcr.io/acme/app:1", "app:manager", name=name,
                            scheduler=False)[0]  # fmt: skip


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, kubernetes_validate.utils.latest_version(), strict=True)


@pytest.mark.parametrize("module", [ref003, ref003_config])
async def test_003_cpu_bound_tasks_run_in_a_process_child(tmp_path: Path, module: Any) -> None:
    t = module.heavy_calculation
    async with TaskManager(f"sqlite:///{tmp_path}/r.db", tasks=[t]) as m:
        assert m.executor_name(t) == "process"  # not in a cluster: a pool child
        run = await m.execute("heavy_calculation")
    assert run.state is TaskState.success and run.result is None


def test_003_k8s_config_shapes_the_job() -> None:
    t = ref003_config.heavy_calculation
    cfg = t.get_k8s_config()
    assert (cfg.namespace, cfg.deployment, cfg.container, cfg.job_ttl, cfg.sleep) == (
        "workers", "fluid-task", "main", 600, 2.0,
    )  # fmt: skip
    run = TaskRun(task=t.name)
    job = job_manifest(t, run, deployment("workers", "fluid-task"))
    validate(job)
    assert job["metadata"]["namespace"] == "workers"
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "main"


def test_003_defaults_read_the_fluid_variables_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NAMESPACE", "DEPLOYMENT", "CONTAINER", "JOB_TTL"):
        monkeypatch.delenv(f"TASKLOOM_K8S_{name}", raising=False)
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_NAMESPACE", "workers")
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_DEPLOYMENT", "fluid-task")
    monkeypatch.setenv("FLUID_TASK_CONSUMER_K8S_JOB_TTL", "300")
    t = ref003.heavy_calculation
    assert t.k8s_config is None and t.get_k8s_config() == K8sConfig(
        namespace="workers", deployment="fluid-task", container="main", job_ttl=300, sleep=2.0
    )
    job = job_manifest(t, TaskRun(task=t.name), deployment("workers", "fluid-task"))
    validate(job)
    assert job["metadata"]["namespace"] == "workers"


def test_001_my_task_image_is_the_jobs_image_and_cannot_be_overridden() -> None:
    t = ref.my_task
    assert (t.name, t.short_name, t.task_type, t.task_type_version) == (
        "my_task", "my_task", "python", 0,
    )  # fmt: skip
    job = job_manifest(t, TaskRun(task=t.name), deployment("default", "taskloom-worker"))
    validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "my_image"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    with pytest.raises(ConfigError, match="'image'"):
        t.override(image="other_image")


def test_000_task_names_on_the_hello_example() -> None:
    hello = ref.hello
    assert hello.name == "hello" and hello.short_description == ""
    assert hello.get_k8s_config() == K8sConfig()
    info = hello.info()
    assert info.name == "hello" and info.task_type == "python"
    assert hello.source_file is not None and hello.source_file.endswith("reference_examples.py")
    assert ref.my_legacy_task.parent_env_name == "reference"
    assert ref.my_legacy_task.execute(3) == 3
