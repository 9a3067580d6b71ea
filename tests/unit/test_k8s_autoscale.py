"""`taskloom k8s manifests --autoscale`: an HPA on queue depth, valid against the schema."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from taskloom.k8s.autoscale import DEPTH_METRIC, METRICS_PORT, autoscaler_manifest
from taskloom.k8s.cli import app as k8s_app

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]


def validate(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_hpa_scales_the_worker_deployment_on_each_queue_depth() -> None:
    hpa = autoscaler_manifest("work", queues=("default", "reports"), runs_per_worker=50)
    validate(hpa)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "taskloom-worker"}  # fmt: skip
    assert [m["external"]["metric"] for m in spec["metrics"]] == [
        {"name": DEPTH_METRIC, "selector": {"matchLabels": {"queue": "default"}}},
        {"name": DEPTH_METRIC, "selector": {"matchLabels": {"queue": "reports"}}},
    ]
    assert {m["external"]["target"]["averageValue"] for m in spec["metrics"]} == {"50"}


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"min_replicas": 0}, "min_replicas"), ({"max_replicas": 0}, "max_replicas"),
     ({"runs_per_worker": 0}, "runs_per_worker")],
)  # fmt: skip
def test_bad_bounds_are_refused(changes: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        autoscaler_manifest(**changes)  # type: ignore[arg-type]


def test_cli_autoscale_adds_a_valid_hpa_and_exposes_worker_metrics() -> None:
    out = CliRunner().invoke(
        k8s_app,
        ["manifests", "-n", "w", "--image", "img:1", "--app", "app:manager", "--autoscale",
         "--queue", "default", "--queue", "etl", "--max-replicas", "6"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    docs = list(yaml.safe_load_all(out.output))
    for doc in docs:
        validate(doc)
    [hpa] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] == 6 and len(hpa["spec"]["metrics"]) == 2
    worker = next(d for d in docs if d["metadata"]["name"] == "taskloom-worker"
                  and d["kind"] == "Deployment")  # fmt: skip
    pod = worker["spec"]["template"]
    [main] = pod["spec"]["containers"]
    assert main["command"][-4:] == [
        "--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0",
    ]  # fmt: skip
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in main["ports"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    scheduler = next(d for d in docs if d["metadata"]["name"] == "taskloom-scheduler")
    assert "--metrics-port" not in scheduler["spec"]["template"]["spec"]["containers"][0]["command"]


def test_cli_without_autoscale_has_no_hpa() -> None:
    out = CliRunner().invoke(k8s_app, ["manifests", "--image", "i", "--app", "a:m"])
    assert out.exit_code == 0
    assert "HorizontalPodAutoscaler" not in out.output
    assert "--metrics-port" not in out.output


def test_cli_refuses_bad_bounds_with_exit_2() -> None:
    out = CliRunner().invoke(
        k8s_app, ["manifests", "--image", "i", "--app", "a:m", "--autoscale", "--max-replicas", "0"]
    )
    assert out.exit_code == 2
