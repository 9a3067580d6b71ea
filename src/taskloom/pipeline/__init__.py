"""Data pipelines (pydatatask's model) on taskloom's durable runs.

Tasks are linked to repositories (keyed data); a job is ready when the keys it requires are
present and nothing inhibits it; the `Pipeline` loop launches each ready job exactly once as
a taskloom run. See docs/pipelines.md.
"""

from .kinds import ExecutorTask, InProcessTask, PipelineTask
from .kube import KubeFunctionTask, KubeTask, PodFailedError
from .links import Link, plugged_links
from .pipeline import Pipeline, PipelineStats, TaskStatus, done_record
from .process import STDOUT, ProcessExitError, ProcessTask
from .quotas import ResourceManager, Usage
from .repositories import (
    And,
    Blob,
    FileRepository,
    InvalidKeyError,
    KeySet,
    LiveRepository,
    MemoryRepository,
    Not,
    Or,
    Repository,
    RepositoryBase,
    StoreRepository,
    TranslatedRepository,
)
from .views import FileView, LoopView, SyncRepository

__all__ = [
    "STDOUT",
    "And",
    "Blob",
    "ExecutorTask",
    "FileRepository",
    "FileView",
    "InProcessTask",
    "InvalidKeyError",
    "KeySet",
    "KubeFunctionTask",
    "KubeTask",
    "Link",
    "LiveRepository",
    "LoopView",
    "MemoryRepository",
    "Not",
    "Or",
    "Pipeline",
    "PipelineStats",
    "PipelineTask",
    "PodFailedError",
    "ProcessExitError",
    "ProcessTask",
    "Repository",
    "RepositoryBase",
    "ResourceManager",
    "StoreRepository",
    "SyncRepository",
    "TaskStatus",
    "TranslatedRepository",
    "Usage",
    "done_record",
    "plugged_links",
]
