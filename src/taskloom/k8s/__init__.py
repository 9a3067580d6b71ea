"""Kubernetes support: Job and cluster manifests (pure dicts) and a thin API client.

`manifests` builds what a cluster needs; `client` (needs the `k8s` extra) makes the API calls;
`exec_run` is what a Job's pod runs. Importing this package needs no extra.
"""

from .manifests import job_manifest, job_name, rbac_manifests, worker_manifests

__all__ = ["job_manifest", "job_name", "rbac_manifests", "worker_manifests"]
