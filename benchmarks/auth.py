"""Auth overhead: verified requests/s of an endpoint with a bearer token against the same endpoint without one.

    .venv/bin/python benchmarks/auth.py [--duration 5] [--rounds 1] [--connections 64] [--loadgen auto|wrk|python]

Starts one `ihanoi serve --workers 1` (IHANOI_ENV=test, so that the local VNeID stand-in exists) on a
throw-away database created on the PostgreSQL server of BENCH_DATABASE_URL / DATABASE_URL / the local
default (dropped at the end), with Redis keys under a unique `bench:<random>:` prefix (deleted at the
end) and a master key made for this run. The throw-away database is needed because a database's
signing keys are encrypted under the master key of whoever created them: a fresh key cannot read
them, and the benchmark must not need the deployment's key. An access token then comes from the real
login flow, `ihanoi token --personal-id 001085012345 --level 2`, with the same master key and public URL.

Measured in turn, with the load generator of benchmarks/http.py (64 keep-alive HTTP/1.1 connections):

    a  GET /v1/modules without a token: the auth middleware finds no Authorization header
    b  GET /v1/modules with the token: the middleware verifies the ES256 signature, checks the
       session-revocation set and builds the principal on every request, the rest is the same as (a)
    c  GET /v1/me with the token: auth, the resident guard, one PostgreSQL read and the AES-GCM
       decryption of the personal ID: a real authenticated endpoint

Before measuring it checks that (b) and (c) answer 200 (the same bytes as (a) for (b), the masked
personal ID for (c)) and that a corrupted token, or none for /v1/me, gets a 401. The figure that
matters is the auth-overhead ratio req/s (b) / req/s (a) of the same run, and 1/req/s (b) - 1/req/s (a),
roughly the server time the verification adds to each request.

Exits 1 if the server does not start, the token cannot be had, a check fails or any request gets
something other than a 200; 130 on Ctrl-C.
"""

# The imports come after the sys.path fix below, hence E402 for the whole file.
# ruff: noqa: E402

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and it holds http.py: `import http`
# (done by http.client, asyncio's helpers, uvicorn...) would find the sibling benchmark instead of the
# standard library's package. Drop that entry before anything imports `http`.
_HERE = Path(__file__).resolve().parent
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _HERE:
    del sys.path[0]

import argparse
import asyncio
import base64
import binascii
import http.client
import importlib.util
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from urllib.parse import urlsplit


def _load_http_benchmark():
    """benchmarks/http.py as a module (not importable by name: `http` is the standard library's)."""
    name = "ihanoi_bench_http"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "http.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling (results come back from the client process) need it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


bench_http = _load_http_benchmark()
BenchError = bench_http.BenchError
Measurement = bench_http.Measurement
HOST = bench_http.HOST  # every socket this script opens or serves is on the loopback interface
STALL_GRACE = bench_http.STALL_GRACE

REPO = _HERE.parent
PERSONAL_ID = "001085012345"  # a well-formed test number; the stand-in signs it in at identity level 2
MASKED_PERSONAL_ID = "001******345"  # what /v1/me must show once it has decrypted it
LEVEL = 2
TOKEN_COMMAND_TIMEOUT = 120.0
TOKEN_MARGIN = 30.0  # seconds of life a token must have left after a measurement that uses it
REDIS_TIMEOUT = 5.0
DB_TIMEOUT = 10.0


class Endpoint:
    def __init__(self, key: str, label: str, path: str, authenticated: bool) -> None:
        self.key, self.label, self.path, self.authenticated = key, label, path, authenticated


ENDPOINTS = (
    Endpoint("a", "GET /v1/modules, no token", "/v1/modules", False),
    Endpoint("b", "GET /v1/modules, bearer token", "/v1/modules", True),
    Endpoint("c", "GET /v1/me, bearer token", "/v1/me", True),
)


# --------------------------------------------------------------------------------------------------
# Throw-away database and Redis prefix


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def create_database(admin_url: str, name: str) -> None:
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(admin_url, timeout=DB_TIMEOUT)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"', timeout=DB_TIMEOUT)
        finally:
            await conn.close(timeout=DB_TIMEOUT)

    try:
        asyncio.run(work())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create the throw-away database {name} on {bench_http._safe_url(admin_url)}: "
                         f"{type(exc).__name__}: {exc}") from None


def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(admin_url, timeout=DB_TIMEOUT)
        try:
            try:  # WITH (FORCE): PostgreSQL 13+; the server is stopped by now, but a stray session must not block
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=DB_TIMEOUT)
            except asyncpg.PostgresSyntaxError:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"', timeout=DB_TIMEOUT)
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
# Token


def _jwt_part(token: str, index: int) -> dict:
    """A JWT's header (0) or claims (1), unverified: only to read `exp` and `kid` for the report."""
    try:
        part = token.split(".")[index]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error) as exc:
        raise BenchError(f"`ihanoi token` printed something that is not a JWT ({exc}): {token[:40]!r}...") from None


class Token:
    def __init__(self, value: str) -> None:
        self.value = value
        self.header = _jwt_part(value, 0)
        self.claims = _jwt_part(value, 1)
        self.expires = float(self.claims.get("exp", 0))
        self.lifetime = self.expires - float(self.claims.get("iat", self.expires))

    def left(self) -> float:
        return self.expires - time.time()


def fetch_token(env: dict[str, str]) -> Token:
    """An access token through the real login flow (start, the VNeID stand-in, complete)."""
    executable = Path(sys.executable).parent / "ihanoi"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "app.cli"]
    command += ["token", "--personal-id", PERSONAL_ID, "--level", str(LEVEL)]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TOKEN_COMMAND_TIMEOUT, check=False, preexec_fn=bench_http._die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`ihanoi token` did not finish within {TOKEN_COMMAND_TIMEOUT:.0f}s") from None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BenchError(f"`ihanoi token` failed with exit code {done.returncode}; its output ends with:\n{output}")
    return Token(lines[-1])


def corrupted(token: str) -> str:
    """The token with one signature character changed in the middle.

    Not the last one: its low bits are padding, and a change there may decode to the same signature.
    """
    at = token.rindex(".") + 10
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1:]


# --------------------------------------------------------------------------------------------------
# Checks before measuring


def http_request(port: int, path: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token is not None else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expect(port: int, path: str, token: str | None, status: int, what: str) -> bytes:
    got, body = http_request(port, path, token)
    if got != status:
        raise BenchError(f"check failed: GET {path} {what} answered {got}, not {status}: {body[:300]!r}")
    return body


def check_token(port: int, token: Token, unauthenticated_body: bytes) -> None:
    """The token is accepted on both measured paths, a corrupted one or none is refused."""
    value = token.value
    if expect(port, "/v1/modules", value, 200, "with the token") != unauthenticated_body:
        raise BenchError("check failed: GET /v1/modules answers different bytes with and without the token")
    me = json.loads(expect(port, "/v1/me", value, 200, "with the token"))
    if me.get("personal_id") != MASKED_PERSONAL_ID or me.get("identity_level") != LEVEL:
        raise BenchError(f"check failed: GET /v1/me is not the resident signed in: {me!r}")
    expect(port, "/v1/modules", corrupted(value), 401, "with a corrupted token")
    expect(port, "/v1/me", corrupted(value), 401, "with a corrupted token")
    expect(port, "/v1/me", None, 401, "without a token")


# --------------------------------------------------------------------------------------------------
# Load generators: benchmarks/http.py's, given whole request bytes (with the Authorization header)


def request_bytes(path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()  # as http.py's, plus the header


async def _python_load(port: int, request: bytes, connections: int, warmup: float, duration: float) -> Measurement:
    """http.py's _python_load, with the request bytes given instead of built from a path."""
    tally = bench_http._Tally()
    streams = await asyncio.wait_for(
        asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(connections))), timeout=10
    )
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    begin = wall_started + warmup
    end = begin + duration
    tasks = [asyncio.create_task(bench_http._connection_loop(port, s, request, begin, end, tally)) for s in streams]
    done, stalled = await asyncio.wait(tasks, timeout=warmup + duration + STALL_GRACE)
    for task in stalled:  # a request the server never finished answering
        task.cancel()
        tally.socket_errors += 1
    await asyncio.gather(*stalled, return_exceptions=True)
    for task in done:
        task.result()  # a bug in the client should show, not pass for a slow server
    cpu = (time.process_time() - cpu_started) / (time.perf_counter() - wall_started)
    tally.latencies.sort()
    percentile = bench_http._percentile
    return Measurement(
        requests=len(tally.latencies), seconds=duration,
        p50_ms=percentile(tally.latencies, 0.50) * 1000, p99_ms=percentile(tally.latencies, 0.99) * 1000,
        non_200=tally.non_200, socket_errors=tally.socket_errors, statuses=tally.statuses, loadgen_cpu=cpu,
    )


def _python_load_child(conn, *args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process itself
    try:
        conn.send(("ok", asyncio.run(_python_load(*args))))
    except BaseException as exc:  # report to the parent, whatever it is
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def python_load(port: int, label: str, request: bytes, connections: int, warmup: float,
                duration: float) -> Measurement:
    """The asyncio raw-socket client in a process of its own (fork), as in http.py."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_python_load_child, args=(sender, port, request, connections, warmup, duration),
                            name="bench-loadgen", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(warmup + duration + STALL_GRACE + 30):
            raise BenchError(f"load generator on {label} did not finish in time")
        try:
            outcome, payload = receiver.recv()
        except EOFError:
            raise BenchError(f"load generator on {label} died (exit code {child.exitcode})") from None
        if outcome != "ok":
            raise BenchError(f"load generator on {label} failed: {payload}")
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


def wrk_load(wrk: str, port: int, label: str, path: str, token: str | None, connections: int, warmup: float,
             duration: float) -> Measurement:
    """http.py's wrk_load with the Authorization header."""
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
        return bench_http.parse_wrk(done.stdout, seconds)

    warm = wrk_run(warm_secs) if warmup > 0 else None
    measured = wrk_run(secs)
    if warm is not None:  # errors count over the whole run, as with the built-in client
        measured.non_200 += warm.non_200
        measured.socket_errors += warm.socket_errors
    return measured


# --------------------------------------------------------------------------------------------------
# Report


def _extra_us(slow: Measurement, fast: Measurement) -> str:
    if not (slow.rps and fast.rps):
        return "n/a"
    return f"{(1 / slow.rps - 1 / fast.rps) * 1e6:+.0f} µs"


def print_results(results: dict[str, list[Measurement]]) -> None:
    combined = {key: bench_http.combine(rounds) for key, rounds in results.items()}
    print(f"\n  {'':<3}{'endpoint':<32}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'client CPU':>12}")
    for endpoint in ENDPOINTS:
        m = combined[endpoint.key]
        cpu = "n/a" if m.loadgen_cpu is None else f"{m.loadgen_cpu:.0%}"
        print(f"  {endpoint.key:<3}{endpoint.label:<32}{m.rps:>10.0f}{m.p50_ms:>10.2f}{m.p99_ms:>10.2f}"
              f"{m.errors:>8}{cpu:>12}")
        if m.errors:
            detail = ", ".join(f"HTTP {s}: {n}" for s, n in sorted(m.statuses.items())) or f"non-200: {m.non_200}"
            print(f"  {'':<35}({detail}; socket errors/stalls: {m.socket_errors})")
    a, b, c = combined["a"], combined["b"], combined["c"]
    ratio = bench_http._ratio
    print(f"\n  auth-overhead ratio b/a: req/s {ratio(b.rps, a.rps)}, p50 {ratio(b.p50_ms, a.p50_ms)}, "
          f"p99 {ratio(b.p99_ms, a.p99_ms)}")
    print(f"  server time per request (1/req/s), b minus a: {_extra_us(b, a)} (token verification)")
    print(f"  real authenticated endpoint c/a: req/s {ratio(c.rps, a.rps)}, p50 {ratio(c.p50_ms, a.p50_ms)}, "
          f"p99 {ratio(c.p99_ms, a.p99_ms)}")
    print(f"  server time per request (1/req/s), c minus a: {_extra_us(c, a)} "
          "(verification + guard + PostgreSQL read + AES-GCM decryption)")
    if len(results["a"]) > 1:  # how much the ratios move from one round to the next
        rounds = list(zip(results["a"], results["b"], results["c"], strict=True))
        print(f"  req/s ratio b/a per round: {' '.join(ratio(rb.rps, ra.rps) for ra, rb, _ in rounds)}")
        print(f"  req/s ratio c/a per round: {' '.join(ratio(rc.rps, ra.rps) for ra, _, rc in rounds)}")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per endpoint")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat all measurements, alternating the order of the endpoints (steadier ratios)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk if it is on PATH, else the built-in asyncio client")
    parser.add_argument("--wrk", default=None, help="path of the wrk binary (default: found on PATH)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds the server may take to answer 200 (migrations included)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --connections and --rounds >= 1")
    if args.warmup + args.duration + STALL_GRACE + TOKEN_MARGIN >= 600:
        parser.error("one measurement must fit in an access token's lifetime (600 s): lower --duration")
    return args


def run(args: argparse.Namespace) -> int:
    wrk = args.wrk or shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        raise BenchError("--loadgen wrk: no wrk binary found")
    use_wrk = bool(wrk) and args.loadgen != "python"

    cleanup: list = []  # run in reverse order, whatever happens
    notes: list[str] = []
    tokens_fetched = 0
    try:
        admin_database_url, redis_url, origin = bench_http.resolve_services(cleanup)
        workdir = Path(tempfile.mkdtemp(prefix="ihanoi-bench-auth-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))

        redis_prefix = f"bench:{secrets.token_hex(6)}:"

        def clean_redis() -> None:
            notes.append(f"deleted {delete_redis_prefix(redis_url, redis_prefix)} Redis key(s) under {redis_prefix}")

        cleanup.append(clean_redis)
        database_name = f"ihanoi_bench_{secrets.token_hex(5)}"
        create_database(admin_database_url, database_name)

        def clean_database() -> None:
            drop_database(admin_database_url, database_name)
            notes.append(f"dropped database {database_name}")

        cleanup.append(clean_database)
        database_url = _with_database(admin_database_url, database_name)

        port = bench_http.free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "IHANOI_ENV": "test",
               # JSON log lines to a file would otherwise be part of what is measured.
               "IHANOI_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
               "IHANOI_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
               "IHANOI_RATE_LOGIN": "100000/60", "IHANOI_REDIS_PREFIX": redis_prefix,
               # The token's `iss` is this URL: the server and `ihanoi token` must agree on it.
               "IHANOI_PUBLIC_URL": f"http://{HOST}:{port}"}
        for name in ("PROMETHEUS_MULTIPROC_DIR", "IHANOI_OIDC_ISSUER", "IHANOI_OIDC_REDIRECT_URI",
                     "IHANOI_REDIS_CLUSTER", "IHANOI_EXTRA_MODULES", "IHANOI_MODULES_DISABLED"):
            env.pop(name, None)  # one process, the local stand-in, plain Redis, the shipped modules
        executable = Path(sys.executable).parent / "ihanoi"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "app.cli"]
        command += ["serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        print(f"starting ihanoi serve on port {port} (database {database_name}, Redis prefix {redis_prefix}) ...",
              flush=True)
        server = bench_http.Server("ihanoi", command, env, workdir / "ihanoi.log")
        cleanup.append(server.stop)
        bench_http.wait_until_ok(server, port, "/readyz", args.startup_timeout)
        unauthenticated_body = expect(port, "/v1/modules", None, 200, "without a token")

        token: Token | None = None

        def fresh_token(needed: float) -> Token:
            """The current token, or a new one if it would expire within `needed` seconds."""
            nonlocal token, tokens_fetched
            if token is None or token.left() < needed + TOKEN_MARGIN:
                print("signing in through the VNeID stand-in (`ihanoi token`) ...", flush=True)
                token = fetch_token(env)
                tokens_fetched += 1
                if token.lifetime < needed + TOKEN_MARGIN:
                    raise BenchError(f"access tokens live {token.lifetime:.0f} s: too short for one measurement")
                check_token(port, token, unauthenticated_body)
            return token

        first = fresh_token(0)
        print(f"checks passed: the token is accepted on /v1/modules and /v1/me, a corrupted one gets 401 "
              f"(alg {first.header.get('alg')}, kid {first.header.get('kid')}, lives {first.lifetime:.0f} s)",
              flush=True)

        one_measurement = args.warmup + args.duration + STALL_GRACE

        def measure(endpoint: Endpoint) -> Measurement:
            value = fresh_token(one_measurement).value if endpoint.authenticated else None
            if use_wrk:
                return wrk_load(wrk, port, endpoint.label, endpoint.path, value, args.connections, args.warmup,
                                args.duration)
            return python_load(port, endpoint.label, request_bytes(endpoint.path, value), args.connections,
                               args.warmup, args.duration)

        results: dict[str, list[Measurement]] = {e.key: [] for e in ENDPOINTS}
        for round_no in range(args.rounds):
            # Alternate the order, so that a drift in the machine's load does not always fall on the same one.
            for endpoint in ENDPOINTS if round_no % 2 == 0 else ENDPOINTS[::-1]:
                print(f"round {round_no + 1}/{args.rounds}: measuring {endpoint.key} {endpoint.label} ...", flush=True)
                results[endpoint.key].append(measure(endpoint))
                if server.proc.poll() is not None:
                    raise BenchError(f"the server exited during the run:\n{server.log_tail()}")
        # The token still works and a bad one is still refused after the load.
        check_token(port, fresh_token(0), unauthenticated_body)
    finally:
        # A second Ctrl-C must not leave the server running: finish the cleanup first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # one failed step must not skip the others
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)

    loadgen = (f"wrk ({wrk}, 1 thread)" if use_wrk
               else "built-in asyncio raw-socket client of benchmarks/http.py, in its own process (wrk not found)")
    print("\niHaNoi auth-overhead benchmark")
    print(f"  load generator  {loadgen}")
    print(f"  load            {args.connections} connections, HTTP/1.1 keep-alive, {args.warmup:g} s warm-up "
          f"then {args.duration:g} s measured, per endpoint"
          + (f", {args.rounds} rounds (req/s over all, median p50/p99)" if args.rounds > 1 else ""))
    print(f"  versions        Python {platform.python_version()}, Litestar {bench_http._version('litestar')}, "
          f"uvicorn {bench_http._version('uvicorn')} ({bench_http._uvicorn_flavour()}), "
          f"PyJWT {bench_http._version('PyJWT')}, cryptography {bench_http._version('cryptography')}")
    print(f"  machine         {os.cpu_count()} CPUs shared by server and load generator: compare the ratios")
    print("  server          `ihanoi serve --workers 1`, IHANOI_ENV=test, IHANOI_LOG_LEVEL=WARNING")
    print(f"  services        {origin}: {bench_http._safe_url(admin_database_url)} (throw-away database "
          f"{database_name}), {bench_http._safe_url(redis_url)} (prefix {redis_prefix})")
    print(f"  token           `ihanoi token --personal-id {PERSONAL_ID} --level {LEVEL}` (real login flow through "
          f"the VNeID stand-in), {tokens_fetched} fetched; ES256, checked: 200 with it, 401 corrupted")
    print("  errors          non-200 answers plus socket errors, warm-up included; latency from request "
          "write to last body byte")
    for note in notes:
        print(f"  cleanup         {note}")
    print_results(results)

    failed = sum(m.errors for rounds in results.values() for m in rounds)
    if failed:
        print(f"\nFAILED: {failed} request(s) did not get a 200", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same cleanup path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; server stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
