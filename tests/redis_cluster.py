"""A throw-away Redis Cluster on loopback for tests: 3 primaries and 3 replicas of Debian's `redis-server`.

Nothing is persisted (no AOF, no RDB): the folder holds only each node's cluster configuration, and the
whole cluster is gone when `stop()` returns. `cluster-node-timeout` is short so that a test killing a
primary sees its replica take over within a couple of seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)


def _free_ports(count: int) -> list[int]:
    """Ports whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port > 55000 or port in ports:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class RedisClusterNodes:
    def __init__(self, primaries: int = 3, replicas_each: int = 1, node_timeout_ms: int = NODE_TIMEOUT_MS) -> None:
        self.count = primaries * (1 + replicas_each)
        self.replicas_each = replicas_each
        self.node_timeout_ms = node_timeout_ms
        self.folder = Path(tempfile.mkdtemp(prefix="ihanoi-redis-cluster-"))
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """A seed node; the client discovers the others with CLUSTER SLOTS."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def cli(self, port: int, *args: str, timeout: float = 10.0) -> str:
        result = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli -p {port} {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout

    def _start_node(self, port: int) -> subprocess.Popen:
        node_dir = self.folder / str(port)
        node_dir.mkdir(exist_ok=True)
        return subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-node-timeout", str(self.node_timeout_ms),
             "--appendonly", "no", "--save", "", "--dir", str(node_dir), "--daemonize", "no",
             "--logfile", str(node_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 60.0) -> RedisClusterNodes:
        try:
            self.ports = _free_ports(self.count)
            for port in self.ports:
                self.procs[port] = self._start_node(port)
            for port in self.ports:
                self._wait(lambda p=port: self.cli(p, "PING").strip() == "PONG", timeout, f"node {port} up")
            subprocess.run(
                [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
                check=True, capture_output=True, text=True, timeout=timeout,
            )
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster: {what} not reached in {timeout} s")
            time.sleep(0.1)

    def nodes(self, port: int | None = None) -> list[dict]:
        """CLUSTER NODES as seen by a live node: id, port, role, primary id, flags, slots."""
        port = port or next(p for p in self.ports if self.procs[p].poll() is None)
        rows = []
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            rows.append({"id": fields[0], "port": int(fields[1].split(":")[1].split("@")[0]), "flags": flags,
                         "primary": fields[3] if fields[3] != "-" else None, "slots": fields[8:],
                         "role": "primary" if "master" in flags else "replica", "failed": "fail" in flags})
        return rows

    def healthy(self) -> bool:
        live = [p for p in self.ports if self.procs[p].poll() is None]
        for port in live:
            info = self.cli(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
        nodes = self.nodes()
        primaries = [n for n in nodes if n["role"] == "primary" and not n["failed"] and n["slots"]]
        if len(primaries) != self.count // (1 + self.replicas_each):
            return False
        # every live replica has finished its first sync and follows its primary
        live_replicas = [n["port"] for n in nodes if n["role"] == "replica" and not n["failed"] and n["port"] in live]
        return all("master_link_status:up" in self.cli(p, "INFO", "replication") for p in live_replicas)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, timeout, "cluster_state:ok on every live node")

    def primary_of_slot(self, slot: int) -> int:
        for node in self.nodes():
            if node["role"] != "primary" or node["failed"]:
                continue
            for span in node["slots"]:
                if span.startswith("["):  # a slot being migrated
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return node["port"]
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary_port: int) -> int:
        nodes = self.nodes()
        primary_id = next(n["id"] for n in nodes if n["port"] == primary_port)
        return next(n["port"] for n in nodes if n["primary"] == primary_id and not n["failed"])

    def kill(self, port: int) -> None:
        """SIGKILL a node: no goodbye to the others, as a crashed machine."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
