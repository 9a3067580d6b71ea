"""Pipeline Kubernetes kinds against the fake API server on loopback (real HTTP).

`KubeTask` pods are ended by a scripted pod kubelet; `KubeFunctionTask` Jobs by the Job
kubelet, which runs `exec_run` in this process as the Job's pod would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

pytest.importorskip("kubernetes_asyncio")


from taskloom import ConfigError, K8sConfig, Resources, TaskManager
from taskloom.executors.kubernetes import KubernetesExecutor
from taskloom.k8s import job_name, rbac_manifests, worker_manifests
from taskloom.k8s.client import K8sClient
from taskloom.pipeline import (
    InProcessTask,
    KubeFunctionTask,
    KubeTask,
    MemoryRepository,
    Pipeline,
    Repository,
    StoreRepository,
)
from taskloom.pipeline.kube import (
    DEADLINE_GRACE,
    manifest_vars,
    parse_template,
    render_manifest,
)

from .fake_k8s import (
    Behaviour,
    FakeKubernetes,
    fail,
    kubelet,
    pod_exits,
    pod_kubelet,
    pod_launches,
    pod_runs,
    run_in_process,
)

NS = "jobs"
TEMPLATE = """
apiVersion: v1
kind: Pod
metadata:
  labels:
    app: crunch
spec:
  containers:
    - name: main
      image: busybox:1.36
      command: [sh, -c, 'echo crunching {{ job }}']
      args: ["{{ fetch_raw }}"]
      env:
        - name: JOB
          value: {{ job }}
        - name: POD
          value: {{pod}}
        - name: MODE
          value: {{ mode }}
"""

Start = Callable[..., Coroutine[Any, Any, None]]


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(manifest, "1.30", strict=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    cluster = FakeKubernetes(role=rbac_manifests(NS, pod_tasks=True)[0])
    cluster.start()
    dep = worker_manifests(NS, "ghcr.io/acme/app:1", "app:manager", scheduler=False)[0]
    cluster.deployments[(NS, "taskloom-worker")] = dep
    cluster.secrets[(NS, "taskloom-store")] = {"url": "memory://"}
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def manager(client: K8sClient) -> AsyncIterator[TaskManager]:
    async with TaskManager("memory://", poll_interval=0.05) as mgr:
        mgr.set_executor("kubernetes", KubernetesExecutor(client))
        yield mgr


@pytest.fixture
async def start(fake: FakeKubernetes) -> AsyncIterator[Start]:
    """`await start(pod_kubelet, behaviour, ...)`: a kubelet running until the test ends."""
    started: list[asyncio.Task[None]] = []

    async def go(which: Any, *behaviours: Behaviour) -> None:
        started.append(asyncio.create_task(which(fake, list(behaviours))))

    yield go
    for t in started:
        t.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def run(pipeline: Pipeline) -> None:
    async with asyncio.timeout(20):
        await pipeline.run()


def pipeline_of(manager: TaskManager, client: K8sClient, **kube: Any) -> tuple[Any, ...]:
    src, raw = MemoryRepository("src"), MemoryRepository("raw")

    @InProcessTask("fetch", done=MemoryRepository("fetch.done"))
    async def fetch(job: str, raw: Repository) -> None:
        await raw.write(job, b'size: 3 "quoted"\n- not: yaml')

    fetch.link("src", src, is_input=True)
    fetch.link("raw", raw, is_output=True)
    options: dict[str, Any] = {"namespace": NS, "client": client, "poll_interval": 0.01,
                               "values": {"mode": "fast"}, **kube}  # fmt: skip
    crunch = KubeTask("crunch", TEMPLATE, MemoryRepository("crunch.done"), **options)
    crunch.plug(fetch)
    return src, crunch, Pipeline([fetch, crunch], manager=manager)


# -- templates -----------------------------------------------------------------------------------
def test_templates_parse_from_yaml_json_and_dicts_and_render_as_text() -> None:
    doc = parse_template(TEMPLATE)
    assert manifest_vars(doc) == {"job", "pod", "mode", "fetch_raw"}
    tricky = 'a: b\n- "c"\n{{ job }}'  # would break YAML if inserted before parsing
    out = render_manifest(doc, {"job": tricky, "pod": "p", "mode": "m", "fetch_raw": "x"})
    container = out["spec"]["containers"][0]
    assert container["env"][0] == {"name": "JOB", "value": tricky}
    assert container["command"] == ["sh", "-c", f"echo crunching {tricky}"]
    as_json = '{"kind": "Pod", "spec": {"containers": [{"name": "{{ job }}"}]}}'
    assert parse_template(as_json) == {
        "kind": "Pod",
        "spec": {"containers": [{"name": "{{ job }}"}]},
    }
    given = {"spec": {"containers": [{"name": "c", "args": ["{{ job }}"]}]}}
    assert parse_template(given) == given and parse_template(given) is not given
    with pytest.raises(ConfigError, match="one mapping"):
        parse_template("- a\n- b\n")
    with pytest.raises(ConfigError, match="neither JSON nor YAML"):
        parse_template("a: [unclosed")


def test_yaml_templates_need_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails
    with pytest.raises(ConfigError, match=r"pip install 'taskloom\[k8s\]'"):
        parse_template("kind: Pod\n")
    assert parse_template('{"kind": "Pod"}') == {"kind": "Pod"}  # JSON needs nothing


async def test_validation_lists_template_problems(manager: TaskManager) -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment",
           "spec": {"restartPolicy": "Always", "containers": [{"name": "{{ nope }}"}]}}  # fmt: skip
    task = KubeTask("bad", bad, MemoryRepository(), logs=MemoryRepository())
    task.link("src", MemoryRepository(), is_input=True)
    found = "\n".join(task.problems())
    assert "not a v1 Pod" in found
    assert "restartPolicy 'Always'" in found
    assert "{{ nope }}, which is not defined" in found
    uses_output = KubeTask("out", {"spec": {"containers": [{"name": "{{ extra }}"}]}},
                           MemoryRepository())  # fmt: skip
    uses_output.link("extra", MemoryRepository(), is_output=True, required_for_start=True)
    assert any("not an input" in p for p in uses_output.problems())
    with pytest.raises(ConfigError, match="cannot read pod template"):
        Pipeline([KubeTask("gone", "a: [", MemoryRepository(), ready=MemoryRepository())],
                 manager=manager).validate()  # fmt: skip


# -- KubeTask ------------------------------------------------------------------------------------
async def test_second_stage_runs_as_a_pod_and_records_success_and_logs(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    logs = MemoryRepository("crunch.logs")
    src, crunch, pipeline = pipeline_of(
        manager, client, logs=logs, resources=Resources(cpu="1", memory="256Mi"), timeout=600
    )
    await start(pod_kubelet, pod_exits(0, log="crunched\nall good\n"))
    for job in ("a", "b"):
        await src.write(job, b"")
    await run(pipeline)

    assert pipeline.stats.succeeded == 4 and pipeline.stats.failed == 0
    record = await crunch.done.info("a")
    assert record["exit"] == "success"
    name = job_name("crunch", record["run_id"], 0)
    assert record["result"] == {"pod": name, "namespace": NS, "phase": "Succeeded",
                                "exit_code": 0, "node": None,
                                "started": "2030-01-01T00:00:02Z",
                                "finished": "2030-01-01T00:00:09Z"}  # fmt: skip
    assert await logs.read("a") == b"crunched\nall good\n"
    bodies = {p["metadata"]["annotations"]["taskloom.io/job-key"]: p for p in fake.posted_pods()}
    assert sorted(bodies) == ["a", "b"]
    pod = bodies["a"]
    assert pod["metadata"]["name"] == name and pod["metadata"]["namespace"] == NS
    assert pod["metadata"]["labels"] == {
        "app": "crunch", "app.kubernetes.io/managed-by": "taskloom",
        "taskloom.io/pipeline": "pipeline", "taskloom.io/task": "crunch",
        "taskloom.io/job": "a", "taskloom.io/run-id": record["run_id"],
        "taskloom.io/attempt": "0",
    }  # fmt: skip
    spec = pod["spec"]
    assert (
        spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 600 + DEADLINE_GRACE
    )
    [container] = spec["containers"]
    assert container["args"] == ['size: 3 "quoted"\n- not: yaml']  # the upstream value, as text
    assert container["command"] == ["sh", "-c", "echo crunching a"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"JOB": "a", "POD": name, "MODE": "fast"}
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "256Mi"}}  # fmt: skip
    for body in fake.posted_pods():
        validate(body)
    deletes = fake.calls_to("pod", "DELETE")
    assert sorted(c.path.rsplit("/", 1)[1] for c in deletes) == sorted(
        p["metadata"]["name"] for p in fake.posted_pods()
    )
    assert deletes[0].query["gracePeriodSeconds"] == "0"
    assert not fake.pods
    assert fake.calls_to("pod", "GET")  # polled


@pytest.mark.parametrize(
    ("container_reason", "pod_reason", "expected", "keep_logs"),
    [
        ("OOMKilled", None, "OOMKilled", True),
        ("Error", "DeadlineExceeded", "DeadlineExceeded", False),
    ],
)
async def test_a_failed_pod_reports_its_reason_and_stays_failed_after_retries(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start,
    container_reason: str, pod_reason: str | None, expected: str, keep_logs: bool,
) -> None:  # fmt: skip
    logs = MemoryRepository("crunch.logs") if keep_logs else None
    src, crunch, pipeline = pipeline_of(manager, client, logs=logs, retry=1)
    text = "".join(f"line {i}\n" for i in range(30))
    await start(pod_kubelet, pod_exits(137, reason=container_reason, log=text,
                                       pod_reason=pod_reason))  # fmt: skip
    await src.write("a", b"")
    async with pipeline:
        await run(pipeline)
        for _ in range(3):  # failed for good: never relaunched
            assert not await pipeline.update()
    record = await crunch.done.info("a")
    assert record["success"] is False and record["exit"] == "failure"
    assert record["attempts"] == 2
    assert record["error"]["type"] == expected
    message = record["error"]["message"]
    assert "exit code 137" in message and "line 29" in message and "line 9\n" not in message
    names = [p["metadata"]["name"] for p in fake.posted_pods()]
    assert names == [job_name("crunch", record["run_id"], a) for a in (0, 1)]
    assert len(fake.calls_to("pod", "DELETE")) == 2 and not fake.pods
    log_calls = fake.calls_to("log", "GET")
    if logs is not None:  # the whole log is kept; the error's tail is cut from it
        assert await logs.read("a") == text.encode()
        assert all("tailLines" not in c.query for c in log_calls)
    else:  # only the tail is read
        assert [c.query["tailLines"] for c in log_calls] == ["20", "20"]


async def test_a_pod_deleted_behind_the_tasks_back_fails_as_pod_gone(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    async def vanish(fake: FakeKubernetes, pod: dict[str, Any]) -> None:
        with fake._lock:  # e.g. `kubectl delete pod` by someone else
            del fake.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])]

    src, crunch, pipeline = pipeline_of(manager, client)
    await start(pod_kubelet, vanish)
    await src.write("a", b"")
    await run(pipeline)
    record = await crunch.done.info("a")
    assert record["error"]["type"] == "PodGone"
    assert "deleted before it ended" in record["error"]["message"]


async def test_timeout_deletes_the_pod_and_keeps_what_it_logged(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    logs = MemoryRepository("crunch.logs")
    src, crunch, pipeline = pipeline_of(manager, client, logs=logs, timeout=0.3)
    await start(pod_kubelet, pod_runs(log="working...\n"))
    await src.write("a", b"")
    await run(pipeline)
    record = await crunch.done.info("a")
    assert record["exit"] == "timeout" and record["error"]["type"] == "TaskTimeoutError"
    [pod] = fake.posted_pods()
    assert pod["spec"]["activeDeadlineSeconds"] == 1 + DEADLINE_GRACE  # the kubelet's backstop
    [delete] = fake.calls_to("pod", "DELETE")
    assert delete.path.endswith(pod["metadata"]["name"])
    assert not fake.pods
    assert await logs.read("a") == b"working...\n"


async def test_cancel_deletes_the_pod(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    src, crunch, pipeline = pipeline_of(manager, client)
    running = asyncio.Event()
    await start(pod_kubelet, pod_runs(running))
    await src.write("a", b"")
    async with pipeline:
        looping = asyncio.create_task(run(pipeline))
        async with asyncio.timeout(10):
            await running.wait()
        await pipeline.cancel("crunch", "a")
        await looping
    assert (await crunch.done.info("a"))["exit"] == "aborted"
    assert len(fake.calls_to("pod", "DELETE")) == 1 and not fake.pods


async def test_a_restarted_pipeline_adopts_the_pod_of_its_attempt(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes
) -> None:
    logs = MemoryRepository("crunch.logs")
    src = MemoryRepository("src")
    await src.write("a", b"")
    crunch = KubeTask("crunch", {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
                      MemoryRepository("crunch.done"), logs=logs, namespace=NS, client=client,
                      poll_interval=0.01)  # fmt: skip
    crunch.link("src", src, is_input=True)
    async with Pipeline([crunch], manager=manager, serve=False) as before:
        await before.update()  # queued; then this process "dies" with the pod launched
    [run_] = await manager.runs(task="pipeline.crunch")
    manifest = await crunch.pod_manifest("a", run_)
    await client.create_pod(NS, manifest)
    name = manifest["metadata"]["name"]
    fake.start_pod(NS, name)

    adopted = fake.next_call("pod", "GET")
    after = Pipeline([crunch], manager=manager)
    running = asyncio.create_task(run(after))
    async with asyncio.timeout(10):
        await adopted.wait()
    fake.end_pod(NS, name, exit_code=0, log="finished under the new worker\n")
    await running

    assert (await crunch.done.info("a"))["exit"] == "success"
    assert [p["metadata"]["name"] for p in fake.posted_pods()] == [name, name]  # 2nd: 409
    assert await logs.read("a") == b"finished under the new worker\n"
    assert after.stats.launched == 0  # the queued run was adopted, not launched again
    assert not fake.pods


async def test_a_same_named_pod_of_another_run_is_left_alone(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes
) -> None:
    src = MemoryRepository("src")
    await src.write("a", b"")
    crunch = KubeTask("crunch", {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
                      MemoryRepository("crunch.done"), namespace=NS, client=client,
                      poll_interval=0.01)  # fmt: skip
    crunch.link("src", src, is_input=True)
    async with Pipeline([crunch], manager=manager, serve=False) as before:
        await before.update()
    [run_] = await manager.runs(task="pipeline.crunch")
    manifest = await crunch.pod_manifest("a", run_)
    manifest["metadata"]["labels"]["taskloom.io/run-id"] = "someone-else"
    await client.create_pod(NS, manifest)
    await run(Pipeline([crunch], manager=manager))
    record = await crunch.done.info("a")
    assert record["error"]["type"] == "KubernetesConflictError"
    assert "name clash" in record["error"]["message"]
    assert not fake.calls_to("pod", "DELETE") and len(fake.pods) == 1


# -- KubeFunctionTask ----------------------------------------------------------------------------
FAST = K8sConfig(namespace=NS, sleep=0.01, job_ttl=60)


def function_pipeline(
    manager: TaskManager, body: Any, **options: Any
) -> tuple[MemoryRepository, StoreRepository, KubeFunctionTask, Pipeline]:
    src, raw = MemoryRepository("src"), StoreRepository(manager, "raw")
    out = StoreRepository(manager, "squares")

    @InProcessTask("fetch", done=MemoryRepository("fetch.done"))
    async def fetch(job: str, raw: Repository) -> None:
        await raw.dump(job, {"n": int(job)})

    fetch.link("src", src, is_input=True)
    fetch.link("raw", raw, is_output=True)
    square = KubeFunctionTask("square", func=body, done=MemoryRepository("square.done"),
                              k8s_config=FAST, **options)  # fmt: skip
    square.plug(fetch)
    square.link("out", out, is_output=True)
    return src, out, square, Pipeline([fetch, square], manager=manager)


async def test_function_runs_in_a_kubernetes_job(
    manager: TaskManager, fake: FakeKubernetes, start: Start
) -> None:
    seen: dict[str, Any] = {}

    async def body(job: str, fetch_raw: Repository, out: Repository) -> None:
        seen[job] = {"run_id": os.environ.get("TASKLOOM_RUN_ID"), "mode": os.environ.get("MODE")}
        n = (await fetch_raw.info(job))["n"]
        await out.dump(job, n * n)

    src, out, square, pipeline = function_pipeline(
        manager, body, env={"MODE": "pod"}, resources=Resources(cpu="1"), timeout=120
    )
    await start(kubelet, run_in_process(manager))
    for job in ("3", "4"):
        await src.write(job, b"")
    await run(pipeline)

    assert await out.info("3") == 9 and await out.info("4") == 16
    record = await square.done.info("3")
    name = job_name("pipeline.square", record["run_id"], 0)
    assert record["exit"] == "success"
    assert record["result"] == {"k8s_job": name, "namespace": NS}
    assert seen["3"] == {"run_id": record["run_id"], "mode": "pod"}  # it ran "in the pod"
    jobs = {j["metadata"]["name"]: j for j in fake.posted_jobs()}
    assert len(jobs) == 2 and name in jobs
    posted = jobs[name]
    assert posted["spec"]["activeDeadlineSeconds"] == 120
    [container] = posted["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["taskloom", "exec-run", record["run_id"]]
    assert container["resources"]["limits"] == {"cpu": "1"}
    assert {"name": "MODE", "value": "pod"} in container["env"]
    assert posted["metadata"]["labels"]["taskloom.io/task"] == "pipeline.square"
    validate(posted)
    # one run per job: the Job carried out the job's own run, no extra runs were recorded
    assert len(await manager.runs(task="pipeline.square")) == 2
    assert len(await manager.runs()) == 4


async def test_function_errors_and_killed_pods_fail_the_job(
    manager: TaskManager, fake: FakeKubernetes, start: Start
) -> None:
    async def body(job: str) -> None:
        raise ValueError(f"cannot square {job}")

    src, _, square, pipeline = function_pipeline(manager, body, retry=1)
    await start(kubelet, run_in_process(manager), run_in_process(manager),
                fail("OOMKilled", 137, "allocating\n"))  # fmt: skip
    await src.write("5", b"")
    await run(pipeline)
    record = await square.done.info("5")
    assert record["success"] is False and record["attempts"] == 2
    assert record["error"] == {"type": "ValueError", "message": "cannot square 5"}
    first, second = (j["metadata"]["name"] for j in fake.posted_jobs())
    assert [first, second] == [job_name("pipeline.square", record["run_id"], a) for a in (0, 1)]

    await src.write("6", b"")  # from the third Job on, pods are OOM-killed: no outcome stored
    await run(pipeline)
    record = await square.done.info("6")
    assert record["error"]["type"] == "OOMKilled"
    assert "allocating" in record["error"]["message"]


def test_function_links_must_reach_the_pod(manager: TaskManager) -> None:
    async def body(job: str, scratch: Repository) -> None: ...

    task = KubeFunctionTask("f", func=body, done=MemoryRepository(), ready=MemoryRepository())
    task.link("scratch", MemoryRepository(), is_output=True)
    assert any("cannot reach the pod" in p for p in task.problems())

    @KubeFunctionTask("g", done=MemoryRepository(), ready=MemoryRepository())
    async def fine(job: str) -> None: ...

    assert fine.problems() == [] and fine.func is not None


# -- pydatatask's KubeTask.handle_timeout and KubeFunctionTask with a pod template ---------------
async def test_handle_timeout_sees_the_pod_before_it_is_deleted(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    seen: list[tuple[str, bool]] = []

    class Scraping(KubeTask):
        async def handle_timeout(self, pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            seen.append((pod["status"]["phase"], (NS, name) in fake.pods))

    src = MemoryRepository("src")
    crunch = Scraping("crunch", {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
                      MemoryRepository("crunch.done"), namespace=NS, client=client,
                      poll_interval=0.01, timeout=0.2)  # fmt: skip
    crunch.link("src", src, is_input=True)
    await start(pod_kubelet, pod_runs())
    await src.write("a", b"")
    await run(Pipeline([crunch], manager=manager))
    assert seen == [("Running", True)]  # called once, while the pod still existed
    record = await crunch.done.info("a")
    assert (
        record["exit"] == "timeout" and "ran longer than its timeout" in record["error"]["message"]
    )
    assert not fake.pods
    assert crunch.run_timeout is None  # the kind times pods out on their running time


FUNCTION_POD = """
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: leader
      image: "docker.example.com/my/image"
      command: [python3, "{{argv0}}", launch, "{{task}}", "{{job}}", "--force", "--sync"]
      resources:
        requests:
          cpu: 500m
          memory: 256Mi
"""


async def test_function_task_with_a_pod_template_logs_and_two_done_records(
    manager: TaskManager, client: K8sClient, fake: FakeKubernetes, start: Start
) -> None:
    from taskloom.pipeline import ResourceManager

    src = StoreRepository(manager, "src")
    out = StoreRepository(manager, "out")
    logs, kube_done = MemoryRepository("logs"), MemoryRepository("kube_done")
    func_done = StoreRepository(manager, "func_done")
    quota = ResourceManager(Resources(cpu="1"))

    @KubeFunctionTask("square", client, quota, FUNCTION_POD, logs, kube_done, func_done,
                      namespace=NS, poll_interval=0.01)  # fmt: skip
    async def square(job: str, src: Repository, out: Repository) -> None:
        if job == "bad":
            raise ValueError("cannot square bad")
        await out.dump(job, int(job) ** 2)

    square.link("src", src, is_input=True)
    square.link("out", out, is_output=True)
    assert square.done is kube_done
    assert square.links["func_done"].flags == ["is_status", "inhibits_start", "required_for_output"]
    pipeline = Pipeline([square], manager=manager)
    assert quota in pipeline.quotas and quota.governs("square") and not quota.governs("other")
    await start(pod_kubelet, pod_launches(pipeline))
    for job in ("3", "4", "bad"):
        await src.write(job, b"")
    await run(pipeline)
    assert await out.info("3") == 9 and await out.info("4") == 16
    assert (await kube_done.info("3"))["exit"] == "success"
    assert (await func_done.info("3"))["success"] is True
    assert await logs.read("3") == b"launched 3\n"
    bad_pod, bad_func = await kube_done.info("bad"), await func_done.info("bad")
    assert bad_pod["exit"] == "failure" and "exit code 1" in bad_pod["error"]["message"]
    assert bad_func["success"] is False and bad_func["error"]["message"] == "cannot square bad"
    # the quota charged each job the container's requests: two 500m jobs fit in one cpu
    assert square.resources == Resources(cpu="500m", memory="256Mi")
    [first, *_] = fake.posted_pods()
    validate(first)
    assert first["metadata"]["namespace"] == NS


def test_function_task_template_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="pod template"):
        KubeFunctionTask("f", logs=MemoryRepository())
    with pytest.raises(ConfigError, match="kube_done is the done repository"):
        KubeFunctionTask("f", kube_done=MemoryRepository(), done=MemoryRepository())
