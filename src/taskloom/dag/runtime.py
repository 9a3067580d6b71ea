"""The runtime context of one DAG node run (smallpond's task attributes): `current_node()`.

A `NodeRuntime` travels with the run it belongs to (also into a process-pool child, as
data), so a task body reads its partition, seeded random generators, output directory and
GPUs from `current_node()` wherever it executes.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import hashlib
import os
import random
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..run import current_run
from .faults import FaultInjector, InjectedFaultError

STAGING_DIR = ".staging"  # under the output root, so publishing is a rename on one filesystem


@dataclass(frozen=True)
class PartitionInfo:
    """Where a run sits along one partition dimension: `index` of `npartitions`."""

    dimension: str
    index: int
    npartitions: int


def partition_infos(dims: Mapping[str, int], flat: int) -> tuple[PartitionInfo, ...]:
    """The per-dimension infos of flat partition number `flat` (row-major, last varies fastest)."""
    infos: list[PartitionInfo] = []
    rest = flat
    for dimension, size in reversed(list(dims.items())):
        infos.append(PartitionInfo(dimension, rest % size, size))
        rest //= size
    return tuple(reversed(infos))


@dataclass
class NodeRuntime:
    """What `current_node()` returns inside one DAG node run.

    `partition` is the flat partition number (None for an unpartitioned node) and
    `partition_infos` its place along each dimension. The random generators are seeded from
    the DAG seed, the node and the partition: the same in every attempt and every DAG run with
    that seed, different per partition. `output_path` is a staging directory, emptied at the
    start of each attempt and moved to `final_output_path` when the partition succeeds.
    `local_gpu` / `local_gpu_ranks` are the GPUs handed to this run (also in its
    `CUDA_VISIBLE_DEVICES` when it runs in a process-pool child).
    """

    dag_id: str
    node: str
    seed: int
    run_id: str
    partition: int | None = None
    partition_infos: tuple[PartitionInfo, ...] = ()
    output_name: str = ""
    output_root: str | None = None
    staging: str | None = None
    gpus: tuple[str, ...] = ()
    gpu_ranks: tuple[int, ...] = ()
    cpu_limit: Any = None
    gpu_limit: Any = None
    memory_limit: Any = None
    perf_profile: bool = False
    profile_path: str | None = None
    fail_prob: float = 0.0
    copy: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- shipping -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a run executed in another process)."""
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "_cache"
        }
        data["partition_infos"] = [dataclasses.asdict(p) for p in self.partition_infos]
        data["gpus"], data["gpu_ranks"] = list(self.gpus), list(self.gpu_ranks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeRuntime:
        """Rebuild the runtime `to_dict` described."""
        values = dict(data)
        values["partition_infos"] = tuple(PartitionInfo(**p) for p in values["partition_infos"])
        values["gpus"] = tuple(values.get("gpus") or ())
        values["gpu_ranks"] = tuple(values.get("gpu_ranks") or ())
        return cls(**values)

    # -- partitions -----------------------------------------------------------------------------
    @property
    def partition_dims(self) -> tuple[str, ...]:
        """The partition dimensions' names, outermost first."""
        return tuple(p.dimension for p in self.partition_infos)

    @property
    def partition_infos_as_dict(self) -> dict[str, int]:
        """Dimension name → this run's index along it."""
        return {p.dimension: p.index for p in self.partition_infos}

    def get_partition_info(self, dimension: str) -> PartitionInfo:
        """This run's info along `dimension`; ConfigError if the node has no such dimension."""
        for info in self.partition_infos:
            if info.dimension == dimension:
                return info
        raise ConfigError(
            f"node {self.node!r} has no partition dimension {dimension!r} "
            f"(it has: {', '.join(self.partition_dims) or 'none'})"
        )

    # -- seeded randomness ----------------------------------------------------------------------
    @property
    def random_seed_bytes(self) -> bytes:
        """32 bytes derived from the DAG seed, the node name and the partition."""
        where = ",".join(f"{p.dimension}={p.index}/{p.npartitions}" for p in self.partition_infos)
        return hashlib.blake2b(f"{self.seed}|{self.node}|{where}".encode(), digest_size=32).digest()

    @property
    def python_random_gen(self) -> random.Random:
        """A `random.Random` seeded from `random_seed_bytes` (one per run attempt)."""
        if "python" not in self._cache:
            self._cache["python"] = random.Random(int.from_bytes(self.random_seed_bytes, "big"))
        gen: random.Random = self._cache["python"]
        return gen

    @property
    def numpy_random_gen(self) -> Any:
        """A `numpy.random.Generator` seeded from `random_seed_bytes` (needs numpy)."""
        if "numpy" not in self._cache:
            try:
                import numpy
            except ImportError:
                raise ConfigError(
                    "numpy_random_gen needs numpy: pip install numpy (python_random_gen needs "
                    "nothing)"
                ) from None
            self._cache["numpy"] = numpy.random.default_rng(
                int.from_bytes(self.random_seed_bytes, "big")
            )
        return self._cache["numpy"]

    def random_uint32(self) -> int:
        """The next 32-bit unsigned integer from `python_random_gen`."""
        return self.python_random_gen.getrandbits(32)

    def random_float(self) -> float:
        """The next float in [0, 1) from `python_random_gen`."""
        return self.python_random_gen.random()

    # -- output ---------------------------------------------------------------------------------
    def _need_root(self) -> str:
        if self.output_root is None or self.staging is None:
            raise ConfigError(
                f"node {self.node!r} has no output directory: pass output_root= to DAG.run()"
            )
        return self.output_root

    @property
    def output_path(self) -> Path:
        """This attempt's output directory (created on first use); it becomes
        `final_output_path` when the partition succeeds."""
        self._need_root()
        assert self.staging is not None
        path = Path(self.staging)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def final_output_path(self) -> Path:
        """Where the output lands: `<output_root>/<output_name>[/<partition>]`."""
        path = Path(self._need_root()) / self.output_name
        return path if self.partition is None else path / str(self.partition)

    def publish(self) -> None:
        """Move the staging directory into place (atomic rename; an older output is replaced)."""
        if self.staging is None or not os.path.isdir(self.staging):
            return  # the run wrote nothing
        final = self.final_output_path
        final.parent.mkdir(parents=True, exist_ok=True)
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            os.replace(final, old)
        os.replace(self.staging, final)
        shutil.rmtree(old, ignore_errors=True)

    # -- GPUs -----------------------------------------------------------------------------------
    @property
    def local_gpu(self) -> str | None:
        """The first GPU handed to this run (its device id), or None."""
        return self.gpus[0] if self.gpus else None

    @property
    def local_rank(self) -> int | None:
        """The rank (index on this host) of the first GPU handed to this run, or None."""
        return self.gpu_ranks[0] if self.gpu_ranks else None

    @property
    def local_gpu_ranks(self) -> tuple[int, ...]:
        """The ranks of every GPU handed to this run."""
        return self.gpu_ranks

    # -- around the function call ---------------------------------------------------------------
    def inject_fault(self) -> None:
        """Fail this attempt on purpose with probability `fail_prob` (seeded, reproducible):
        raises `InjectedFaultError`."""
        if self.fail_prob <= 0.0:
            return
        run = current_run()
        attempt = run.retry_attempt if run is not None else 0
        where = self.partition or 0
        if FaultInjector(self.fail_prob, self.seed).should_fail(
            self.node, where, self.copy, attempt
        ):
            raise InjectedFaultError(
                f"injected fault: node {self.node!r} partition {where} copy {self.copy} "
                f"attempt {attempt} (seed {self.seed})"
            )

    @contextlib.contextmanager
    def call_scope(self) -> Iterator[None]:
        """Entered where the function runs, so in every executor (a pool child too): the
        injected fault, a fresh staging directory, and the profiler."""
        self.inject_fault()
        self._cache.clear()  # every attempt draws the same numbers
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)  # a retried attempt starts clean
        if not self.perf_profile or self.profile_path is None or sys.getprofile() is not None:
            yield  # another profiler already runs in this thread: leave it alone
            return
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()
            profiler.dump_stats(self.profile_path)


def current_node() -> NodeRuntime:
    """The runtime context of the DAG node run executing here (ConfigError elsewhere)."""
    run = current_run()
    node = run._node if run is not None else None
    if not isinstance(node, NodeRuntime):
        raise ConfigError("current_node() is only available inside a run launched by a DAG node")
    return node


def node_runtimes(runs: Sequence[Any]) -> list[NodeRuntime]:
    """The runtimes of `runs` that carry one (winning runs of a node)."""
    return [r._node for r in runs if isinstance(r._node, NodeRuntime)]
