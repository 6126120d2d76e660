"""HTTP throughput and latency of the real server, against a bare Litestar app measured the same way.

    .venv/bin/python benchmarks/http.py [--duration 5] [--rounds 1] [--connections 64] [--loadgen auto|wrk|python]

Starts `ihanoi serve --workers 1` (PostgreSQL and Redis from BENCH_DATABASE_URL / BENCH_REDIS_URL, else
DATABASE_URL / REDIS_URL, else the local defaults below, else embedded ones under .ihanoi/bench), then a
bare Litestar app under the same uvicorn options serving the same two paths with the same JSON bytes,
and loads each endpoint of each server in turn with 64 keep-alive HTTP/1.1 connections.

The absolute figures depend on the machine (and here the server and the load generator share 2 cores),
so the figure that matters is the ratio ihanoi/bare measured in the same run: what our middleware,
exception handlers, dependencies and serialization cost on top of the framework itself.

Exits 1 if a server does not start or any request gets something other than a 200, 130 on Ctrl-C.
"""

# The imports come after the sys.path fix below, hence E402 for the whole file.
# ruff: noqa: E402

from __future__ import annotations

import sys
from pathlib import Path

# This file is called http.py: run as a script, its folder comes first on sys.path and `import http`
# (done by http.client, urllib, uvicorn and Litestar) would find this file instead of the standard
# library's package. Drop that entry before anything imports `http`.
_HERE = Path(__file__).resolve().parent
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _HERE:
    del sys.path[0]

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

REPO = _HERE.parent
HOST = "127.0.0.1"  # every socket this script opens or serves is on the loopback interface
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_DATA_DIR = REPO / ".ihanoi" / "bench"
ENDPOINTS = ("/healthz", "/v1/modules")
STOP_GRACE = 15.0  # seconds a server gets after SIGTERM before SIGKILL
STALL_GRACE = 5.0  # seconds an in-flight request may still take after the measuring window closes


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


# --------------------------------------------------------------------------------------------------
# Server processes


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if this script dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Server:
    """A process we started: in its own process group, output to a file, stopped by SIGTERM then SIGKILL.

    Output goes to a file, not a pipe: nobody reads a pipe during the run, and a full one would block
    the server mid-benchmark. Its own session keeps a terminal's Ctrl-C away from it, so that it is
    stopped by us, in order, and waited for.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            raise

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
                    self.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(5)
        finally:
            self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One plain request, for start-up checks only (not for measuring)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
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
            status, body = http_get(port, path, timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(0.2)
    raise BenchError(f"{server.name}: GET {path} did not answer 200 within {timeout:.0f}s (last: {last}); "
                     f"its output ends with:\n{server.log_tail()}")


# --------------------------------------------------------------------------------------------------
# PostgreSQL and Redis for the real server


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or HOST, parts.port or default_port), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_services(cleanup: list) -> tuple[str, str, str]:
    """(database_url, redis_url, where they come from); embedded services for whatever is unreachable."""
    database_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    need_postgres = not _reachable(database_url, 5432)
    need_redis = not _reachable(redis_url, 6379)
    if not (need_postgres or need_redis):
        return database_url, redis_url, "given"
    missing = [name for name, need in (("PostgreSQL", need_postgres), ("Redis", need_redis)) if need]
    print(f"{' and '.join(missing)} not reachable: starting embedded ones under {EMBEDDED_DATA_DIR} ...", flush=True)
    sys.path.insert(0, str(REPO))  # `app` is installed in the venv, but make a plain checkout work too
    from app.embedded import EmbeddedServices

    services = EmbeddedServices(EMBEDDED_DATA_DIR, postgres=need_postgres, redis=need_redis)
    embedded_database_url, embedded_redis_url = services.start()  # stops what it started if it fails
    cleanup.append(services.stop)
    return (embedded_database_url or database_url, embedded_redis_url or redis_url,
            f"embedded {' and '.join(missing)}")


# --------------------------------------------------------------------------------------------------
# The baseline: a bare Litestar app, run by this same file with --baseline-server PORT BODY_FILE


def serve_baseline(port: int, body_file: str) -> None:
    """No middleware, no dependencies, no database: each path returns its pre-encoded bytes."""
    import uvicorn
    from litestar import Litestar, MediaType, get

    bodies: dict[str, str] = json.loads(Path(body_file).read_text(encoding="utf-8"))

    def route(path: str, body: bytes):
        @get(path, media_type=MediaType.JSON, name=f"bench{path.replace('/', '_')}")
        async def handler() -> bytes:
            return body  # bytes go out as they are

        return handler

    app = Litestar(
        route_handlers=[route(path, body.encode("utf-8")) for path, body in bodies.items()],
        openapi_config=None, logging_config=None, debug=False,
    )
    # The same uvicorn options as `ihanoi serve` (app/cli.py), so that only the application differs.
    uvicorn.run(app, host=HOST, port=port, workers=1, log_config=None, access_log=False, lifespan="on",
                timeout_graceful_shutdown=10)


# --------------------------------------------------------------------------------------------------
# Load generators


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


async def _python_load(port: int, path: str, connections: int, warmup: float, duration: float) -> Measurement:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
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


def _python_load_child(conn, *args) -> None:
    # The parent stops this process itself; a terminal's Ctrl-C reaching it only adds a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(("ok", asyncio.run(_python_load(*args))))
    except BaseException as exc:  # report to the parent, whatever it is
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def python_load(port: int, path: str, connections: int, warmup: float, duration: float) -> Measurement:
    """The asyncio raw-socket client, in a process of its own.

    A separate process keeps the client's event loop (and its GC pauses) apart from this script, and
    lets it use the core the server does not. fork: the child needs nothing but this module's functions.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_python_load_child, args=(sender, port, path, connections, warmup, duration),
                            name="bench-loadgen", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(warmup + duration + STALL_GRACE + 30):
            raise BenchError(f"load generator on {path} did not finish in time")
        try:
            outcome, payload = receiver.recv()
        except EOFError:
            raise BenchError(f"load generator on {path} died (exit code {child.exitcode})") from None
        if outcome != "ok":
            raise BenchError(f"load generator on {path} failed: {payload}")
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


def wrk_load(wrk: str, port: int, path: str, connections: int, warmup: float, duration: float) -> Measurement:
    # wrk takes whole seconds; one thread, as the server has the other core.
    url = f"http://{HOST}:{port}{path}"
    base = [wrk, "-t1", f"-c{connections}", "--timeout", "5s"]
    warm_secs, secs = max(1, round(warmup)), max(1, round(duration))

    def wrk_run(seconds: int) -> Measurement:
        try:
            done = subprocess.run([*base, "--latency", f"-d{seconds}s", url], capture_output=True, text=True,
                                  timeout=seconds + 30, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk on {path} did not finish in time") from None
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout, seconds)

    warm = wrk_run(warm_secs) if warmup > 0 else None
    measured = wrk_run(secs)
    if warm is not None:  # errors count over the whole run, as with the built-in client
        measured.non_200 += warm.non_200
        measured.socket_errors += warm.socket_errors
    return measured


# --------------------------------------------------------------------------------------------------
# Report


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _uvicorn_flavour() -> str:
    # What uvicorn's "auto" settings pick in this environment (the same for both servers).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"loop={loop}, http={parser}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def print_endpoint(path: str, rounds: dict[str, list[Measurement]]) -> None:
    results = {name: combine(measured) for name, measured in rounds.items()}
    print(f"\nGET {path}")
    print(f"  {'server':<15}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'client CPU':>12}")
    for name, m in results.items():
        cpu = "n/a" if m.loadgen_cpu is None else f"{m.loadgen_cpu:.0%}"
        print(f"  {name:<15}{m.rps:>10.0f}{m.p50_ms:>10.2f}{m.p99_ms:>10.2f}{m.errors:>8}{cpu:>12}")
        if m.errors:
            detail = ", ".join(f"HTTP {s}: {n}" for s, n in sorted(m.statuses.items())) or f"non-200: {m.non_200}"
            print(f"  {'':<15}  ({detail}; socket errors/stalls: {m.socket_errors})")
    ours, bare = results["ihanoi"], results["bare litestar"]
    print(f"  framework-overhead ratio ihanoi/bare: req/s {_ratio(ours.rps, bare.rps)}, "
          f"p50 {_ratio(ours.p50_ms, bare.p50_ms)}, p99 {_ratio(ours.p99_ms, bare.p99_ms)}")
    if ours.rps and bare.rps:
        # With the server process saturated, 1/throughput is roughly its time per request.
        extra_us = (1 / ours.rps - 1 / bare.rps) * 1e6
        print(f"  server time per request (1/req/s), ihanoi minus bare: {extra_us:+.0f} µs")
    if len(rounds["ihanoi"]) > 1:  # how much the ratio moves from one round to the next
        spread = " ".join(_ratio(o.rps, b.rps) for o, b in zip(rounds["ihanoi"], rounds["bare litestar"], strict=True))
        print(f"  req/s ratio per round: {spread}")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per endpoint per server")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat all measurements, alternating which server goes first (steadier ratios)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk if it is on PATH, else the built-in asyncio client")
    parser.add_argument("--wrk", default=None, help="path of the wrk binary (default: found on PATH)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds a server may take to answer 200 (migrations included)")
    parser.add_argument("--baseline-server", nargs=2, metavar=("PORT", "BODY_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --connections and --rounds >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    wrk = args.wrk or shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        raise BenchError("--loadgen wrk: no wrk binary found")
    use_wrk = bool(wrk) and args.loadgen != "python"

    def measure(port: int, path: str) -> Measurement:
        if use_wrk:
            return wrk_load(wrk, port, path, args.connections, args.warmup, args.duration)
        return python_load(port, path, args.connections, args.warmup, args.duration)

    cleanup: list = []  # run in reverse order, whatever happens
    try:
        database_url, redis_url, origin = resolve_services(cleanup)
        workdir = Path(tempfile.mkdtemp(prefix="ihanoi-bench-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))

        ihanoi_port = free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               # JSON log lines to a file would otherwise be part of what is measured.
               "IHANOI_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: the in-memory registry, as in production
        executable = Path(sys.executable).parent / "ihanoi"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "app.cli"]
        command += ["serve", "--host", HOST, "--port", str(ihanoi_port), "--workers", "1"]
        print(f"starting ihanoi serve on port {ihanoi_port} ...", flush=True)
        ihanoi = Server("ihanoi", command, env, workdir / "ihanoi.log")
        cleanup.append(ihanoi.stop)
        wait_until_ok(ihanoi, ihanoi_port, "/readyz", args.startup_timeout)
        bodies = {path: wait_until_ok(ihanoi, ihanoi_port, path, 10) for path in ENDPOINTS}

        body_file = workdir / "bodies.json"
        body_file.write_text(json.dumps({p: b.decode("utf-8") for p, b in bodies.items()}), encoding="utf-8")
        bare_port = free_port()
        print("starting bare litestar ...", flush=True)
        bare = Server(
            "bare litestar",
            [sys.executable, str(Path(__file__).resolve()), "--baseline-server", str(bare_port), str(body_file)],
            {**os.environ, "PYTHONUNBUFFERED": "1"}, workdir / "bare.log",
        )
        cleanup.append(bare.stop)
        for path, body in bodies.items():
            if wait_until_ok(bare, bare_port, path, args.startup_timeout) != body:
                raise BenchError(f"the baseline's GET {path} does not return the same bytes as ihanoi's")

        servers = [("ihanoi", ihanoi, ihanoi_port), ("bare litestar", bare, bare_port)]
        results = {path: {name: [] for name, _, _ in servers} for path in ENDPOINTS}
        for round_no in range(args.rounds):
            for path in ENDPOINTS:
                # Alternate which server goes first, so that a drift in the machine's load does not
                # always fall on the same one.
                for name, server, port in servers if round_no % 2 == 0 else servers[::-1]:
                    print(f"round {round_no + 1}/{args.rounds}: measuring {name} GET {path} ...", flush=True)
                    results[path][name].append(measure(port, path))
                    if server.proc.poll() is not None:
                        raise BenchError(f"{server.name} exited during the run:\n{server.log_tail()}")
    finally:
        # A second Ctrl-C must not leave servers running: finish the cleanup first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # one failed step must not skip the others
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)

    loadgen = (f"wrk ({wrk}, 1 thread)" if use_wrk
               else "built-in asyncio raw-socket client, in its own process (wrk not found)")
    print("\niHaNoi HTTP benchmark")
    print(f"  load generator  {loadgen}")
    print(f"  load            {args.connections} connections, HTTP/1.1 keep-alive, {args.warmup:g} s warm-up "
          f"then {args.duration:g} s measured, per endpoint per server"
          + (f", {args.rounds} rounds (req/s over all, median p50/p99)" if args.rounds > 1 else ""))
    print(f"  versions        Python {platform.python_version()}, Litestar {_version('litestar')}, "
          f"uvicorn {_version('uvicorn')} ({_uvicorn_flavour()}, log_config=None, access_log=False, 1 worker)")
    print(f"  machine         {os.cpu_count()} CPUs shared by server and load generator: compare the ratios")
    print("  ihanoi          `ihanoi serve --workers 1`, IHANOI_LOG_LEVEL=WARNING: the access log (INFO) "
          "is not written")
    print(f"  services        {origin}: {_safe_url(database_url)}, {_safe_url(redis_url)}")
    print("  bare litestar   no middleware, no DB, same paths returning the same JSON bytes")
    print("  errors          non-200 answers plus socket errors, warm-up included; latency from request "
          "write to last body byte")
    for path, by_server in results.items():
        print_endpoint(path, by_server)

    failed = sum(m.errors for by_server in results.values() for rounds in by_server.values() for m in rounds)
    if failed:
        print(f"\nFAILED: {failed} request(s) did not get a 200", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same cleanup path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_server:
        port, body_file = args.baseline_server
        serve_baseline(int(port), body_file)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
