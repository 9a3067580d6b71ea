"""SecretStr inputs reach a Kubernetes Job through a Secret of the attempt, never the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

pytest.importorskip("kubernetes_asyncio")

from taskloom import K8sConfig, TaskConsumer, TaskManager, TaskRun, TaskState, task
from taskloom.executors.kubernetes import KubernetesExecutor
from taskloom.k8s import job_name, worker_manifests
from taskloom.k8s.client import K8sClient
from taskloom.k8s.manifests import inputs_secret_name

from .fake_k8s import FakeKubernetes, kubelet, run_in_process

NS = "jobs"
SECRET = "s3cret-for-the-pod"


@task(cpu_bound=True, k8s_config=K8sConfig(namespace=NS, sleep=0.01, job_ttl=120))
def sign(ctx: TaskRun, doc: str, key: SecretStr) -> str:
    """Runs in the Job's pod with the plain key."""
    return f"{doc}:{key.get_secret_value()[::-1]}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    cluster = FakeKubernetes()
    cluster.start()
    cluster.deployments[(NS, "taskloom-worker")] = worker_manifests(
        NS, "ghcr.io/acme/app:1", "app:manager", scheduler=False
    )[0]
    cluster.secrets[(NS, "taskloom-store")] = {"url": "memory://"}
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_secret_input_travels_in_a_secret_deleted_after_the_attempt(
    fake: FakeKubernetes, client: K8sClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    seen: dict[str, Any] = {}

    async with TaskManager("memory://", tasks=[sign]) as manager:
        manager.set_executor("kubernetes", KubernetesExecutor(client))
        pod = run_in_process(manager)

        async def behave(cluster: FakeKubernetes, job: dict[str, Any]) -> None:
            name = job["metadata"]["name"]
            seen["secret"] = dict(cluster.secrets[(NS, inputs_secret_name(name))])
            await pod(cluster, job)

        kubelet_task = asyncio.create_task(kubelet(fake, [behave]))
        try:
            run = await manager.queue("sign", doc="memo", key=SECRET)
            await TaskConsumer(manager).run(burst=True)
            done = await manager.get_run(run.id)
        finally:
            kubelet_task.cancel()
            await asyncio.gather(kubelet_task, return_exceptions=True)

    assert done.state is TaskState.success, done.error
    assert done.result == f"memo:{SECRET[::-1]}"
    assert seen["secret"] == {"key": json.dumps(SECRET)}
    assert (NS, inputs_secret_name(job_name("sign", run.id, 0))) not in fake.secrets  # deleted
    [job] = fake.posted_jobs()
    assert SECRET not in json.dumps(job)  # the Job refers to the Secret, never the value
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TASKLOOM_SECRET_INPUT_key"]["valueFrom"]["secretKeyRef"] == {
        "name": inputs_secret_name(job["metadata"]["name"]), "key": "key",
    }  # fmt: skip
    [posted] = [c.body for c in fake.calls if c.route == "secrets" and c.method == "POST"]
    assert posted is not None and posted["metadata"]["labels"]["taskloom.io/run-id"] == run.id
