"""Reference 003 (aio-fluid, Kubernetes Jobs): "Defining a CPU bound task", as written.

Only the import line differs. Inside a cluster (KUBERNETES_SERVICE_HOST set, `k8s` extra
installed) it runs as a Job; elsewhere in a process-pool child.
"""

from taskloom import TaskRun, task


@task(cpu_bound=True)
async def heavy_calculation(ctx: TaskRun) -> None:
    # heavy CPU work here — runs in a k8s Job when inside a cluster
    ...
