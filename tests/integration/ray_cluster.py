"""A real multi-node Ray cluster on loopback for tests: a head and worker nodes, each its own
`ray start --block` process group in a temporary folder, stopped (and killable) by the test.

Every port is asked of the OS: the machine's Redis owns Ray's default GCS port (6379), and
other test runs may hold Ray's other defaults. Each node gets its own loopback address
(127.0.0.2, .3, ...): Ray rewrites 127.0.0.1 and "localhost" into the host's outward address,
and these tests send nothing beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Set for the nodes and, by the tests, for the driver: a loopback test cluster needs no token
# (Ray turns token auth on whenever ~/.ray/auth_token exists, which a local Ray leaves behind).
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RayNode:
    """One `ray start --block` process group."""

    proc: subprocess.Popen[bytes]
    resources: dict[str, float]
    log: str

    def kill(self) -> None:
        """SIGKILL the whole node (raylet, workers, object store): a machine that vanished."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop the whole node, stragglers of the group included. SIGTERM would have Ray
        drain for 30 s first: a test cluster has nothing worth draining."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def check_alive(self) -> None:
        """Raise with the end of the node's log if `ray start` exited."""
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{tail}")


@dataclass
class RayCluster:
    """A head plus worker nodes; `address` is what `ray.init(address=...)` takes."""

    ray_bin: str
    temp_dir: str
    address: str = ""
    head_ip: str = "127.0.0.2"
    nodes: list[RayNode] = field(default_factory=list)

    def _common(self) -> list[str]:
        ip = f"127.0.0.{len(self.nodes) + 2}"
        return [
            "--num-cpus=1", "--block", "--disable-usage-stats", f"--node-ip-address={ip}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            "--object-store-memory=100000000",
        ]  # fmt: skip

    def _start(self, args: list[str], resources: dict[str, float]) -> RayNode:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **CLUSTER_ENV}
        env.pop("RAY_ADDRESS", None)
        log = os.path.join(self.temp_dir, f"node{len(self.nodes)}.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self.ray_bin, "start", *args, *self._common(),
                 f"--resources={json.dumps(resources)}"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # one process group per node: one killpg stops it all
            )  # fmt: skip
        node = RayNode(proc, resources, log)
        self.nodes.append(node)
        return node

    def wait_head(self, timeout: float = 120.0) -> None:
        """Block until the head's GCS port accepts connections."""
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            self.nodes[0].check_alive()
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Ray head at {self.address} not up after {timeout}s"
                    ) from None
                time.sleep(0.2)

    def start_head(self, resources: dict[str, float]) -> RayNode:
        port = free_port()
        self.address = f"{self.head_ip}:{port}"
        return self._start(
            ["--head", f"--port={port}", "--include-dashboard=false",
             f"--temp-dir={self.temp_dir}"],
            resources,
        )  # fmt: skip

    def add_node(self, resources: dict[str, float], num_gpus: int = 0) -> RayNode:
        extra = [f"--num-gpus={num_gpus}"] if num_gpus else []
        return self._start([f"--address={self.address}", *extra], resources)

    def wait_nodes(self, ray: Any, alive: int, timeout: float = 120.0) -> None:
        """Block until the cluster reports `alive` live nodes (the GCS is the judge)."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc.returncode is None and node.proc.poll() is not None:
                    node.check_alive()  # died by itself (killed ones have a returncode)
            count = sum(1 for n in ray.nodes() if n["Alive"])
            if count == alive:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} live Ray nodes after {timeout}s, wanted {alive}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextmanager
def ray_cluster(head_resources: dict[str, float]) -> Iterator[RayCluster]:
    """A running head node; add nodes with `add_node`. Everything is stopped on exit."""
    ray_bin = shutil.which("ray")
    if ray_bin is None:
        raise RuntimeError("the `ray` command is not on PATH")
    # Short: Ray's unix sockets live under it and AF_UNIX paths stop at 107 bytes.
    cluster = RayCluster(ray_bin, tempfile.mkdtemp(prefix="tlray", dir="/tmp"))
    try:
        cluster.start_head(head_resources)
        yield cluster
    finally:
        cluster.stop()
