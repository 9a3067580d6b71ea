"""Print what a cluster needs to run taskloom, and the Job one cpu_bound run would get.

Nothing here talks to a cluster: the manifests are plain dicts, printed as YAML. Apply the
first part with `kubectl apply -f -`; the Job is what the worker creates by itself.

    python examples/k8s_manifests.py [namespace] [image]
"""

from __future__ import annotations

import sys

from taskloom import K8sConfig, Resources, Secret, TaskRun, task
from taskloom.k8s import job_manifest, job_name, rbac_manifests, worker_manifests
from taskloom.k8s.cli import dump_documents


@task(
    cpu_bound=True,
    resources=Resources(cpu="2", memory="4Gi"),
    env={"OMP_NUM_THREADS": "2"},
    secrets=[Secret("api-token", group="acme-credentials")],
    timeout_seconds=600,
    retry=2,
    k8s_config=K8sConfig(job_ttl=900),
)
def render_report(ctx: TaskRun, month: str) -> str:
    """A heavy task: inside a cluster each attempt runs as its own Job."""
    return f"report for {month} ({len(ctx.secrets['api-token'])}-char token)"


def main(namespace: str = "workers", image: str = "ghcr.io/acme/reports:1.4") -> str:
    """The cluster manifests, then the Job of a sample run's second attempt, as YAML."""
    cluster = rbac_manifests(namespace) + worker_manifests(namespace, image, "reports:manager")
    worker = cluster[3]  # the Deployment the executor copies its container from
    run = TaskRun(task=render_report.name, params={"month": "2030-01"}, retry_attempt=1)
    job = job_manifest(
        render_report, run, worker, attempt=1,
        config=K8sConfig(namespace=namespace, job_ttl=900),
    )  # fmt: skip
    header = (
        f"# cluster: {len(cluster)} manifests; then the Job "
        f"{job_name(render_report.name, run.id, 1)} for run {run.id}\n"
    )
    return header + dump_documents([*cluster, job])


if __name__ == "__main__":
    print(main(*sys.argv[1:3]), end="")
