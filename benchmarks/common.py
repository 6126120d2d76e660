"""Helpers shared by the benchmarks in this package (http_load, auth, broadcast, feedback, payments).

The benchmarks run as modules from the checkout's root, `.venv/bin/python -m benchmarks.<name>`, so that the
checkout's `app` and domain packages come first on sys.path and this one is imported as `benchmarks.common`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import importlib.metadata
import importlib.util
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # every socket the benchmarks open or serve is on the loopback interface
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_DATA_DIR = REPO / ".ihanoi" / "bench"
STOP_GRACE = 15.0  # seconds a server gets after SIGTERM before SIGKILL (by default)
STALL_GRACE = 5.0  # seconds an in-flight request may still take after the measuring window closes
DB_TIMEOUT = 10.0
REDIS_TIMEOUT = 5.0


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


# --------------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if this script dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def ihanoi_command() -> list[str]:
    """The `ihanoi` console script of this venv, else `python -m app.cli`."""
    executable = Path(sys.executable).parent / "ihanoi"
    return [str(executable)] if executable.exists() else [sys.executable, "-m", "app.cli"]


class Server:
    """A process we started: in its own process group, output to a file, stopped by SIGTERM then SIGKILL.

    Output goes to a file, not a pipe: nobody reads a pipe during the run, and a full one would block
    the server mid-benchmark. Its own session keeps a terminal's Ctrl-C away from it, so that it is
    stopped by us, in order, and waited for.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 stop_grace: float = STOP_GRACE) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_grace = stop_grace
        self._log = open(log_path, "wb")  # closed in stop()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the group we created with start_new_session

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:  # not reaped yet, so its pid (= its group id) is still ours
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(self.stop_grace)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(5)
        finally:
            self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_request(port: int, path: str, token: str | None = None, timeout: float = 5.0,
                 method: str = "GET") -> tuple[int, bytes]:
    """One plain request (with a bearer token if given), for checks only (not for measuring)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token is not None else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_ok(server: Server, port: int, path: str, timeout: float) -> bytes:
    """Poll `path` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with code {server.proc.returncode} before GET {path} "
                             f"answered 200; its output ends with:\n{server.log_tail()}")
        try:
            status, body = http_request(port, path, timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(0.2)
    raise BenchError(f"{server.name}: GET {path} did not answer 200 within {timeout:.0f}s (last: {last}); "
                     f"its output ends with:\n{server.log_tail()}")


def run_in_child(target: Callable, args: tuple, name: str, what: str, timeout: float, uvloop: bool = False):
    """`asyncio.run(target(*args))` in a forked process of its own; its result, or BenchError.

    A separate process keeps the client's event loop (and its GC pauses) apart from this script, and
    lets it use the core the server does not. fork: the child needs nothing but this module's functions.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, target, args, uvloop), name=name, daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise BenchError(f"{what} did not finish in time")
        try:
            outcome, payload = receiver.recv()
        except EOFError:
            raise BenchError(f"{what} died (exit code {child.exitcode})") from None
        if outcome != "ok":
            raise BenchError(f"{what} failed: {payload}")
        return payload
    finally:
        receiver.close()
        child.join(5)
        if child.is_alive():
            child.terminate()
            child.join(5)
        if child.is_alive():
            child.kill()
            child.join()


def _child_main(conn, target: Callable, args: tuple, uvloop: bool) -> None:
    # The parent stops this process itself; a terminal's Ctrl-C reaching it only adds a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if uvloop:
            with contextlib.suppress(ImportError):
                import uvloop as uvloop_module  # a lighter client loop, as the server's uvicorn gets it too

                asyncio.set_event_loop_policy(uvloop_module.EventLoopPolicy())
        conn.send(("ok", asyncio.run(target(*args))))
    except BaseException as exc:  # report to the parent, whatever it is
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_cleanup(cleanup: list) -> None:
    """The steps in reverse order; a second Ctrl-C must not leave anything running: ignore it meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for step in reversed(cleanup):
        try:
            step()
        except Exception as exc:  # one failed step must not skip the others
            print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same cleanup path as Ctrl-C


def run_main(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, interrupted: str) -> int:
    """run(args) with SIGTERM as Ctrl-C: 130 on an interrupt, 1 on a BenchError (a message, no traceback)."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted; {interrupted}", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------------------------------
# PostgreSQL and Redis


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or HOST, parts.port or default_port), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def given_services() -> tuple[str, str]:
    """(database_url, redis_url) from BENCH_* / the usual variables / the local defaults."""
    database_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    return database_url, redis_url


def resolve_services(cleanup: list) -> tuple[str, str, str]:
    """(database_url, redis_url, where they come from); embedded services for whatever is unreachable."""
    database_url, redis_url = given_services()
    need_postgres = not _reachable(database_url, 5432)
    need_redis = not _reachable(redis_url, 6379)
    if not (need_postgres or need_redis):
        return database_url, redis_url, "given"
    missing = [name for name, need in (("PostgreSQL", need_postgres), ("Redis", need_redis)) if need]
    print(f"{' and '.join(missing)} not reachable: starting embedded ones under {EMBEDDED_DATA_DIR} ...", flush=True)
    from app.embedded import EmbeddedServices

    services = EmbeddedServices(EMBEDDED_DATA_DIR, postgres=need_postgres, redis=need_redis)
    embedded_database_url, embedded_redis_url = services.start()  # stops what it started if it fails
    cleanup.append(services.stop)
    return (embedded_database_url or database_url, embedded_redis_url or redis_url,
            f"embedded {' and '.join(missing)}")


def create_database(admin_url: str, name: str, timeout: float = DB_TIMEOUT) -> None:
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(admin_url, timeout=DB_TIMEOUT)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"', timeout=timeout)
        finally:
            await conn.close(timeout=DB_TIMEOUT)

    try:
        asyncio.run(work())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create the throw-away database {name} on {safe_url(admin_url)}: "
                         f"{type(exc).__name__}: {exc}") from None


def drop_database(admin_url: str, name: str, timeout: float = DB_TIMEOUT) -> None:
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(admin_url, timeout=DB_TIMEOUT)
        try:
            try:  # WITH (FORCE): PostgreSQL 13+; the server is stopped by now, but a stray session must not block
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=timeout)
            except asyncpg.PostgresSyntaxError:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"', timeout=timeout)
        finally:
            await conn.close(timeout=DB_TIMEOUT)

    asyncio.run(work())


def delete_redis_prefix(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=500):  # SCAN, never KEYS
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------
# Load generators: a GET on 64 (or N) keep-alive HTTP/1.1 connections, by wrk or a built-in client


@dataclass
class Measurement:
    requests: int  # 200 or not, completed inside the measuring window
    seconds: float
    p50_ms: float
    p99_ms: float
    non_200: int  # over the whole run, warm-up included
    socket_errors: int  # failed connects, resets, stalls, unparsable answers (whole run)
    statuses: dict[int, int] = field(default_factory=dict)  # the non-200 ones
    # Share of one core the built-in client used while loading: near 100% it, not the server, is the limit.
    loadgen_cpu: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_200 + self.socket_errors


def combine(rounds: list[Measurement]) -> Measurement:
    """Several rounds as one: throughput over all of them, the median round's percentiles, errors added."""
    if len(rounds) == 1:
        return rounds[0]
    statuses: dict[int, int] = {}
    for m in rounds:
        for status, count in m.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    cpus = [m.loadgen_cpu for m in rounds if m.loadgen_cpu is not None]
    return Measurement(
        requests=sum(m.requests for m in rounds), seconds=sum(m.seconds for m in rounds),
        p50_ms=statistics.median(m.p50_ms for m in rounds), p99_ms=statistics.median(m.p99_ms for m in rounds),
        non_200=sum(m.non_200 for m in rounds), socket_errors=sum(m.socket_errors for m in rounds),
        statuses=statuses, loadgen_cpu=max(cpus) if cpus else None,
    )


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.non_200 = 0
        self.socket_errors = 0
        self.statuses: dict[int, int] = {}


async def _keep_alive_requests(reader, writer, request: bytes, begin: float, end: float, tally: _Tally) -> bool:
    """Send requests one after another on one connection until `end`; False when the server closes it."""
    latencies = tally.latencies
    clock = time.perf_counter
    while True:
        started = clock()
        if started >= end:
            return True
        writer.write(request)  # a few bytes into an empty buffer: no need to drain
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])  # "HTTP/1.1 200 OK"
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("response without Content-Length")  # not the case for these endpoints
        at += len(b"\r\ncontent-length:")
        length = int(lowered[at:lowered.index(b"\r\n", at)])
        if length:
            await reader.readexactly(length)
        finished = clock()
        if begin <= finished <= end:
            latencies.append(finished - started)
        if status != 200:
            tally.non_200 += 1
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if b"\r\nconnection: close" in lowered:
            return False


async def _connection_loop(port: int, stream, request: bytes, begin: float, end: float, tally: _Tally) -> None:
    """One of the N concurrent connections; reconnects if the server closes or resets it."""
    reader, writer = stream
    try:
        while time.perf_counter() < end:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    tally.socket_errors += 1
                    await asyncio.sleep(0.05)
                    continue
            try:
                keep = await _keep_alive_requests(reader, writer, request, begin, end, tally)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                tally.socket_errors += 1
                keep = False
            if not keep:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def request_bytes(path: str, token: str | None = None) -> bytes:
    """A GET of `path`, with the Authorization header if a token is given."""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


async def _python_load(port: int, request: bytes, connections: int, warmup: float, duration: float) -> Measurement:
    tally = _Tally()
    # Open every connection first, so that connecting is not part of the warm-up or the window.
    streams = await asyncio.wait_for(
        asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(connections))), timeout=10
    )
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    begin = wall_started + warmup
    end = begin + duration
    tasks = [asyncio.create_task(_connection_loop(port, s, request, begin, end, tally)) for s in streams]
    done, stalled = await asyncio.wait(tasks, timeout=warmup + duration + STALL_GRACE)
    for task in stalled:  # a request the server never finished answering
        task.cancel()
        tally.socket_errors += 1
    await asyncio.gather(*stalled, return_exceptions=True)
    for task in done:
        task.result()  # a bug in the client should show, not pass for a slow server
    cpu = (time.process_time() - cpu_started) / (time.perf_counter() - wall_started)
    tally.latencies.sort()
    return Measurement(
        requests=len(tally.latencies), seconds=duration,
        p50_ms=_percentile(tally.latencies, 0.50) * 1000, p99_ms=_percentile(tally.latencies, 0.99) * 1000,
        non_200=tally.non_200, socket_errors=tally.socket_errors, statuses=tally.statuses, loadgen_cpu=cpu,
    )


def python_load(port: int, label: str, request: bytes, connections: int, warmup: float,
                duration: float) -> Measurement:
    """The asyncio raw-socket client, in a process of its own, sending `request` on every connection."""
    return run_in_child(_python_load, (port, request, connections, warmup, duration), "bench-loadgen",
                        f"load generator on {label}", warmup + duration + STALL_GRACE + 30)


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(output: str, seconds: float) -> Measurement:
    """Figures from `wrk --latency` output (its p99 is in the latency distribution)."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if not match:
            raise BenchError(f"no {percent}% line in wrk's output:\n{output}")
        return float(match[1]) * _WRK_UNITS[match[2]]

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if not done:
        raise BenchError(f"unexpected wrk output:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Measurement(
        requests=int(done[1]), seconds=float(done[2]) * _WRK_UNITS[done[3]] / 1000 or seconds,
        p50_ms=latency("50"), p99_ms=latency("99"),
        # wrk counts neither a 3xx as an error nor a status in detail; these endpoints never redirect
        non_200=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    )


def wrk_load(wrk: str, port: int, label: str, path: str, token: str | None, connections: int, warmup: float,
             duration: float) -> Measurement:
    """wrk's figures for a GET of `path` (with the Authorization header if a token is given)."""
    # wrk takes whole seconds; one thread, as the server has the other core.
    url = f"http://{HOST}:{port}{path}"
    base = [wrk, "-t1", f"-c{connections}", "--timeout", "5s"]
    if token is not None:
        base += ["-H", f"Authorization: Bearer {token}"]
    warm_secs, secs = max(1, round(warmup)), max(1, round(duration))

    def wrk_run(seconds: int) -> Measurement:
        try:
            done = subprocess.run([*base, "--latency", f"-d{seconds}s", url], capture_output=True, text=True,
                                  timeout=seconds + 30, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk on {label} did not finish in time") from None
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout, seconds)

    warm = wrk_run(warm_secs) if warmup > 0 else None
    measured = wrk_run(secs)
    if warm is not None:  # errors count over the whole run, as with the built-in client
        measured.non_200 += warm.non_200
        measured.socket_errors += warm.socket_errors
    return measured


def add_load_options(parser: argparse.ArgumentParser, per: str, rounds_help: str, who: str) -> None:
    """The options of the load-generating benchmarks (http_load, auth)."""
    parser.add_argument("--duration", type=float, default=5.0, help=f"seconds measured {per}")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--rounds", type=int, default=1, help=rounds_help)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk if it is on PATH, else the built-in asyncio client")
    parser.add_argument("--wrk", default=None, help="path of the wrk binary (default: found on PATH)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help=f"seconds {who} may take to answer 200 (migrations included)")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --connections and --rounds >= 1")


def find_wrk(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(wrk's path or None, whether to use it) from --loadgen and --wrk."""
    wrk = args.wrk or shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        raise BenchError("--loadgen wrk: no wrk binary found")
    return wrk, bool(wrk) and args.loadgen != "python"


# --------------------------------------------------------------------------------------------------
# Report


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def uvicorn_flavour() -> str:
    # What uvicorn's "auto" settings pick in this environment.
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"loop={loop}, http={parser}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def format_row(m: Measurement) -> str:
    """req/s, p50, p99, errors and client CPU of one measurement, in the columns of the reports."""
    cpu = "n/a" if m.loadgen_cpu is None else f"{m.loadgen_cpu:.0%}"
    return f"{m.rps:>10.0f}{m.p50_ms:>10.2f}{m.p99_ms:>10.2f}{m.errors:>8}{cpu:>12}"


def error_detail(m: Measurement) -> str:
    detail = ", ".join(f"HTTP {s}: {n}" for s, n in sorted(m.statuses.items())) or f"non-200: {m.non_200}"
    return f"({detail}; socket errors/stalls: {m.socket_errors})"


COLUMNS = f"{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'client CPU':>12}"
ERRORS_NOTE = "non-200 answers plus socket errors, warm-up included; latency from request write to last body byte"


def run_in_throwaway_database(label: str, bench: Callable[[str], Any]) -> int:
    """Create a database for one benchmark run, run `bench(database_url)` (a coroutine) on uvloop, and drop
    the database (and any embedded server started for it) whatever happens."""
    import uuid

    import uvloop

    cleanup: list = []
    try:
        admin_url, _, where = resolve_services(cleanup)
        name = f"ihanoi_bench_{label}_{uuid.uuid4().hex[:8]}"
        create_database(admin_url, name)
        # a loaded machine may take more than a statement's usual 10 s to drop a database it just wrote
        cleanup.append(lambda: drop_database(admin_url, name, timeout=120))
        print(f"PostgreSQL: {safe_url(admin_url)} ({where}), database {name}", flush=True)
        return uvloop.run(bench(with_database(admin_url, name)))
    finally:
        run_cleanup(cleanup)


# --------------------------------------------------------------------------------------------------
# CPU time of what is measured, for figures per core (README's capacity sheet)
#
# A rate per core is what was done divided by the CPU seconds the service used doing it, read from /proc (user +
# system time): the server process with its children (`ihanoi serve` may fork workers), the worker, this process
# when it calls the service in-process, and the PostgreSQL backends connected to the benchmark's database (found
# by their process title, `postgres: ... <user> <database> <host>(<port>) <state>`). Backends that end during the
# window are not counted, nor PostgreSQL's shared processes (WAL writer, checkpointer, autovacuum): the database
# figure is a floor.

_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ... utime (12th), stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one live process; 0 if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK if fields else 0.0


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    children: dict[int, list[int]] = {}
    for other in _all_pids():
        fields = _stat_fields(other)
        if fields:
            children.setdefault(int(fields[1]), []).append(other)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def database_backends(database: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to `database` on this machine (by their process title)."""
    found = []
    for pid in _all_pids():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        if title[:1] == ["postgres:"] and database in title[2:6]:
            found.append(pid)
    return found


class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by named process trees, this process and PostgreSQL.

    `processes`: name -> pid (each counted with its descendants); `database`: the name of the database whose
    backends are counted as "postgresql"; `this_process`: also count this process (a service called in-process).
    """

    def __init__(self, processes: dict[str, int] | None = None, database: str | None = None,
                 this_process: bool = False) -> None:
        self.processes = dict(processes or {})
        self.database = database
        self.this_process = this_process
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}
        self.wall = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        sample = {name: {p: process_cpu(p) for p in process_tree(pid)} for name, pid in self.processes.items()}
        if self.database:
            sample["postgresql"] = {p: process_cpu(p) for p in database_backends(self.database)}
        if self.this_process:
            sample["this process"] = {0: time.process_time()}
        return sample

    def start(self) -> CpuMeter:
        self._start = self._sample()
        self._wall = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        end = self._sample()
        self.wall = time.perf_counter() - self._wall
        self.seconds = {name: sum(cpu - self._start.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
                        for name, pids in end.items()}
        return self.seconds

    def service_seconds(self) -> float:
        """CPU of everything measured but PostgreSQL: the service's own share."""
        return sum(s for name, s in self.seconds.items() if name != "postgresql")

    def describe(self, done: float, unit: str) -> str:
        """`done` over the CPU each part used: '<rate> <unit>/s per core of the service (...), PostgreSQL ...'."""
        parts = ", ".join(f"{name} {s:.2f} s" for name, s in self.seconds.items())
        service = self.service_seconds()
        own = f"{done / service:,.0f} {unit}/s per core of the service" if service > 0 else "service CPU n/a"
        pg = self.seconds.get("postgresql")
        pg_text = f"; {done / pg:,.0f} {unit}/s per PostgreSQL core" if pg else ""
        return f"{own}{pg_text} (CPU over {self.wall:.1f} s: {parts}; load average {os.getloadavg()[0]:.2f})"
