"""A throw-away PostgreSQL primary and its streaming replica on loopback, for tests.

The machine's PostgreSQL binaries (/usr/lib/postgresql/N/bin, Debian's package) make a primary with
`initdb` (wal_level=replica), and the replica is `pg_basebackup -R` of it started on another port: a hot
standby that follows the primary's WAL stream. Nothing is kept: the folder is removed by `stop()`.
As root, the servers run as the `postgres` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder with everything needed, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in found:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReplicatedPostgres:
    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="ihanoi-pg-replica-"))
        self.primary_dir = self.folder / "primary"
        self.replica_dir = self.folder / "replica"
        self.primary_port = _free_port()
        self.replica_port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def primary_url(self, database: str = "postgres") -> str:
        return self.url(self.primary_port, database)

    def replica_url(self, database: str = "postgres") -> str:
        return self.url(self.replica_port, database)

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, timeout=timeout,
                                user=self.user, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stderr or result.stdout}")

    def _start(self, data_dir: Path, port: int) -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(data_dir), "-l", str(data_dir / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def start(self) -> ReplicatedPostgres:
        try:
            self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "--no-sync")
            with open(self.primary_dir / "postgresql.conf", "a") as conf:
                conf.write("\nwal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
                           "synchronous_commit = on\nfull_page_writes = on\n")
            with open(self.primary_dir / "pg_hba.conf", "a") as hba:
                hba.write("\nhost replication postgres 127.0.0.1/32 trust\n")
            self._start(self.primary_dir, self.primary_port)
            # -R writes standby.signal and primary_conninfo: the copy starts as a streaming replica
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                      "-D", str(self.replica_dir), "-R", "-X", "stream", "--no-sync")
            self._start(self.replica_dir, self.replica_port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_replica(self) -> None:
        """Take the replica away (as a crashed server: no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.replica_dir), "-m", "immediate", "-w", "stop", timeout=60)

    def stop(self) -> None:
        for data_dir in (self.replica_dir, self.primary_dir):
            if (data_dir / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop", timeout=60)
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def wait(check, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not reached in {timeout} s: {what}")
            time.sleep(0.05)
