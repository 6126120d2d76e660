"""HTTP throughput and latency of the real server, against a bare Litestar app measured the same way.

    .venv/bin/python -m benchmarks.http_load [--duration 5] [--rounds 1] [--connections 64] [--loadgen auto|wrk|python]

Starts `ihanoi serve --workers 1` (PostgreSQL and Redis from BENCH_DATABASE_URL / BENCH_REDIS_URL, else
DATABASE_URL / REDIS_URL, else the local defaults below, else embedded ones under .ihanoi/bench), then a
bare Litestar app under the same uvicorn options serving the same two paths with the same JSON bytes,
and loads each endpoint of each server in turn with 64 keep-alive HTTP/1.1 connections.

The absolute figures depend on the machine (and here the server and the load generator share 2 cores),
so the figure that matters is the ratio ihanoi/bare measured in the same run: what our middleware,
exception handlers, dependencies and serialization cost on top of the framework itself.

Exits 1 if a server does not start or any request gets something other than a 200, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    COLUMNS,
    ERRORS_NOTE,
    HOST,
    BenchError,
    Measurement,
    Server,
    add_load_options,
    check_load_options,
    combine,
    error_detail,
    find_wrk,
    format_row,
    free_port,
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
    wrk_load,
)

ENDPOINTS = ("/healthz", "/v1/modules")


# --------------------------------------------------------------------------------------------------
# The baseline: a bare Litestar app, run by this same module with --baseline-server PORT BODY_FILE


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
# Report


def print_endpoint(path: str, rounds: dict[str, list[Measurement]]) -> None:
    results = {name: combine(measured) for name, measured in rounds.items()}
    print(f"\nGET {path}")
    print(f"  {'server':<15}{COLUMNS}")
    for name, m in results.items():
        print(f"  {name:<15}{format_row(m)}")
        if m.errors:
            print(f"  {'':<15}  {error_detail(m)}")
    ours, bare = results["ihanoi"], results["bare litestar"]
    print(f"  framework-overhead ratio ihanoi/bare: req/s {ratio(ours.rps, bare.rps)}, "
          f"p50 {ratio(ours.p50_ms, bare.p50_ms)}, p99 {ratio(ours.p99_ms, bare.p99_ms)}")
    if ours.rps and bare.rps:
        # With the server process saturated, 1/throughput is roughly its time per request.
        extra_us = (1 / ours.rps - 1 / bare.rps) * 1e6
        print(f"  server time per request (1/req/s), ihanoi minus bare: {extra_us:+.0f} µs")
    if len(rounds["ihanoi"]) > 1:  # how much the ratio moves from one round to the next
        spread = " ".join(ratio(o.rps, b.rps) for o, b in zip(rounds["ihanoi"], rounds["bare litestar"], strict=True))
        print(f"  req/s ratio per round: {spread}")
        # the tail, round by round (the servers alternate going first), as each was measured
        tails = "; ".join(f"{o.p99_ms:.1f}/{b.p99_ms:.1f} = {ratio(o.p99_ms, b.p99_ms)}"
                          for o, b in zip(rounds["ihanoi"], rounds["bare litestar"], strict=True))
        print(f"  p99 ms per round, ihanoi/bare: {tails}")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, "per endpoint per server",
                     "repeat all measurements, alternating which server goes first (steadier ratios)", "a server")
    parser.add_argument("--baseline-server", nargs=2, metavar=("PORT", "BODY_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    return args


def run(args: argparse.Namespace) -> int:
    wrk, use_wrk = find_wrk(args)

    def measure(port: int, path: str) -> Measurement:
        if use_wrk:
            return wrk_load(wrk, port, path, path, None, args.connections, args.warmup, args.duration)
        return python_load(port, path, request_bytes(path), args.connections, args.warmup, args.duration)

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
        command = [*ihanoi_command(), "serve", "--host", HOST, "--port", str(ihanoi_port), "--workers", "1"]
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
            [sys.executable, "-m", "benchmarks.http_load", "--baseline-server", str(bare_port), str(body_file)],
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
        run_cleanup(cleanup)  # a second Ctrl-C must not leave servers running: it finishes first

    loadgen = (f"wrk ({wrk}, 1 thread)" if use_wrk
               else "built-in asyncio raw-socket client, in its own process (wrk not found)")
    print("\niHaNoi HTTP benchmark")
    print(f"  load generator  {loadgen}")
    print(f"  load            {args.connections} connections, HTTP/1.1 keep-alive, {args.warmup:g} s warm-up "
          f"then {args.duration:g} s measured, per endpoint per server"
          + (f", {args.rounds} rounds (req/s over all, median p50/p99)" if args.rounds > 1 else ""))
    print(f"  versions        Python {platform.python_version()}, Litestar {version('litestar')}, "
          f"uvicorn {version('uvicorn')} ({uvicorn_flavour()}, log_config=None, access_log=False, 1 worker)")
    print(f"  machine         {os.cpu_count()} CPUs shared by server and load generator: compare the ratios")
    print("  ihanoi          `ihanoi serve --workers 1`, IHANOI_LOG_LEVEL=WARNING: the access log (INFO) "
          "is not written")
    print(f"  services        {origin}: {safe_url(database_url)}, {safe_url(redis_url)}")
    print("  bare litestar   no middleware, no DB, same paths returning the same JSON bytes")
    print(f"  errors          {ERRORS_NOTE}")
    for path, by_server in results.items():
        print_endpoint(path, by_server)

    failed = sum(m.errors for by_server in results.values() for rounds in by_server.values() for m in rounds)
    if failed:
        print(f"\nFAILED: {failed} request(s) did not get a 200", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_server:
        port, body_file = args.baseline_server
        serve_baseline(int(port), body_file)
        return 0
    return run_main(run, args, "servers stopped")


if __name__ == "__main__":
    sys.exit(main())
