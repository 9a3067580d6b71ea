"""taskloom: one @task that runs inline, in a thread, a subprocess, a Kubernetes Job or on Ray;
queued durably, scheduled, retried, rate-limited, cached and composed."""

from .consumer import TaskConsumer
from .errors import (
    CancelledRunError,
    ConfigError,
    CorruptRecordError,
    DagCycleError,
    InvalidParamsError,
    LeaseLostError,
    NonRetryableError,
    PayloadTooLargeError,
    RateLimitError,
    ReplayMismatchError,
    ResultEncodingError,
    Retry,
    RunNotFoundError,
    ScheduleError,
    ScheduleNotFoundError,
    SecretKeyError,
    StoreUnavailableError,
    TaskFailedError,
    TaskloomError,
    TaskTimeoutError,
    UnknownTaskError,
)
from .hooks import RunHooks
from .manager import TaskManager
from .policies import (
    Cache,
    K8sConfig,
    K8sInterruptible,
    K8sResourceRequirements,
    Resources,
    RetryPolicy,
    Secret,
    Trigger,
)
from .ratelimit import RateLimit
from .run import TaskPriority, TaskRun, TaskState, current_run, is_in_cpu_process
from .scheduler import TaskScheduler
from .schedules import CronTab, Every, Schedule, crontab, every
from .store.base import RunCount
from .task import Task, TaskEnvironment, TaskInfo, task
from .template import Documentation, ReusePolicy, SerializationSettings

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CancelledRunError",
    "ConfigError",
    "CorruptRecordError",
    "CronTab",
    "DagCycleError",
    "Documentation",
    "Every",
    "InvalidParamsError",
    "K8sConfig",
    "K8sInterruptible",
    "K8sResourceRequirements",
    "LeaseLostError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "RateLimit",
    "RateLimitError",
    "ReplayMismatchError",
    "Resources",
    "ResultEncodingError",
    "Retry",
    "RetryPolicy",
    "ReusePolicy",
    "RunCount",
    "RunHooks",
    "RunNotFoundError",
    "Schedule",
    "ScheduleError",
    "ScheduleNotFoundError",
    "Secret",
    "SecretKeyError",
    "SerializationSettings",
    "StoreUnavailableError",
    "Task",
    "TaskConsumer",
    "TaskEnvironment",
    "TaskFailedError",
    "TaskInfo",
    "TaskManager",
    "TaskPriority",
    "TaskRun",
    "TaskScheduler",
    "TaskState",
    "TaskTimeoutError",
    "TaskloomError",
    "Trigger",
    "UnknownTaskError",
    "__version__",
    "crontab",
    "current_run",
    "every",
    "is_in_cpu_process",
    "task",
]
