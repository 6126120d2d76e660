"""Auth overhead: verified requests/s of an endpoint with a bearer token against the same endpoint without one.

    .venv/bin/python -m benchmarks.auth [--duration 5] [--rounds 1] [--connections 64] [--loadgen auto|wrk|python]

Starts one `ihanoi serve --workers 1` (IHANOI_ENV=test, so that the local VNeID stand-in exists) on a
throw-away database created on the PostgreSQL server of BENCH_DATABASE_URL / DATABASE_URL / the local
default (dropped at the end), with Redis keys under a unique `bench:<random>:` prefix (deleted at the
end) and a master key made for this run. The throw-away database is needed because a database's
signing keys are encrypted under the master key of whoever created them: a fresh key cannot read
them, and the benchmark must not need the deployment's key. An access token then comes from the real
login flow, `ihanoi token --personal-id 001085012345 --level 2`, with the same master key and public URL.

Measured in turn, with the load generator shared with benchmarks/http_load.py (benchmarks/common.py; 64 keep-alive
HTTP/1.1 connections):

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

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    COLUMNS,
    ERRORS_NOTE,
    HOST,  # every socket this script opens or serves is on the loopback interface
    REPO,
    STALL_GRACE,
    BenchError,
    Measurement,
    Server,
    _die_with_parent,
    add_load_options,
    check_load_options,
    combine,
    create_database,
    delete_redis_prefix,
    drop_database,
    error_detail,
    find_wrk,
    format_row,
    free_port,
    http_request,
    ihanoi_command,
    python_load,
    ratio,
    request_bytes,
    resolve_services,
    run_cleanup,
    run_main,
    safe_url,
    uvicorn_flavour,
    version,
    wait_until_ok,
    with_database,
    wrk_load,
)

PERSONAL_ID = "001085012345"  # a well-formed test number; the stand-in signs it in at identity level 2
MASKED_PERSONAL_ID = "001******345"  # what /v1/me must show once it has decrypted it
LEVEL = 2
TOKEN_COMMAND_TIMEOUT = 120.0
TOKEN_MARGIN = 30.0  # seconds of life a token must have left after a measurement that uses it


class Endpoint:
    def __init__(self, key: str, label: str, path: str, authenticated: bool) -> None:
        self.key, self.label, self.path, self.authenticated = key, label, path, authenticated


ENDPOINTS = (
    Endpoint("a", "GET /v1/modules, no token", "/v1/modules", False),
    Endpoint("b", "GET /v1/modules, bearer token", "/v1/modules", True),
    Endpoint("c", "GET /v1/me, bearer token", "/v1/me", True),
)



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
    command = [*ihanoi_command(), "token", "--personal-id", PERSONAL_ID, "--level", str(LEVEL)]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TOKEN_COMMAND_TIMEOUT, check=False, preexec_fn=_die_with_parent)
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

# --------------------------------------------------------------------------------------------------
# Checks before measuring


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
# Report


def _extra_us(slow: Measurement, fast: Measurement) -> str:
    if not (slow.rps and fast.rps):
        return "n/a"
    return f"{(1 / slow.rps - 1 / fast.rps) * 1e6:+.0f} µs"


def print_results(results: dict[str, list[Measurement]]) -> None:
    combined = {key: combine(rounds) for key, rounds in results.items()}
    print(f"\n  {'':<3}{'endpoint':<32}{COLUMNS}")
    for endpoint in ENDPOINTS:
        m = combined[endpoint.key]
        print(f"  {endpoint.key:<3}{endpoint.label:<32}{format_row(m)}")
        if m.errors:
            print(f"  {'':<35}{error_detail(m)}")
    a, b, c = combined["a"], combined["b"], combined["c"]
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
    add_load_options(parser, "per endpoint",
                     "repeat all measurements, alternating the order of the endpoints (steadier ratios)", "the server")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.warmup + args.duration + STALL_GRACE + TOKEN_MARGIN >= 600:
        parser.error("one measurement must fit in an access token's lifetime (600 s): lower --duration")
    return args


def run(args: argparse.Namespace) -> int:
    wrk, use_wrk = find_wrk(args)

    cleanup: list = []  # run in reverse order, whatever happens
    notes: list[str] = []
    tokens_fetched = 0
    try:
        admin_database_url, redis_url, origin = resolve_services(cleanup)
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
        database_url = with_database(admin_database_url, database_name)

        port = free_port()
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
        command = [*ihanoi_command(), "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        print(f"starting ihanoi serve on port {port} (database {database_name}, Redis prefix {redis_prefix}) ...",
              flush=True)
        server = Server("ihanoi", command, env, workdir / "ihanoi.log")
        cleanup.append(server.stop)
        wait_until_ok(server, port, "/readyz", args.startup_timeout)
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
        run_cleanup(cleanup)  # a second Ctrl-C must not leave the server running: it finishes first

    loadgen = (f"wrk ({wrk}, 1 thread)" if use_wrk
               else "built-in asyncio raw-socket client of benchmarks/http_load.py, in its own process (wrk not found)")
    print("\niHaNoi auth-overhead benchmark")
    print(f"  load generator  {loadgen}")
    print(f"  load            {args.connections} connections, HTTP/1.1 keep-alive, {args.warmup:g} s warm-up "
          f"then {args.duration:g} s measured, per endpoint"
          + (f", {args.rounds} rounds (req/s over all, median p50/p99)" if args.rounds > 1 else ""))
    print(f"  versions        Python {platform.python_version()}, Litestar {version('litestar')}, "
          f"uvicorn {version('uvicorn')} ({uvicorn_flavour()}), "
          f"PyJWT {version('PyJWT')}, cryptography {version('cryptography')}")
    print(f"  machine         {os.cpu_count()} CPUs shared by server and load generator: compare the ratios")
    print("  server          `ihanoi serve --workers 1`, IHANOI_ENV=test, IHANOI_LOG_LEVEL=WARNING")
    print(f"  services        {origin}: {safe_url(admin_database_url)} (throw-away database "
          f"{database_name}), {safe_url(redis_url)} (prefix {redis_prefix})")
    print(f"  token           `ihanoi token --personal-id {PERSONAL_ID} --level {LEVEL}` (real login flow through "
          f"the VNeID stand-in), {tokens_fetched} fetched; ES256, checked: 200 with it, 401 corrupted")
    print(f"  errors          {ERRORS_NOTE}")
    for note in notes:
        print(f"  cleanup         {note}")
    print_results(results)

    failed = sum(m.errors for rounds in results.values() for m in rounds)
    if failed:
        print(f"\nFAILED: {failed} request(s) did not get a 200", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv), "server stopped")


if __name__ == "__main__":
    sys.exit(main())
