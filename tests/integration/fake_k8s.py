"""A strict fake Kubernetes API server on 127.0.0.1, and a kubelet the tests script.

It speaks the subset taskloom's client uses — read a Deployment; create, read and delete a
Job; create, read, list (by label selector) and delete pods; read a pod's log — over real
HTTP, so kubernetes_asyncio runs unpatched against it. The server lives in a thread; the
kubelet is a coroutine on the test's event loop that decides how each created Job ends
(`kubelet`), or how each pod created directly through the API ends (`pod_kubelet`).

Strict where a real API server is strict, so a test fails where a cluster would:
- every request body is validated against the official schema (kubernetes-validate, the
  version the manifests are checked against): an unknown field answers 400 (strict field
  validation), any other schema error 422 `Invalid`;
- every request is authorised against a Role (default: the one `taskloom k8s rbac` prints),
  answering 403 with the API server's message when a verb is missing;
- a name clash answers 409; a Job's pod is created as the Job controller does (generated
  name, `job-name`/`controller-uid` labels, an owner reference); Job and pod status move
  through the real transitions;
- deleting a Job honours `propagationPolicy` (Background/Foreground delete its pods; Orphan,
  and no policy at all, which is the batch/v1 default, leave them running);
- finished Jobs are deleted `ttlSecondsAfterFinished` after they end, on the fake's own clock
  (`advance()`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from taskloom import TaskManager
from taskloom.k8s.exec_run import exec_run
from taskloom.k8s.manifests import rbac_manifests

SCHEMA_VERSION = "1.30"  # the version tests/unit/test_k8s_manifests.py validates against

Body = dict[str, Any]
Key = tuple[str, str]

_ROUTES = [
    ("deployment", re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")),
    ("jobs", re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$")),
    ("job", re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)$")),
    ("pods", re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")),
    ("pod", re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")),
    ("log", re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")),
    ("secrets", re.compile(r"^/api/v1/namespaces/([^/]+)/secrets$")),
    ("secret", re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")),
]

# route -> (API group, resource) for authorisation
_RESOURCES = {
    "deployment": ("apps", "deployments"),
    "jobs": ("batch", "jobs"),
    "job": ("batch", "jobs"),
    "pods": ("", "pods"),
    "pod": ("", "pods"),
    "log": ("", "pods/log"),
    "secrets": ("", "secrets"),
    "secret": ("", "secrets"),
}
_COLLECTIONS = {"jobs", "pods"}
_KINDS = {"jobs": ("Job", "jobs.batch"), "pods": ("Pod", "pods"), "secrets": ("Secret", "secrets")}
_POLICIES = {"Orphan", "Background", "Foreground"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    route: str
    path: str
    query: dict[str, str]
    body: Body | None = None


def status(code: int, reason: str, message: str) -> Body:
    """A Kubernetes `Status` object, as the API returns for errors."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


@dataclass
class FakeKubernetes:
    """The cluster's state plus every call received; thread-safe (the server is threaded)."""

    deployments: dict[Key, Body] = field(default_factory=dict)
    jobs: dict[Key, Body] = field(default_factory=dict)
    pods: dict[Key, Body] = field(default_factory=dict)
    logs: dict[Key, str] = field(default_factory=dict)
    secrets: dict[Key, dict[str, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)  # routes that answer 403
    # the Role the worker's service account is bound to; None authorises everything
    role: Body | None = field(default_factory=lambda: rbac_manifests("default")[0])
    service_account: str = "taskloom-worker"
    now: float = 0.0  # the fake's clock (seconds), moved by advance()
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _created: asyncio.Queue[Body] | None = None
    _created_pods: asyncio.Queue[Body] | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _waiters: dict[tuple[str, str], list[asyncio.Event]] = field(default_factory=dict)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on a free loopback port; created Jobs are queued for `next_job()`, pods
        created through the API (not by a Job) for `next_pod()`."""
        self._loop = asyncio.get_running_loop()
        self._created = asyncio.Queue()
        self._created_pods = asyncio.Queue()
        fake = self

        class Handler(_Handler):
            cluster = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll keeps shutdown() quick; the server is otherwise idle.
        thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        return self.url

    def stop(self) -> None:
        """Shut the server down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The API's base URL."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what tests look at ---------------------------------------------------------------------
    def calls_to(self, route: str, method: str | None = None) -> list[Call]:
        """Received calls of one route (and method)."""
        with self._lock:
            return [c for c in self.calls if c.route == route and method in (None, c.method)]

    def posted_jobs(self) -> list[Body]:
        """Bodies of every Job creation request, in order."""
        return [c.body for c in self.calls_to("jobs", "POST") if c.body is not None]

    async def next_job(self, timeout: float = 10.0) -> Body:
        """The next Job created through the API."""
        assert self._created is not None
        return await asyncio.wait_for(self._created.get(), timeout)

    def next_call(self, route: str, method: str) -> asyncio.Event:
        """An event set when the fake next receives `method` on `route` (call it first)."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.setdefault((route, method), []).append(event)
        return event

    def posted_pods(self) -> list[Body]:
        """Bodies of every pod creation request, in order (409s included)."""
        return [c.body for c in self.calls_to("pods", "POST") if c.body is not None]

    async def next_pod(self, timeout: float = 10.0) -> Body:
        """The next pod created through the API (a copy, as stored)."""
        assert self._created_pods is not None
        return await asyncio.wait_for(self._created_pods.get(), timeout)

    # -- the kubelet's side ---------------------------------------------------------------------
    def pod_of(self, ns: str, job: str) -> Body:
        """The (single) pod of a Job."""
        with self._lock:
            return next(p for (n, _), p in self.pods.items()
                        if n == ns and p["metadata"]["labels"].get("job-name") == job)  # fmt: skip

    def set_waiting(self, ns: str, job: str, reason: str, message: str) -> None:
        """The Job's container cannot start (e.g. a missing Secret)."""
        pod = self.pod_of(ns, job)
        with self._lock:
            name = pod["spec"]["containers"][0]["name"]
            waiting = {"reason": reason, "message": message}
            pod["status"]["containerStatuses"] = [{"name": name, "state": {"waiting": waiting}}]

    def finish(
        self, ns: str, job: str, *, exit_code: int, reason: str | None = None, log: str = "",
        job_reason: str = "BackoffLimitExceeded",
    ) -> None:  # fmt: skip
        """End a Job's only pod with `exit_code` (0 = the Job succeeds)."""
        pod = self.pod_of(ns, job)
        ok = exit_code == 0
        with self._lock:
            self._terminate(pod, exit_code, reason, log)
            record = self.jobs.get((ns, job))
            if record is None:  # deleted meanwhile
                return
            start = record["status"].get("startTime")
            if ok:
                record["status"] = {
                    "succeeded": 1, "startTime": start,
                    "completionTime": "2030-01-01T00:00:10Z",
                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                   {"type": "Complete", "status": "True"}],
                }  # fmt: skip
            else:
                conditions = [
                    {"type": "FailureTarget", "status": "True", "reason": job_reason},
                    {"type": "Failed", "status": "True", "reason": job_reason},
                ]
                record["status"] = {"failed": 1, "startTime": start, "conditions": conditions}  # fmt: skip
            # when the TTL controller's clock starts (kept out of what clients read back)
            record["status"]["_endedAt"] = self.now

    def _terminate(self, pod: Body, exit_code: int, reason: str | None, log: str) -> None:
        """End the pod's first container (call with the lock held)."""
        ok = exit_code == 0
        name = pod["spec"]["containers"][0]["name"]
        terminated = {"exitCode": exit_code, "reason": reason or ("Completed" if ok else "Error"),
                      "finishedAt": "2030-01-01T00:00:09Z"}  # fmt: skip
        pod["status"].update(
            phase="Succeeded" if ok else "Failed",
            containerStatuses=[{"name": name, "state": {"terminated": terminated}}],
        )
        self.logs[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = log

    def start_pod(self, ns: str, name: str) -> None:
        """A bare pod's container is running; no-op if the pod is gone."""
        with self._lock:
            pod = self.pods.get((ns, name))
            if pod is None:
                return
            container = pod["spec"]["containers"][0]["name"]
            running = {"startedAt": "2030-01-01T00:00:02Z"}
            pod["status"].update(phase="Running", startTime="2030-01-01T00:00:02Z",
                                 containerStatuses=[{"name": container,
                                                     "state": {"running": running}}])  # fmt: skip
            self.logs.setdefault((ns, name), "")

    def end_pod(
        self, ns: str, name: str, *, exit_code: int, reason: str | None = None, log: str = "",
        pod_reason: str | None = None,
    ) -> None:  # fmt: skip
        """End a bare pod (Succeeded on exit 0, else Failed); `pod_reason` is the pod-level
        reason such as Evicted or DeadlineExceeded. No-op if the pod is gone."""
        with self._lock:
            pod = self.pods.get((ns, name))
            if pod is None:
                return
            self._terminate(pod, exit_code, reason, log)
            if pod_reason is not None:
                pod["status"]["reason"] = pod_reason

    # -- request handling (server thread) -------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], body: Body | None
    ) -> tuple[int, Any]:
        found = [(r, m) for r, p in _ROUTES if (m := p.match(path))]
        if not found:
            return 404, status(404, "NotFound", f"no route {path}")
        [(route, match)] = found
        with self._lock:
            self.calls.append(Call(method, route, path, query, body))
            for event in self._waiters.pop((route, method), []):
                assert self._loop is not None
                self._loop.call_soon_threadsafe(event.set)
            if route in self.forbidden:
                return 403, status(403, "Forbidden", f"{route} is forbidden")
            denied = self._authorise(method, route, match.group(1), query)
            if denied is not None:
                return denied
            if body is not None and method in ("POST", "PUT", "PATCH") and route in _KINDS:
                invalid = _validate(route, body)
                if invalid is not None:
                    return invalid
            handler = getattr(self, f"_{method.lower()}_{route}", None)
            if handler is None:
                return 405, status(405, "MethodNotAllowed", f"{method} {route}")
            result: tuple[int, Any] = handler(*match.groups(), query=query, body=body)
            return result

    # -- authorisation and the controllers -------------------------------------------------------
    def _authorise(
        self, method: str, route: str, ns: str, query: dict[str, str]
    ) -> tuple[int, Body] | None:
        """403 unless the Role grants the verb on the resource (call with the lock held)."""
        if self.role is None:
            return None
        group, resource = _RESOURCES[route]
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(
            method, "get"
        )
        if method == "GET" and route in _COLLECTIONS:
            verb = "watch" if query.get("watch") in ("true", "1") else "list"
        for rule in self.role.get("rules", []):
            if (
                group in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
            ):
                return None
        base, _, sub = resource.partition("/")
        what = f"{base}.{group}" if group else base
        if sub:
            what = f"{what}/{sub}" if not group else f"{base}.{group}/{sub}"
        user = f"system:serviceaccount:{ns}:{self.service_account}"
        message = (
            f'{what} is forbidden: User "{user}" cannot {verb} resource "{base}"'
            + (f' subresource "{sub}"' if sub else "")
            + f' in API group "{group}" in the namespace "{ns}"'
        )
        return 403, status(403, "Forbidden", message)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock; the TTL controller then deletes expired finished Jobs."""
        with self._lock:
            self.now += seconds
            for (ns, name), job in list(self.jobs.items()):
                ttl = job["spec"].get("ttlSecondsAfterFinished")
                ended = job["status"].get("_endedAt")
                if ttl is not None and ended is not None and self.now >= ended + ttl:
                    self._remove_job(ns, name, "Background")

    def _remove_job(self, ns: str, name: str, policy: str) -> None:
        """Delete a Job; its pods go too unless orphaned (call with the lock held)."""
        job = self.jobs.pop((ns, name))
        uid = job["metadata"]["uid"]
        for key, pod in list(self.pods.items()):
            if key[0] != ns or pod["metadata"]["labels"].get("controller-uid") != uid:
                continue
            if policy == "Orphan":
                pod["metadata"].pop("ownerReferences", None)
            else:
                del self.pods[key]

    def _post_secrets(self, ns: str, *, body: Body, **_: Any) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        if (ns, name) in self.secrets:
            return 409, status(409, "AlreadyExists", f'secrets "{name}" already exists')
        data = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
        self.secrets[(ns, name)] = {**data, **(body.get("stringData") or {})}
        return 201, {k: v for k, v in body.items() if k != "stringData"}

    def _delete_secret(self, ns: str, name: str, **_: Any) -> tuple[int, Any]:
        if self.secrets.pop((ns, name), None) is None:
            return 404, status(404, "NotFound", f'secrets "{name}" not found')
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def _get_deployment(self, ns: str, name: str, **_: Any) -> tuple[int, Any]:
        dep = self.deployments.get((ns, name))
        if dep is None:
            return 404, status(404, "NotFound", f'deployments.apps "{name}" not found')
        return 200, dep

    def _post_jobs(self, ns: str, *, body: Body, **_: Any) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        if (ns, name) in self.jobs:
            return 409, status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        uid = f"uid-{next(self._ids)}"
        job = json.loads(json.dumps(body))
        job["metadata"].update(uid=uid, namespace=ns, creationTimestamp="2030-01-01T00:00:00Z")
        job["status"] = {"active": 1, "startTime": "2030-01-01T00:00:00Z"}
        self.jobs[(ns, name)] = job
        template = job["spec"]["template"]
        pod_name = f"{name}-{uid[-5:].rjust(5, 'x')}"
        labels = {**template.get("metadata", {}).get("labels", {}), "job-name": name,
                  "batch.kubernetes.io/job-name": name, "controller-uid": uid,
                  "batch.kubernetes.io/controller-uid": uid}  # fmt: skip
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                 "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        self.pods[(ns, pod_name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "generateName": f"{name}-", "namespace": ns,
                         "labels": labels, "ownerReferences": [owner],
                         "creationTimestamp": "2030-01-01T00:00:01Z"},
            "spec": json.loads(json.dumps(template["spec"])),
            "status": {"phase": "Pending"},
        }  # fmt: skip
        assert self._loop is not None and self._created is not None
        self._loop.call_soon_threadsafe(self._created.put_nowait, json.loads(json.dumps(job)))
        return 201, job

    def _get_job(self, ns: str, name: str, **_: Any) -> tuple[int, Any]:
        job = self.jobs.get((ns, name))
        if job is None:
            return 404, status(404, "NotFound", f'jobs.batch "{name}" not found')
        shown = {k: v for k, v in job["status"].items() if not k.startswith("_")}
        return 200, {**job, "status": shown}

    def _delete_job(
        self, ns: str, name: str, *, query: dict[str, str], body: Body | None, **_: Any
    ) -> tuple[int, Any]:
        if (ns, name) not in self.jobs:
            return 404, status(404, "NotFound", f'jobs.batch "{name}" not found')
        policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
        if policy is not None and policy not in _POLICIES:
            return 400, status(400, "BadRequest", f"invalid propagationPolicy {policy!r}")
        # batch/v1 Jobs orphan their pods unless told otherwise (kubectl asks for Background)
        self._remove_job(ns, name, policy or "Orphan")
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def _post_pods(self, ns: str, *, body: Body, **_: Any) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        if (ns, name) in self.pods:
            return 409, status(409, "AlreadyExists", f'pods "{name}" already exists')
        pod = json.loads(json.dumps(body))
        pod["metadata"].update(namespace=ns, uid=f"uid-{next(self._ids)}",
                               creationTimestamp="2030-01-01T00:00:00Z")  # fmt: skip
        pod["status"] = {"phase": "Pending"}
        self.pods[(ns, name)] = pod
        if self._loop is not None and self._created_pods is not None:
            copied = json.loads(json.dumps(pod))
            self._loop.call_soon_threadsafe(self._created_pods.put_nowait, copied)
        return 201, pod

    def _get_pods(self, ns: str, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        wanted = dict(
            part.split("=", 1) for part in query.get("labelSelector", "").split(",") if part
        )
        items = [
            p
            for (n, _), p in self.pods.items()
            if n == ns
            and all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}  # fmt: skip

    def _get_pod(self, ns: str, name: str, **_: Any) -> tuple[int, Any]:
        pod = self.pods.get((ns, name))
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        return 200, pod

    def _delete_pod(self, ns: str, name: str, **_: Any) -> tuple[int, Any]:
        pod = self.pods.pop((ns, name), None)
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        return 200, pod

    def _get_log(self, ns: str, name: str, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        if (ns, name) not in self.pods:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        text = self.logs.get((ns, name))
        if text is None:
            msg = (
                f'container "{query.get("container", "main")}" in pod "{name}" is waiting to start'
            )
            return 400, status(400, "BadRequest", msg)
        lines = text.splitlines()
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :]
        return 200, "".join(line + "\n" for line in lines)


def _validate(route: str, body: Body) -> tuple[int, Body] | None:
    """The API server's answer to a body that breaks the schema, or None if it is valid."""
    import kubernetes_validate

    kind, plural = _KINDS[route]
    name = body.get("metadata", {}).get("name", "")
    if body.get("kind") != kind:
        return 400, status(400, "BadRequest", f"the body is a {body.get('kind')!r}, not a {kind}")
    try:
        kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "<root>"
        unknown = re.search(r"\('(.+)' was unexpected\)", exc.message)
        if exc.validator == "additionalProperties" and unknown:
            return 400, status(
                400, "BadRequest", f'strict decoding error: unknown field "{where}.{unknown[1]}"'
            )
        return 422, status(422, "Invalid", f'{plural} "{name}" is invalid: {where}: {exc.message}')
    return None


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeKubernetes

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw.strip() else None
        try:
            code, payload = self.cluster.handle(self.command, parts.path, query, body)
        except Exception as exc:  # a bug in the fake shows up as a 500, not a hang
            code, payload = 500, status(500, "InternalError", repr(exc))
        text = payload if isinstance(payload, str) else json.dumps(payload)
        data = text.encode()
        self.send_response(code)
        ctype = "text/plain" if isinstance(payload, str) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


# -- the kubelet: how each Job ends --------------------------------------------------------------
Behaviour = Callable[[FakeKubernetes, Body], Awaitable[None]]


def _container_env(fake: FakeKubernetes, ns: str, job: Body) -> tuple[dict[str, str], str | None]:
    """The env a real kubelet would give the container; the error if a Secret is missing."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            continue
        secret = fake.secrets.get((ns, ref["name"]))
        if secret is None or ref["key"] not in secret:
            return env, f'secret "{ref["name"]}" not found'
        env[entry["name"]] = secret[ref["key"]]
    return env, None


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_in_process(manager: TaskManager) -> Behaviour:
    """The pod runs `taskloom exec-run <run id>` here: exec_run with the Job's env."""

    async def behave(fake: FakeKubernetes, job: Body) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        env, missing = _container_env(fake, ns, job)
        if missing is not None:  # a real pod would wait forever
            fake.set_waiting(ns, name, "CreateContainerConfigError", missing)
            return
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[command.index("exec-run") + 1] == env["TASKLOOM_RUN_ID"]
        err = io.StringIO()
        with _environ(env), contextlib.redirect_stderr(err):
            code = await exec_run(manager, env["TASKLOOM_RUN_ID"])
        fake.finish(ns, name, exit_code=code, log=err.getvalue())

    return behave


def fail(
    reason: str = "OOMKilled",
    exit_code: int = 137,
    log: str = "",
    job_reason: str = "BackoffLimitExceeded",
) -> Behaviour:
    """The pod dies without writing an outcome."""

    async def behave(fake: FakeKubernetes, job: Body) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        fake.finish(ns, name, exit_code=exit_code, reason=reason, log=log, job_reason=job_reason)

    return behave


def hang(running: asyncio.Event | None = None) -> Behaviour:
    """The pod runs forever (until the Job is deleted); `running` is set once it does."""

    async def behave(fake: FakeKubernetes, job: Body) -> None:
        pod = fake.pod_of(job["metadata"]["namespace"], job["metadata"]["name"])
        with fake._lock:
            pod["status"]["phase"] = "Running"
        if running is not None:
            running.set()

    return behave


async def kubelet(fake: FakeKubernetes, behaviours: list[Behaviour]) -> None:
    """Apply one behaviour per created Job, in order; the last one repeats."""
    for i in itertools.count():
        job = await fake.next_job(timeout=3600)
        await behaviours[min(i, len(behaviours) - 1)](fake, job)


# -- the kubelet of bare pods (pipeline KubeTask) ------------------------------------------------
def pod_exits(
    exit_code: int = 0, *, reason: str | None = None, log: str = "", pod_reason: str | None = None
) -> Behaviour:
    """The pod runs, prints `log` and ends with `exit_code`."""

    async def behave(fake: FakeKubernetes, pod: Body) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        fake.start_pod(ns, name)
        fake.end_pod(ns, name, exit_code=exit_code, reason=reason, log=log, pod_reason=pod_reason)

    return behave


def pod_runs(running: asyncio.Event | None = None, log: str = "") -> Behaviour:
    """The pod runs forever (until deleted), having printed `log`; `running` is set then."""

    async def behave(fake: FakeKubernetes, pod: Body) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        fake.start_pod(ns, name)
        with fake._lock:
            fake.logs[(ns, name)] = log
        if running is not None:
            running.set()

    return behave


async def pod_kubelet(fake: FakeKubernetes, behaviours: list[Behaviour]) -> None:
    """Apply one behaviour per pod created through the API, in order; the last one repeats."""
    for i in itertools.count():
        pod = await fake.next_pod(timeout=3600)
        await behaviours[min(i, len(behaviours) - 1)](fake, pod)


def pod_launches(pipeline: Any) -> Behaviour:
    """The pod runs its command, taskloom's launcher (a `KubeFunctionTask` with a template),
    in this process on `pipeline`; it logs `launched <job>` and ends with the launcher's code."""
    from taskloom.pipeline.kube import LAUNCHER
    from taskloom.pipeline.launch import launch_job

    async def behave(fake: FakeKubernetes, pod: Body) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        command = pod["spec"]["containers"][0]["command"]
        assert command[:3] == ["python3", str(LAUNCHER), "launch"]
        assert command[5:] == ["--force", "--sync"]
        fake.start_pod(ns, name)
        code = await launch_job([pipeline], command[3], command[4])
        fake.end_pod(ns, name, exit_code=code, log=f"launched {command[4]}\n")

    return behave
