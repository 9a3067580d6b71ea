"""A real Redis Cluster on loopback for tests, from Debian's `redis-server` and `redis-cli`.

Masters (and optionally one replica each) run as child processes in a temporary folder, on
ports the OS hands out; `redis-cli --cluster create` joins them. Stopped (SIGKILL, folder
removed) by the caller, or killed one node at a time to test failover.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    # A cluster node also listens on port + 10000 (the bus): find a pair that is free.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class ClusterNode:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class RedisCluster:
    """Nodes of one cluster; `url` is the taskloom store URL that reaches all of them."""

    folder: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(n.address for n in self.nodes)
        return f"redis+cluster://{hosts}/0"

    def cli(self, port: int, *args: str, timeout: float = 60) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return out.stdout + out.stderr

    def info(self, port: int) -> dict[str, str]:
        text = self.cli(port, "cluster", "info")
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node reports the cluster state `ok` with all slots served."""
        deadline = time.monotonic() + timeout
        while True:
            live = [n for n in self.nodes if n.proc.poll() is None]
            infos = [self.info(n.port) for n in live]
            if all(i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                   for i in infos):  # fmt: skip
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout}s: {infos}")
            time.sleep(0.1)

    def master_of_slot(self, slot: int) -> ClusterNode:
        """The live node serving `slot` as master."""
        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            for line in self.cli(node.port, "cluster", "nodes").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for part in fields[8:]:
                        lo, _, hi = part.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return node
        raise LookupError(f"no live master serves slot {slot}")

    def wait_replicated(self, master: ClusterNode, timeout: float = 30.0) -> None:
        """Until every replica of `master` has acknowledged all of its writes so far."""
        deadline = time.monotonic() + timeout
        while True:
            info = dict(
                line.split(":", 1)
                for line in self.cli(master.port, "info", "replication").split()
                if ":" in line
            )
            offset = int(info.get("master_repl_offset", "0"))
            acked = [
                int(dict(kv.split("=") for kv in v.split(","))["offset"])
                for k, v in info.items()
                if k.startswith("slave") and "offset=" in v
            ]
            if acked and min(acked) >= offset:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas of {master.address} behind after {timeout}s")
            time.sleep(0.05)

    def wait_failover(self, slot: int, dead: ClusterNode, timeout: float = 60.0) -> ClusterNode:
        """Until a live node other than `dead` serves `slot` as master and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                master = self.master_of_slot(slot)
            except LookupError:
                master = None
            if master is not None and master.port != dead.port:
                self.wait_ok(max(1.0, deadline - time.monotonic()))
                return master
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took over slot {slot} within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> RedisCluster:
    """Start and join `masters` masters with `replicas` replicas each; ready when it returns."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise FileNotFoundError("redis-server and redis-cli are needed (Debian: redis-server)")
    cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="tlrc")))
    try:
        for _ in range(masters * (1 + replicas)):
            port = _free_port()
            folder = cluster.folder / str(port)
            folder.mkdir()
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(node_timeout_ms), "--appendonly", "no",
                 # a replica may take over however stale it thinks it is: with a 1 s node
                 # timeout the default factor refuses every failover of a quiet master
                 "--cluster-replica-validity-factor", "0", "--repl-ping-replica-period", "1",
                 "--save", "", "--dir", str(folder), "--logfile", "redis.log",
                 "--protected-mode", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cluster.nodes.append(ClusterNode(port, proc))
        for node in cluster.nodes:
            deadline = time.monotonic() + 30
            while "PONG" not in cluster.cli(node.port, "ping"):
                if node.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {node.port} did not start")
                time.sleep(0.05)
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(n.address for n in cluster.nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        cluster.wait_ok()
        return cluster
    except BaseException:
        cluster.stop()
        raise


_shared: RedisCluster | None = None


def shared_cluster_url() -> str:
    """One 3-master cluster for the whole test session, started on first use and stopped when
    the interpreter exits (tests isolate themselves by key prefix, as on a single server)."""
    global _shared
    if _shared is None:
        import atexit

        _shared = start_cluster(masters=3)
        atexit.register(_shared.stop)
    return _shared.url
