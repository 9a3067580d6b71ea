"""`taskloom k8s ...`: print the manifests a cluster needs, and the worker's liveness probe.

Output is YAML (PyYAML, which the `k8s` extra brings along); without PyYAML the documents
are printed as JSON, which is valid YAML too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from .manifests import (
    DEFAULT_GRACE_SECONDS,
    DEPLOYMENT,
    SERVICE_ACCOUNT,
    STORE_SECRET,
    rbac_manifests,
    worker_manifests,
)

app = typer.Typer(
    name="k8s", help="Kubernetes: print RBAC and worker manifests.", no_args_is_help=True
)

NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="namespace of the workers")]


def dump_documents(docs: Sequence[dict[str, Any]]) -> str:
    """A multi-document YAML stream (JSON documents when PyYAML is missing)."""
    try:
        yaml = importlib.import_module("yaml")  # optional: no stubs needed for one call
    except ImportError:
        return "".join("---\n" + json.dumps(d, indent=2) + "\n" for d in docs)
    # A JSON round trip unshares nested objects, so PyYAML prints no &anchors/*aliases.
    plain = json.loads(json.dumps(list(docs)))
    return str(yaml.safe_dump_all(plain, sort_keys=False, explicit_start=True))


@app.command()
def rbac(
    namespace: NamespaceOpt = "default",
    service_account: Annotated[str, typer.Option(help="ServiceAccount to create")] = (
        SERVICE_ACCOUNT
    ),
    pod_tasks: Annotated[bool, typer.Option(help="also allow creating/deleting pods")] = False,
) -> None:
    """Print the Role, ServiceAccount and RoleBinding that workers need."""
    docs = rbac_manifests(namespace, service_account=service_account, pod_tasks=pod_tasks)
    typer.echo(dump_documents(docs), nl=False)


@app.command()
def manifests(
    image: Annotated[str, typer.Option(help="image holding your app and taskloom")],
    app_spec: Annotated[str, typer.Option("--app", "-a", help="module:manager of your app")],
    namespace: NamespaceOpt = "default",
    replicas: Annotated[int, typer.Option(help="worker replicas")] = 1,
    grace: Annotated[float, typer.Option(help="worker drain grace seconds")] = (
        DEFAULT_GRACE_SECONDS
    ),
    store_secret: Annotated[str, typer.Option(help="secret whose key `url` is the store URL")] = (
        STORE_SECRET
    ),
    scheduler: Annotated[bool, typer.Option(help="include the scheduler Deployment")] = True,
    autoscale: Annotated[
        bool, typer.Option(help="add an HPA on queue depth (needs an external-metrics adapter)")
    ] = False,
    queue: Annotated[
        list[str] | None, typer.Option(help="queue the HPA watches (repeat; default: default)")
    ] = None,
    runs_per_worker: Annotated[int, typer.Option(help="queued runs per worker replica")] = 20,
    max_replicas: Annotated[int, typer.Option(help="HPA upper bound")] = 10,
) -> None:
    """Print RBAC plus the worker (and scheduler) Deployments (and an HPA with --autoscale)."""
    docs = rbac_manifests(namespace) + worker_manifests(
        namespace, image, app_spec, replicas=replicas, grace_seconds=grace,
        store_secret=store_secret, scheduler=scheduler,
    )  # fmt: skip
    if autoscale:
        from .autoscale import autoscaler_manifest, expose_metrics

        try:
            hpa = autoscaler_manifest(
                namespace, queues=tuple(queue or ("default",)), runs_per_worker=runs_per_worker,
                min_replicas=min(replicas, max_replicas), max_replicas=max_replicas,
            )  # fmt: skip
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        for doc in docs:
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == DEPLOYMENT:
                expose_metrics(doc)
        docs.append(hpa)
    typer.echo(dump_documents(docs), nl=False)


async def worker_alive(app_spec: str | None, host: str) -> bool:
    """True if a worker on `host` (worker ids start with the host name) beat lately."""
    from ..appload import load_manager

    manager = load_manager(app_spec)
    async with manager:
        workers = await manager.workers()
    return any(w.worker.startswith(f"{host}-") for w in workers)


@app.command()
def probe(
    app_spec: Annotated[
        str | None, typer.Option("--app", "-a", help="module:manager (or TASKLOOM_APP)")
    ] = None,
) -> None:
    """Liveness probe: exit 1 unless a worker in this pod heartbeat into the store lately."""
    host = socket.gethostname()
    if not asyncio.run(worker_alive(app_spec, host)):
        typer.echo(f"no live worker heartbeat from {host}", err=True)
        raise typer.Exit(1)
    typer.echo(f"worker on {host} alive")
