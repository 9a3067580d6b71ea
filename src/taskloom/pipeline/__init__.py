"""Data pipelines (pydatatask's model) on taskloom's durable runs.

Tasks are linked to repositories (keyed data); a job is ready when the keys it requires are
present and nothing inhibits it; the `Pipeline` loop launches each ready job exactly once as
a taskloom run. See docs/pipelines.md.
"""

from .kinds import ExecutorTask, InProcessTask, PipelineTask
from .kube import KubeFunctionTask, KubeTask, PodFailedError
from .links import Link, plugged_links
from .managers import LocalProcessManager, ProcessHandle, ProcessManager, SSHProcessManager
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
from .s3 import S3Repository
from .views import FileView, LoopView, SyncRepository

# pydatatask's names: one kind runs bodies in-process; a repository holds blobs and metadata.
InProcessSyncTask = InProcessTask
MetadataRepository = Repository
BlobRepository = Repository

__all__ = [
    "STDOUT",
    "And",
    "Blob",
    "BlobRepository",
    "ExecutorTask",
    "FileRepository",
    "FileView",
    "InProcessSyncTask",
    "InProcessTask",
    "InvalidKeyError",
    "KeySet",
    "KubeFunctionTask",
    "KubeTask",
    "Link",
    "LiveRepository",
    "LocalProcessManager",
    "LoopView",
    "MemoryRepository",
    "MetadataRepository",
    "Not",
    "Or",
    "Pipeline",
    "PipelineStats",
    "PipelineTask",
    "PodFailedError",
    "ProcessExitError",
    "ProcessHandle",
    "ProcessManager",
    "ProcessTask",
    "Repository",
    "RepositoryBase",
    "ResourceManager",
    "S3Repository",
    "SSHProcessManager",
    "StoreRepository",
    "SyncRepository",
    "TaskStatus",
    "TranslatedRepository",
    "Usage",
    "done_record",
    "plugged_links",
]
