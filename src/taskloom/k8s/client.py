"""A thin async client over kubernetes_asyncio: the few calls taskloom makes, as plain dicts.

Every call returns the API's JSON (wire form, camelCase) and every Kubernetes or transport
error is translated here into a taskloom error, so no code above this module catches a
kubernetes_asyncio or aiohttp exception:

- 401/403 → `ConfigError` (the pod's ServiceAccount lacks a permission; see `taskloom k8s rbac`)
- 404 → `KubernetesNotFoundError`, 409 → `KubernetesConflictError`
- any other status, or no answer at all → `KubernetesApiError`
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import ConfigError, TaskloomError, missing_extra

Body = dict[str, Any]


class KubernetesApiError(TaskloomError):
    """The Kubernetes API answered with an error, or could not be reached (`status` None)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubernetesNotFoundError(KubernetesApiError, LookupError):
    """The object does not exist (HTTP 404)."""


class KubernetesConflictError(KubernetesApiError):
    """The object already exists or changed meanwhile (HTTP 409)."""


def _details(body: bytes | str | None) -> tuple[str, str]:
    """(message, reason) from a Kubernetes `Status` body, tolerating any other body."""
    if not body:
        return "", ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(text)
    except ValueError:
        return text.strip()[:500], ""
    if not isinstance(status, dict):
        return text.strip()[:500], ""
    return str(status.get("message", "")), str(status.get("reason", ""))


def api_error(
    status: int | None, http_reason: str, body: bytes | str | None, what: str
) -> Exception:
    """The taskloom error for a failed call `what` (e.g. "create job ns/x")."""
    message, reason = _details(body)
    reason = reason or http_reason or ""
    text = f"Kubernetes API: {what} failed ({status} {reason}): {message or http_reason}"
    if status in (401, 403):
        return ConfigError(
            f"{text}. The pod's ServiceAccount needs the Role printed by "
            "`taskloom k8s rbac --namespace <namespace>`"
        )
    if status == 404:
        return KubernetesNotFoundError(text, status=status, reason=reason)
    if status == 409:
        return KubernetesConflictError(text, status=status, reason=reason)
    return KubernetesApiError(text, status=status or None, reason=reason)


def _modules() -> Any:
    try:
        import kubernetes_asyncio
        import kubernetes_asyncio.client
        import kubernetes_asyncio.config
    except ImportError:
        raise missing_extra("k8s", "kubernetes_asyncio") from None
    return kubernetes_asyncio


class K8sClient:
    """The Kubernetes calls taskloom makes: deployments, jobs, pods and pod logs.

    With neither `host` nor `configuration` it uses the pod's in-cluster ServiceAccount;
    `host` (e.g. `http://127.0.0.1:8001`, a `kubectl proxy`) or a ready kubernetes_asyncio
    `Configuration` point it elsewhere. Connects on first use; `close()` releases the session.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        configuration: Any = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.request_timeout = request_timeout
        self._configuration = configuration
        self._api: Any = None

    # -- plumbing -----------------------------------------------------------------------------
    def _api_client(self) -> Any:
        if self._api is None:
            k8s = _modules()
            cfg = self._configuration
            if cfg is None:
                cfg = k8s.client.Configuration()
                if self.host:
                    cfg.host = self.host
                else:
                    try:
                        k8s.config.load_incluster_config(client_configuration=cfg)
                    except k8s.config.ConfigException as exc:
                        raise ConfigError(
                            f"not inside a Kubernetes pod ({exc}); pass K8sClient(host=...)"
                        ) from exc
            self._configuration = cfg
            self._api = k8s.client.ApiClient(cfg)
        return self._api

    async def _call(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> bytes:
        """Run one generated API call without model decoding; return the raw body."""
        api = self._api_client()  # first: raises the install hint if the extra is missing
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            resp = await call(api)
            try:
                body: bytes = await resp.read()
            finally:
                resp.release()
        except ApiException as exc:
            raise api_error(exc.status, str(exc.reason or ""), exc.body, what) from exc
        except aiohttp.ClientError as exc:
            host = getattr(self._configuration, "host", "?")
            raise KubernetesApiError(
                f"Kubernetes API at {host} unreachable: {what}: {exc}"
            ) from exc
        if not 200 <= resp.status < 300:
            raise api_error(resp.status, str(resp.reason or ""), body, what)
        return body

    async def _json(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> Body:
        body = await self._call(what, call)
        data = json.loads(body) if body else {}
        return data if isinstance(data, dict) else {"items": data}

    def _opts(self) -> dict[str, Any]:
        # Raw responses keep the wire form, and log text is never mistaken for JSON.
        return {"_preload_content": False, "_request_timeout": self.request_timeout}

    def _apps(self, api: Any) -> Any:
        return _modules().client.AppsV1Api(api)

    def _batch(self, api: Any) -> Any:
        return _modules().client.BatchV1Api(api)

    def _core(self, api: Any) -> Any:
        return _modules().client.CoreV1Api(api)

    async def close(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def __aenter__(self) -> K8sClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- deployments --------------------------------------------------------------------------
    async def read_deployment(self, namespace: str, name: str) -> Body:
        """A Deployment; `ConfigError` when it does not exist (the executor copies it)."""
        try:
            return await self._json(
                f"read deployment {namespace}/{name}",
                lambda api: self._apps(api).read_namespaced_deployment(
                    name, namespace, **self._opts()
                ),
            )
        except KubernetesNotFoundError as exc:
            raise ConfigError(
                f"deployment {name!r} not found in namespace {namespace!r}; set "
                "K8sConfig(deployment=..., namespace=...) or TASKLOOM_K8S_DEPLOYMENT/NAMESPACE"
            ) from exc

    # -- jobs ---------------------------------------------------------------------------------
    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> Body:
        """Create a Job; `KubernetesConflictError` if one of that name exists."""
        name = body.get("metadata", {}).get("name", "?")
        return await self._json(
            f"create job {namespace}/{name}",
            lambda api: self._batch(api).create_namespaced_job(
                namespace, dict(body), **self._opts()
            ),
        )

    async def get_job(self, namespace: str, name: str) -> Body:
        """A Job with its status; `KubernetesNotFoundError` if it is gone."""
        return await self._json(
            f"read job {namespace}/{name}",
            lambda api: self._batch(api).read_namespaced_job(name, namespace, **self._opts()),
        )

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False if it was already gone."""
        return await self._delete(
            f"delete job {namespace}/{name}",
            lambda api: self._batch(api).delete_namespaced_job(
                name, namespace, propagation_policy="Background", **self._opts()
            ),
        )

    async def _delete(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> bool:
        """Make a delete call; False if the object was already gone."""
        try:
            await self._call(what, call)
        except KubernetesNotFoundError:
            return False
        return True

    # -- secrets ------------------------------------------------------------------------------
    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> Body:
        """Create a Secret; `KubernetesConflictError` if one of that name exists."""
        name = body.get("metadata", {}).get("name", "?")
        return await self._json(
            f"create secret {namespace}/{name}",
            lambda api: self._core(api).create_namespaced_secret(
                namespace, dict(body), **self._opts()
            ),
        )

    async def delete_secret(self, namespace: str, name: str) -> bool:
        """Delete a Secret; False if it was already gone."""
        return await self._delete(
            f"delete secret {namespace}/{name}",
            lambda api: self._core(api).delete_namespaced_secret(name, namespace, **self._opts()),
        )

    # -- pods ---------------------------------------------------------------------------------
    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Body:
        """Create a bare pod; `KubernetesConflictError` if one of that name exists."""
        name = body.get("metadata", {}).get("name", "?")
        return await self._json(
            f"create pod {namespace}/{name}",
            lambda api: self._core(api).create_namespaced_pod(
                namespace, dict(body), **self._opts()
            ),
        )

    async def get_pod(self, namespace: str, name: str) -> Body:
        """A pod with its status; `KubernetesNotFoundError` if it is gone."""
        return await self._json(
            f"read pod {namespace}/{name}",
            lambda api: self._core(api).read_namespaced_pod(name, namespace, **self._opts()),
        )

    async def delete_pod(
        self, namespace: str, name: str, *, grace_seconds: int | None = None
    ) -> bool:
        """Delete a pod; False if it was already gone."""
        extra = {} if grace_seconds is None else {"grace_period_seconds": grace_seconds}
        try:
            await self._call(
                f"delete pod {namespace}/{name}",
                lambda api: self._core(api).delete_namespaced_pod(
                    name, namespace, **extra, **self._opts()
                ),
            )
        except KubernetesNotFoundError:
            return False
        return True

    async def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        """Pods matching a label selector such as `job-name=x` or `a=b,c=d`."""
        data = await self._json(
            f"list pods {namespace} ({label_selector})",
            lambda api: self._core(api).list_namespaced_pod(
                namespace, label_selector=label_selector, **self._opts()
            ),
        )
        return list(data.get("items") or [])

    async def pods_of_job(self, namespace: str, job: str) -> list[Body]:
        """The pods a Job created, oldest first."""
        pods = await self.list_pods(namespace, f"job-name={job}")
        return sorted(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")))

    async def read_pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        tail_lines: int | None = None,
    ) -> str:
        """A pod's log text (the last `tail_lines` lines if given)."""
        extra: dict[str, Any] = {}
        if container is not None:
            extra["container"] = container
        if tail_lines is not None:
            extra["tail_lines"] = tail_lines
        body = await self._call(
            f"read log of pod {namespace}/{name}",
            lambda api: self._core(api).read_namespaced_pod_log(
                name, namespace, **extra, **self._opts()
            ),
        )
        return body.decode("utf-8", "replace")
