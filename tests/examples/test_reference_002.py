"""Reference 002's (pydatatask's) examples, run as written but for the import.

`import pydatatask` becomes `import taskloom.pipeline as pydatatask`. The Kubernetes example runs
against the strict fake API server of the integration tests, whose kubelet runs each pod's
command (taskloom's launcher) in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("kubernetes_asyncio")

from tests.integration.conftest import client
from tests.integration.fake_k8s import FakeKubernetes, pod_kubelet, pod_launches

import taskloom.pipeline as pydatatask  # was: import pydatatask
from taskloom import Resources, TaskManager
from taskloom.k8s import rbac_manifests
from taskloom.k8s.client import K8sClient
from taskloom.pipeline import KubeFunctionTask, MemoryRepository, Pipeline, StoreRepository


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    cluster = FakeKubernetes(role=rbac_manifests("default", pod_tasks=True)[0])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


__all__ = ["client"]  # the integration tests' client fixture, on this module's `fake`


async def test_in_process_sync_task_example() -> None:
    done_repo = MemoryRepository("done")
    repo_input, repo_output = MemoryRepository("in"), MemoryRepository("out")
    await repo_input.dump("j1", {"hello": "world"})

    # -- as written in reference 002 ---------------------------------------------------------
    # fmt: off
    @pydatatask.InProcessSyncTask("my_task", done_repo)
    async def my_task(job: str, inp: pydatatask.MetadataRepository, out: pydatatask.MetadataRepository):
        await out.dump(job, await inp.info(job))

    my_task.link("inp", repo_input, is_input=True)
    my_task.link("out", repo_output, is_output=True)
    # fmt: on
    # -- end ----------------------------------------------------------------------------------

    async with TaskManager("memory://") as manager, asyncio.timeout(20):
        await Pipeline([my_task], manager=manager).run()
    assert await repo_output.info("j1") == {"hello": "world"}
    assert (await done_repo.info("j1"))["success"]


async def test_kube_function_task_example(
    fake: FakeKubernetes, client: K8sClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKLOOM_K8S_SLEEP", "0.02")  # poll the fake quickly
    podman = client
    async with TaskManager("memory://") as manager:
        resman = pydatatask.ResourceManager(Resources(cpu="1", memory="1Gi"))
        repo_logs, repo_done = MemoryRepository("logs"), MemoryRepository("done")
        repo_func_done = StoreRepository(manager, "func_done")
        repo_input, repo_output = StoreRepository(manager, "in"), StoreRepository(manager, "out")
        await repo_input.dump("j1", {"n": 1})
        await repo_input.dump("j2", {"n": 2})

        # -- as written in reference 002 -----------------------------------------------------
        # fmt: off
        @KubeFunctionTask(
            "my_task",
            podman,
            resman,
            '''
                apiVersion: v1
                kind: Pod
                spec:
                  containers:
                    - name: leader
                      image: "docker.example.com/my/image"
                      command:
                        - python3
                        - {{argv0}}
                        - launch
                        - "{{task}}"
                        - "{{job}}"
                        - "--force"
                        - "--sync"
                      resources:
                        requests:
                          cpu: 100m
                          memory: 256Mi
            ''',
            repo_logs,
            repo_done,
            repo_func_done,
        )
        async def my_task(job: str, inp: pydatatask.MetadataRepository, out: pydatatask.MetadataRepository):
            await out.dump(job, await inp.info(job))

        my_task.link("inp", repo_input, is_input=True)
        my_task.link("out", repo_output, is_output=True)
        # fmt: on
        # -- end ------------------------------------------------------------------------------

        pipeline = Pipeline([my_task], manager=manager)
        kubelet = asyncio.create_task(pod_kubelet(fake, [pod_launches(pipeline)]))
        try:
            async with asyncio.timeout(30):
                await pipeline.run()
        finally:
            kubelet.cancel()
        assert await repo_output.info("j1") == {"n": 1} and await repo_output.info("j2") == {"n": 2}
        assert (await repo_done.info("j1"))["exit"] == "success"
        assert (await repo_func_done.info("j2"))["success"] is True
        assert await repo_logs.read("j1") == b"launched j1\n"
        assert my_task.resources == Resources(cpu="100m", memory="256Mi")  # charged to resman
    assert [p["metadata"]["namespace"] for p in fake.posted_pods()] == ["default", "default"]
