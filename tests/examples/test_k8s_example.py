"""The Kubernetes example runs as a script and prints manifests that pass the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "k8s_manifests.py"


def test_example_prints_valid_manifests() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "reports", "img:2"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    docs = list(yaml.safe_load_all(out.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Role", "ServiceAccount", "RoleBinding", "Deployment", "Deployment", "Job"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
        assert doc["metadata"]["namespace"] == "reports"
    job = docs[-1]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "img:2"
    assert container["command"][:2] == ["taskloom", "exec-run"]
    assert job["metadata"]["name"].startswith("render-report-") and job["metadata"][
        "name"
    ].endswith("-1")
