"""A HorizontalPodAutoscaler that sizes the worker Deployment by queue depth.

Workers export `taskloom_queue_depth{queue, priority}` (and `taskloom_queue_lag_seconds`)
on their metrics port. Kubernetes cannot read Prometheus by itself: an external-metrics
adapter (prometheus-adapter, KEDA's metrics server, or a cloud's) must serve the metric under
`external.metrics.k8s.io`; docs/kubernetes.md gives the adapter rule this manifest expects.
"""

from __future__ import annotations

from typing import Any

from .manifests import DEPLOYMENT, MANAGED_BY

Manifest = dict[str, Any]

DEPTH_METRIC = "taskloom_queue_depth"
METRICS_PORT = 9464  # the OpenTelemetry/Prometheus exporter convention, free in most pods


def autoscaler_manifest(
    namespace: str = "default",
    *,
    deployment: str = DEPLOYMENT,
    queues: tuple[str, ...] = ("default",),
    runs_per_worker: int = 20,
    min_replicas: int = 1,
    max_replicas: int = 10,
    scale_down_window: int = 300,
) -> Manifest:
    """An autoscaling/v2 HPA: one worker per `runs_per_worker` queued runs in each queue.

    Each queue is its own external metric (the HPA scales to the largest demand among them).
    Scale-down waits `scale_down_window` seconds of lower demand, so a burst that the workers
    just drained does not stop them mid-run; draining workers requeue what they hold anyway.
    """
    if min_replicas < 1 or max_replicas < min_replicas:
        raise ValueError(
            f"need 1 <= min_replicas <= max_replicas, got {min_replicas}..{max_replicas}"
        )
    if runs_per_worker < 1:
        raise ValueError(f"runs_per_worker must be >= 1, got {runs_per_worker}")
    metrics = [
        {
            "type": "External",
            "external": {
                "metric": {"name": DEPTH_METRIC, "selector": {"matchLabels": {"queue": queue}}},
                "target": {"type": "AverageValue", "averageValue": str(runs_per_worker)},
            },
        }
        for queue in queues
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": deployment, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scale_down_window,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }


def expose_metrics(worker: Manifest, port: int = METRICS_PORT) -> Manifest:
    """The worker Deployment with its Prometheus endpoint served and announced for scraping.

    Adds `--metrics-port` and `--metrics-host 0.0.0.0` (the endpoint binds loopback unless
    told otherwise) to the worker's command, a named container port, and the
    conventional `prometheus.io/*` pod annotations (honoured by the common scrape configs).
    """
    pod = worker["spec"]["template"]
    [container] = [c for c in pod["spec"]["containers"] if "worker" in c.get("command", [])]
    container["command"] = [
        *container["command"], "--metrics-port", str(port), "--metrics-host", "0.0.0.0",
    ]  # fmt: skip
    container["ports"] = [
        *container.get("ports", []),
        {"name": "metrics", "containerPort": port, "protocol": "TCP"},
    ]
    pod.setdefault("metadata", {}).setdefault("annotations", {}).update(
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}
    )
    return worker
