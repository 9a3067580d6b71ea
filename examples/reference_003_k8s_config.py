"""Reference 003 (aio-fluid, Kubernetes Jobs): "Configuration" with `K8sConfig`, as written.

Only the import line differs.
"""

from taskloom import K8sConfig, TaskRun, task


@task(
    cpu_bound=True,
    k8s_config=K8sConfig(
        namespace="workers",  # namespace where the Job is created
        deployment="fluid-task",  # deployment to copy the container spec from
        container="main",  # container name inside the deployment
        job_ttl=600,  # seconds to keep the Job after completion
        sleep=2.0,  # polling interval while waiting for the Job
    ),
)
async def heavy_calculation(ctx: TaskRun) -> None: ...
