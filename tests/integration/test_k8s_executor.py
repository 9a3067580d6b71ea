"""KubernetesExecutor and K8sClient against a fake API server on loopback (real HTTP).

The fake's kubelet decides how each Job ends: it runs `exec_run` in this process (the pod's
real entry point, with the Job's env), kills the pod without an outcome, or never ends it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("kubernetes_asyncio")


from taskloom import (
    ConfigError,
    K8sConfig,
    Resources,
    Secret,
    TaskConsumer,
    TaskManager,
    TaskRun,
    TaskState,
    is_in_cpu_process,
    task,
)
from taskloom.executors.kubernetes import KubernetesExecutor
from taskloom.k8s import job_name, rbac_manifests, worker_manifests
from taskloom.k8s.client import (
    K8sClient,
    KubernetesApiError,
    KubernetesConflictError,
    KubernetesNotFoundError,
)
from taskloom.k8s.exec_run import exec_run
from taskloom.outcome import outcome_key

from .fake_k8s import Behaviour, FakeKubernetes, fail, hang, kubelet, run_in_process

NS = "jobs"
FAST = K8sConfig(namespace=NS, sleep=0.01, job_ttl=120)


@task(
    cpu_bound=True,
    k8s_config=FAST,
    env={"MODE": "fast"},
    secrets=[Secret("api-token", group="creds")],
    resources=Resources(cpu="2", memory="1Gi"),
    timeout_seconds=60,
)
def crunch(ctx: TaskRun, n: int) -> dict[str, Any]:
    """Runs in the Job's pod: reports what it sees there."""
    return {
        "square": n * n,
        "spawned": is_in_cpu_process(),
        "mode": os.environ.get("MODE"),
        "token_len": len(ctx.secrets["api-token"]),
    }


@task(cpu_bound=True, k8s_config=FAST)
def explode(n: int) -> int:
    """Raises inside the pod."""
    raise ValueError(f"bad n={n}")


@task(cpu_bound=True, k8s_config=FAST, retry=1)
def flaky(n: int) -> int:
    """OOM-killed on its first Job (scripted), fine on the second."""
    return n + 1


@task(cpu_bound=True, k8s_config=FAST)
def quitter(ctx: TaskRun) -> None:
    """Aborts itself inside the pod."""
    ctx.abort("not today")


@task(cpu_bound=True, k8s_config=FAST, retry=2)
def misconfigured() -> None:
    """Finds its configuration wrong inside the pod: retrying cannot help."""
    raise ConfigError("MODEL_PATH is not set in the Job")


@task(cpu_bound=True, k8s_config=FAST)
def sleepy() -> None:
    """Its Job never ends (scripted)."""


def deployment(containers: list[str] | None = None) -> dict[str, Any]:
    """The worker Deployment `taskloom k8s manifests` prints, with a volume added."""
    dep = worker_manifests(NS, "ghcr.io/acme/app:1", "app:manager", scheduler=False)[0]
    pod = dep["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    main = pod["containers"][0]
    main["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    if containers is not None:
        pod["containers"] = [{**main, "name": c} for c in containers]
    return dep


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    cluster = FakeKubernetes()
    cluster.start()
    cluster.deployments[(NS, "taskloom-worker")] = deployment()
    cluster.secrets[(NS, "creds")] = {"api-token": "s3cret!"}
    cluster.secrets[(NS, "taskloom-store")] = {"url": "memory://"}
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def in_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the manager choose the kubernetes executor for cpu_bound tasks by itself."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    yield


@pytest.fixture
async def manager(client: K8sClient, in_cluster: None) -> AsyncIterator[TaskManager]:
    mgr = TaskManager("memory://", tasks=[crunch, explode, flaky, quitter, misconfigured, sleepy])
    mgr.set_executor("kubernetes", KubernetesExecutor(client))
    async with mgr:
        yield mgr


@pytest.fixture
async def cluster_of(fake: FakeKubernetes) -> AsyncIterator[Any]:
    """Start the kubelet with a script; stopped at the end of the test."""
    started: list[asyncio.Task[None]] = []

    async def start(*behaviours: Behaviour) -> None:
        started.append(asyncio.create_task(kubelet(fake, list(behaviours))))

    yield start
    for t in started:
        t.cancel()
    await asyncio.gather(*started, return_exceptions=True)


# -- the executor --------------------------------------------------------------------------------
async def test_success_runs_in_a_job_with_env_secrets_and_resources(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(run_in_process(manager))
    assert manager.executor_name(crunch) == "kubernetes"

    run = await manager.execute("crunch", n=7)

    assert run.state is TaskState.success, run.error
    assert run.result == {"square": 49, "spawned": True, "mode": "fast", "token_len": 7}
    [body] = fake.posted_jobs()
    assert body["metadata"]["name"] == job_name("crunch", run.id, 0)
    spec = body["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 120
    assert spec["activeDeadlineSeconds"] == 60
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "taskloom"
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    [container] = pod["containers"]
    assert container["command"] == ["taskloom", "exec-run", run.id, "--app", "app:manager"]
    assert container["image"] == "ghcr.io/acme/app:1"
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "1Gi"}}  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["TASKLOOM_RUN_ID"]["value"] == run.id
    assert env["TASK_MANAGER_SPAWN"]["value"] == "true"
    assert env["MODE"]["value"] == "fast"
    assert env["API_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "creds", "key": "api-token"}}
    assert env["TASKLOOM_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "taskloom-store"
    assert "s3cret!" not in str(body)
    assert body["metadata"]["labels"]["taskloom.io/run-id"] == run.id
    assert fake.calls_to("deployment", "GET")
    assert fake.calls_to("job", "GET")
    assert not fake.calls_to("job", "DELETE")  # a finished Job is left to its TTL
    assert await manager.store.kv_get(outcome_key(run.id, 0), manager.clock()) is None


async def test_error_raised_in_the_pod_fails_the_run(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(run_in_process(manager))
    run = await manager.execute("explode", n=3)
    assert run.state is TaskState.failure
    assert run.error is not None
    assert run.error["type"] == "ValueError"
    assert run.error["message"] == "bad n=3"
    assert "raise ValueError" in run.error["traceback"]


async def test_job_dying_without_outcome_reports_reason_and_last_log_lines(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    log = "".join(f"line {i}\n" for i in range(30))
    await cluster_of(fail("OOMKilled", 137, log))
    run = await manager.execute("explode", n=1)
    assert run.state is TaskState.failure
    assert run.error is not None
    assert run.error["type"] == "OOMKilled"
    assert "exit code 137" in run.error["message"]
    assert "line 29" in run.error["message"] and "line 9\n" not in run.error["message"]
    assert "line 10" in run.error["traceback"]
    [log_call] = fake.calls_to("log", "GET")
    assert log_call.query["tailLines"] == "20"
    assert fake.calls_to("pods", "GET")[0].query["labelSelector"].startswith("job-name=")


async def test_deadline_exceeded_is_the_reason(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(fail("Error", 143, "Terminated\n", job_reason="DeadlineExceeded"))
    run = await manager.execute("explode", n=1)
    assert run.error is not None and run.error["type"] == "DeadlineExceeded"


async def test_timeout_deletes_the_job_and_says_why(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    del fake.secrets[(NS, "creds")]  # the pod can never start
    await cluster_of(run_in_process(manager))
    timed = crunch.override(timeout_seconds=0.5)
    manager.register_task(timed)
    run = await manager.execute("crunch", n=1)
    assert run.state is TaskState.failure
    assert run.error is not None and run.error["type"] == "TaskTimeoutError"
    assert "CreateContainerConfigError" in run.error["message"]
    assert 'secret "creds" not found' in run.error["message"]
    [delete] = fake.calls_to("job", "DELETE")
    assert delete.query["propagationPolicy"] == "Background"
    assert not fake.jobs and not fake.pods


async def test_cancel_deletes_the_job(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    running = asyncio.Event()
    await cluster_of(hang(running))
    async with TaskConsumer(manager):
        run = await manager.queue("sleepy")
        await asyncio.wait_for(running.wait(), 10)
        await manager.cancel(run.id)
        done = await manager.wait(run.id, timeout=10)
    assert done.state is TaskState.aborted
    [delete] = fake.calls_to("job", "DELETE")
    assert delete.query["propagationPolicy"] == "Background"
    assert not fake.jobs


async def test_each_retry_gets_its_own_job(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(fail("OOMKilled", 137, "killed\n"), run_in_process(manager))
    run = await manager.execute("flaky", n=1)
    assert run.state is TaskState.success and run.result == 2
    first, second = fake.posted_jobs()
    names = [first["metadata"]["name"], second["metadata"]["name"]]
    assert names == [job_name("flaky", run.id, 0), job_name("flaky", run.id, 1)]
    assert names[0] != names[1] and names[0][:-2] == names[1][:-2]
    assert [j["metadata"]["labels"]["taskloom.io/attempt"] for j in (first, second)] == ["0", "1"]
    assert [a.state for a in run.attempts] == [TaskState.failure, TaskState.success]
    assert run.attempts[0].error is not None and run.attempts[0].error["type"] == "OOMKilled"


async def test_abort_inside_the_pod_aborts_the_run(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(run_in_process(manager))
    run = await manager.execute("quitter")
    assert run.state is TaskState.aborted
    assert run.error is not None and "not today" in str(run.error)


async def test_config_error_inside_the_pod_is_not_retried(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    """The Job's outcome goes through the codec the process pool uses, so a ConfigError
    keeps its meaning (fail now) instead of turning into a retryable failure."""
    await cluster_of(run_in_process(manager), run_in_process(manager), run_in_process(manager))
    run = await manager.execute("misconfigured")
    assert run.state is TaskState.failure
    assert run.error is not None and "MODEL_PATH" in run.error["message"]
    assert len(run.attempts) == 1 and len(fake.posted_jobs()) == 1


async def test_missing_container_names_the_ones_that_exist(
    manager: TaskManager, fake: FakeKubernetes
) -> None:
    fake.deployments[(NS, "taskloom-worker")] = deployment(["app", "sidecar"])
    run = await manager.execute("crunch", n=1)
    assert run.state is TaskState.failure
    assert run.error is not None and run.error["type"] == "ConfigError"
    assert "'main'" in run.error["message"]
    assert "'app', 'sidecar'" in run.error["message"]
    assert not fake.posted_jobs()


async def test_missing_container_raises_config_error_from_execute(
    manager: TaskManager, fake: FakeKubernetes, client: K8sClient
) -> None:
    fake.deployments[(NS, "taskloom-worker")] = deployment(["sidecar"])
    run = manager.new_run("crunch", {"n": 1})
    env = manager.lifecycle.run_env(run)
    with pytest.raises(ConfigError, match="sidecar"):
        await KubernetesExecutor(client).execute(crunch, run, {"n": 1}, None, env)


async def test_restarted_consumer_adopts_the_job_of_its_attempt(
    manager: TaskManager, fake: FakeKubernetes, client: K8sClient, cluster_of: Any
) -> None:
    from taskloom.k8s import job_manifest

    await cluster_of(run_in_process(manager))
    run = manager.new_run("crunch", {"n": 4})
    await manager.store.save(run)
    dep = await client.read_deployment(NS, "taskloom-worker")
    await client.create_job(NS, job_manifest(crunch, run, dep))  # left by a crashed consumer
    done = await manager.execute_run(run)
    assert done.state is TaskState.success and done.result["square"] == 16
    assert len(fake.calls_to("jobs", "POST")) == 2  # the second answered 409 and was adopted


async def test_exec_run_for_an_unknown_run_exits_1(
    manager: TaskManager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await exec_run(manager, "nope", attempt=0) == 1
    assert "not found in store memory://" in capsys.readouterr().err


# -- the client: what the pipeline's pod kinds reuse ---------------------------------------------
async def test_client_pod_calls(fake: FakeKubernetes, client: K8sClient) -> None:
    fake.role = rbac_manifests(NS, pod_tasks=True)[0]  # bare pods are for pipeline tasks
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p1", "labels": {"taskloom.io/pipeline": "etl"}},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}]}}  # fmt: skip
    created = await client.create_pod(NS, pod)
    assert created["metadata"]["name"] == "p1"
    with pytest.raises(KubernetesConflictError):
        await client.create_pod(NS, pod)
    assert (await client.get_pod(NS, "p1"))["status"]["phase"] == "Pending"
    listed = await client.list_pods(NS, "taskloom.io/pipeline=etl")
    assert [p["metadata"]["name"] for p in listed] == ["p1"]
    assert await client.list_pods(NS, "taskloom.io/pipeline=other") == []
    fake.logs[(NS, "p1")] = '{"looks": "like json"}\nplain line\n'
    assert await client.read_pod_log(NS, "p1") == '{"looks": "like json"}\nplain line\n'
    assert await client.read_pod_log(NS, "p1", tail_lines=1) == "plain line\n"
    assert await client.delete_pod(NS, "p1") is True
    assert await client.delete_pod(NS, "p1") is False
    with pytest.raises(KubernetesNotFoundError, match='pods "p1" not found'):
        await client.get_pod(NS, "p1")
    methods = {(c.method, c.route) for c in fake.calls}
    assert methods == {("POST", "pods"), ("GET", "pod"), ("GET", "pods"), ("GET", "log"),
                       ("DELETE", "pod")}  # fmt: skip


async def test_client_job_calls(fake: FakeKubernetes, client: K8sClient) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j1"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "main", "image": "x"}]}}}}  # fmt: skip
    await client.create_job(NS, job)
    assert (await client.get_job(NS, "j1"))["status"] == {
        "active": 1,
        "startTime": "2030-01-01T00:00:00Z",
    }
    [pod] = await client.pods_of_job(NS, "j1")
    assert pod["metadata"]["labels"]["job-name"] == "j1"
    assert await client.delete_job(NS, "j1") is True
    assert await client.delete_job(NS, "j1") is False


async def test_client_translates_errors(fake: FakeKubernetes, client: K8sClient) -> None:
    with pytest.raises(ConfigError, match="deployment 'ghost' not found in namespace 'jobs'"):
        await client.read_deployment(NS, "ghost")
    fake.forbidden.add("jobs")
    with pytest.raises(ConfigError, match="taskloom k8s rbac"):
        await client.create_job(NS, {"metadata": {"name": "x"}})
    fake.stop()
    with pytest.raises(KubernetesApiError, match="unreachable") as info:
        await client.get_job(NS, "x")
    assert info.value.status is None


async def test_client_by_host(fake: FakeKubernetes) -> None:
    async with K8sClient(host=fake.url) as k8s:
        dep = await k8s.read_deployment(NS, "taskloom-worker")
    assert dep["spec"]["template"]["spec"]["containers"][0]["name"] == "main"


# -- the fake is as strict as an API server --------------------------------------------------------
async def test_a_broken_job_manifest_is_refused_as_a_server_would(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskloom.executors.kubernetes as k8s_executor

    real = k8s_executor.job_manifest

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = real(*args, **kwargs)
        body["spec"]["template"]["spec"]["containers"][0]["cpuLimit"] = "2"  # not a field
        return body

    monkeypatch.setattr(k8s_executor, "job_manifest", broken)
    await cluster_of(run_in_process(manager))

    run = await manager.execute("crunch", n=2)

    assert run.state is TaskState.failure
    assert (
        run.error is not None
        and 'unknown field "spec.template.spec.containers.0.cpuLimit"' in (run.error["message"])
    )
    assert not fake.jobs  # nothing was created


async def test_schema_errors_answer_422_and_unknown_fields_400(
    fake: FakeKubernetes, client: K8sClient
) -> None:
    nameless = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j2"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"image": "x"}]}}}}  # fmt: skip
    with pytest.raises(KubernetesApiError, match="422.*'name' is a required property") as info:
        await client.create_job(NS, nameless)
    assert info.value.status == 422
    typo = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j3"},
            "spec": {"backofLimit": 1, "template": {"spec": {"containers": []}}}}  # fmt: skip
    with pytest.raises(KubernetesApiError, match='unknown field "spec.backofLimit"') as info:
        await client.create_job(NS, typo)
    assert info.value.status == 400
    assert not fake.jobs


async def test_a_missing_rbac_verb_fails_the_run(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    role = rbac_manifests(NS)[0]
    for rule in role["rules"]:
        if "jobs" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    fake.role = role
    await cluster_of(run_in_process(manager))

    run = await manager.execute("crunch", n=2)

    assert run.state is TaskState.failure
    assert run.error is not None
    assert 'cannot create resource "jobs" in API group "batch"' in run.error["message"]
    assert [c for c in fake.calls if c.route == "jobs"]  # it was asked, and refused


async def test_the_printed_role_covers_every_call_of_a_run(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    fake.role = rbac_manifests(NS)[0]  # exactly what `taskloom k8s rbac` prints
    await cluster_of(run_in_process(manager), fail(), hang())
    assert (await manager.execute("crunch", n=3)).state is TaskState.success
    assert (await manager.execute("explode", n=1)).state is TaskState.failure  # reads pods+logs


async def test_jobs_orphan_pods_without_a_propagation_policy(
    fake: FakeKubernetes, client: K8sClient
) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j4"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "main", "image": "x"}]}}}}  # fmt: skip
    await client.create_job(NS, job)
    [pod] = await client.pods_of_job(NS, "j4")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert (
        pod["metadata"]["labels"]["controller-uid"] == pod["metadata"]["ownerReferences"][0]["uid"]
    )
    # the executor asks for Background: the pod goes with its Job
    assert await client.delete_job(NS, "j4") is True
    assert not fake.pods
    # a bare API delete (no policy) leaves the pod running, ownerless, as batch/v1 does
    await client.create_job(NS, {**job, "metadata": {"name": "j5"}})
    status, _ = fake.handle("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/j5", {}, None)
    assert status == 200
    [orphan] = fake.pods.values()
    assert "ownerReferences" not in orphan["metadata"]


async def test_finished_jobs_are_deleted_after_their_ttl(
    manager: TaskManager, fake: FakeKubernetes, cluster_of: Any
) -> None:
    await cluster_of(run_in_process(manager))
    run = await manager.execute("crunch", n=4)
    assert run.state is TaskState.success
    name = job_name("crunch", run.id, 0)
    job = fake.handle("GET", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", {}, None)[1]
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    fake.advance(119)
    assert (NS, name) in fake.jobs
    fake.advance(1)  # ttlSecondsAfterFinished = job_ttl = 120
    assert (NS, name) not in fake.jobs and not fake.pods
