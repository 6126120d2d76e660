"""Transit: online gate checks against a bare Litestar endpoint and against raw verification; the offline
validator against raw verification. One run, one machine, ratios printed.

    .venv/bin/python -m benchmarks.transit [--connections 64] [--warmup 1] [--duration 5] [--codes 80000] [--rounds 3]
        [--open-rate 0.5]

1. Creates a throw-away database (BENCH_DATABASE_URL / DATABASE_URL / the local default), starts
   `ihanoi serve --workers 1` on it (IHANOI_ENV=dev, its own Redis prefix), signs a 60+ resident in through
   the VNeID stand-in (a free network pass, so no wallet is needed), registers a phone key, fetches level 1,
   and registers a validator machine client with `ihanoi clients add` (transit_validator:hanoibus).
2. Online, --rounds alternating rounds of: --codes distinct fresh codes (the phone's signature differs each
   time), each POSTed once to `/v1/transit/validator/check` over --connections keep-alive connections: every
   request is a full accepted check (parse, signatures, the ticket's and device's cached state, the Redis
   script deciding once fleet-wide and recording the boarding); an empty code, refused before any crypto or
   Redis (what the kernel and framework cost on this route); the same load on a bare Litestar POST endpoint
   that decodes the same JSON and answers a fixed body. Then, unless --open-rate 0, an open loop: a fixed rate
   (by default half of what ihanoi checked per second in the round's closed loop) offered to ihanoi and to bare
   litestar alike, latency counted from when each request was due (with 64 connections kept busy, a closed
   loop's latency is 64 / throughput: its p99 says more about capacity than about the tail). `ihanoi worker`
   runs throughout (its flush job writes the boardings to transit_tap); at the end every accepted boarding must
   be in transit_tap.
3. Raw verification: `credential.verify` with no caches on the same codes, one core, in this process.
4. Offline: `Validator.scan` (deny-lists, its own used-once memory, the tap log, the level-1 cache) on the
   same codes, against raw verification.

Goals (issue 11): online >= 0.5x the bare endpoint with p99 < 20 ms; offline >= 0.8x raw verification.
The server and the load generator share the machine's cores: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from benchmarks import common

SENIOR = "001050011111"


class Check(msgspec.Struct):
    """The gate's request, decoded by the bare endpoint as ihanoi decodes it."""

    code: str
    route_id: int
    vehicle: str = "gate"
  # born 1950: rides free, from the VNeID birth date


def serve_baseline(port: int) -> None:
    import uvicorn
    from litestar import Litestar, get, post

    answer = {"accepted": True, "ticket_id": 1, "rider_category": 2}

    @post("/v1/transit/validator/check", status_code=200)
    async def check(data: Check) -> dict:
        return answer

    @get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app = Litestar(route_handlers=[check, healthz], openapi_config=None, logging_config=None, debug=False)
    uvicorn.run(app, host=common.HOST, port=port, workers=1, log_config=None, access_log=False, lifespan="on")


def post_bytes(path: str, body: bytes, token: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _load(port: int, requests: list[bytes], connections: int, warmup: float, duration: float):
    """Like common's client, but each request is the next of `requests` (each code is sent once)."""
    tally = common._Tally()
    accepted = [0, 0]  # in the measured window, in all
    streams = await asyncio.gather(*(asyncio.open_connection(common.HOST, port) for _ in range(connections)))
    begin = time.perf_counter() + warmup
    end = begin + duration
    queue = iter(requests)

    async def loop(reader, writer) -> None:
        clock = time.perf_counter
        while True:
            started = clock()
            if started >= end:
                break
            request = next(queue, None)
            if request is None:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:") + len(b"\r\ncontent-length:")
            body = await reader.readexactly(int(lowered[at:lowered.index(b"\r\n", at)]))
            finished = clock()
            ok = b'"accepted":true' in body
            accepted[1] += ok
            if begin <= finished <= end:
                tally.latencies.append(finished - started)
                accepted[0] += ok
            if status != 200:
                tally.non_200 += 1
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(loop(r, w) for r, w in streams))
    tally.latencies.sort()
    exhausted = next(queue, None) is None
    return (len(tally.latencies), duration, common._percentile(tally.latencies, 0.5) * 1000,
            common._percentile(tally.latencies, 0.99) * 1000, tally.non_200, accepted[0], exhausted, accepted[1])


async def _open_load(port: int, requests: list[bytes], connections: int, warmup: float, duration: float,
                     offered: float):
    """Open loop: request i is due at start + i / offered, whatever the answers before it did, and goes out on the
    next free connection; its latency counts from when it was due (a wait for a free connection included), so a
    slow server cannot slow the load down and hide its own tail (no coordinated omission)."""
    latencies: list[float] = []
    non_200 = accepted = sent = 0
    streams = await asyncio.gather(*(asyncio.open_connection(common.HOST, port) for _ in range(connections)))
    free: asyncio.Queue = asyncio.Queue()
    for stream in streams:
        free.put_nowait(stream)
    clock = time.perf_counter
    start = clock()
    begin = start + warmup
    end = begin + duration
    queue = iter(requests)

    async def one(request: bytes, due: float) -> None:
        nonlocal non_200, accepted
        reader, writer = await free.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:") + len(b"\r\ncontent-length:")
        body = await reader.readexactly(int(lowered[at:lowered.index(b"\r\n", at)]))
        finished = clock()
        free.put_nowait((reader, writer))
        accepted += b'"accepted":true' in body  # all of them: each is a boarding the flush must write
        if begin <= due < end:
            latencies.append(finished - due)
        non_200 += int(head[9:12]) != 200

    tasks = []
    while True:
        now = clock()
        if now >= end:
            break
        due_count = int((now - start) * offered) + 1
        while sent < due_count:
            request = next(queue, None)
            if request is None:
                break
            tasks.append(asyncio.create_task(one(request, start + sent / offered)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / offered - clock()))
    await asyncio.gather(*tasks)
    for _, writer in streams:
        writer.close()
    latencies.sort()
    measured = sum(1 for i in range(sent) if begin <= start + i / offered < end)
    return (measured / duration, common._percentile(latencies, 0.5) * 1000, common._percentile(latencies, 0.99) * 1000,
            non_200, accepted, next(queue, None) is None)


def open_load(port: int, requests: list[bytes], offered: float, args) -> tuple:
    return common.run_in_child(_open_load, (port, requests, args.connections, args.warmup, args.duration, offered),
                               "bench-transit-open", "transit open-loop load generator",
                               args.warmup + args.duration + 60, uvloop=args.client_loop == "uvloop")


def load(port: int, requests: list[bytes], args) -> tuple:
    return common.run_in_child(_load, (port, requests, args.connections, args.warmup, args.duration),
                               "bench-transit-load", "transit load generator", args.warmup + args.duration + 60,
                               uvloop=args.client_loop == "uvloop")


def add_client(env: dict) -> tuple[str, object]:
    """A gate registered the way an operator registers one: `ihanoi clients add` with its public key."""
    from cryptography.hazmat.primitives import serialization

    from transit import credential

    client_key = credential.new_key()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(client_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    client_id = f"bench-gate-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run([*common.ihanoi_command(), "clients", "add", "--id", client_id, "--name", "Bench gate",
                        "--role", "transit_validator:hanoibus", "--public-key", f.name], env=env, check=True,
                       cwd=common.REPO, capture_output=True)
    finally:
        os.unlink(f.name)
    return client_id, client_key


async def prepare(base: str, client_id: str, client_key) -> tuple:
    """A senior's free pass with a registered phone key, and a validator's token."""
    import httpx
    import jwt

    from app.identity.devlogin import sign_in
    from transit import credential

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        signed = await sign_in(http, SENIOR)
        signed.raise_for_status()
        resident = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        bought = await http.post("/v1/transit/tickets", json={"product_id": "bus-monthly-network"},
                                 headers=resident | {"Idempotency-Key": uuid.uuid4().hex})
        bought.raise_for_status()
        phone = credential.new_key()
        device = await http.post("/v1/transit/devices", headers=resident, json={
            "public_key": base64.b64encode(credential.compressed(phone.public_key())).decode()})
        device.raise_for_status()
        got = await http.get(f"/v1/transit/tickets/{bought.json()['id']}/credential",
                             params={"device_id": device.json()["id"]}, headers=resident)
        got.raise_for_status()
        level1 = base64.b64decode(got.json()["level1"])

        now = int(time.time())
        assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": base + "/oauth/token", "iat": now,
                                "exp": now + 60, "jti": uuid.uuid4().hex}, client_key, algorithm="ES256")
        token = await http.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        token.raise_for_status()
        sync = await http.get("/v1/transit/validator/sync",
                              headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        sync.raise_for_status()
        return level1, phone, token.json()["access_token"], sync.json()


def raw_rate(codes: list[bytes], keys: dict, now: int, seconds: float = 2.0) -> float:
    from transit import credential

    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for code in codes[done % len(codes):done % len(codes) + 200]:
            credential.verify(code, keys, now, operator=1, route=102)
            done += 1
    return done / (time.perf_counter() - started)


def offline_rate(codes: list[bytes], sync_body: dict, now: int, seconds: float = 2.0,
                 memory_path: Path | None = None) -> tuple[float, int]:
    """Validator.scan on one core; with `memory_path`, as the CLI runs it: each accepted code kept in its file."""
    from transit import credential
    from transit.validator import SeenStore, Validator

    v = Validator(client_id="bench", private_key=None, base_url="", vehicle="29B-1", route_id=102,
                  memory=SeenStore(memory_path) if memory_path else None)
    v.operator_code = sync_body["operator_code"]
    v.keys = {k["key_id"]: credential.public_key(base64.b64decode(k["public_key"])) for k in sync_body["keys"]}
    v.policy = credential.Policy(sync_body["freshness_seconds"], sync_body["clock_skew_seconds"])
    done, ok, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds and done < len(codes):
        for code in codes[done:done + 200]:
            ok += v.scan(code, now=now)[0]
            done += 1
        v.log.clear()
    return done / (time.perf_counter() - started), ok


def run(args) -> int:
    from transit import credential

    cleanup: list = []
    try:
        admin_url, redis_url, origin = common.resolve_services(cleanup)
        name = f"ihanoi_bench_transit_{uuid.uuid4().hex[:8]}"
        common.create_database(admin_url, name)
        cleanup.append(lambda: common.drop_database(admin_url, name))
        database_url = common.with_database(admin_url, name)
        prefix = f"bench-transit-{uuid.uuid4().hex[:6]}:"
        cleanup.append(lambda: common.delete_redis_prefix(redis_url, prefix))
        workdir = Path(tempfile.mkdtemp(prefix="ihanoi-bench-transit-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "IHANOI_REDIS_PREFIX": prefix,
               "IHANOI_ENV": "dev", "IHANOI_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
               "IHANOI_DATA_DIR": str(workdir), "PYTHONPATH": str(common.REPO)}
        port = common.free_port()
        print(f"starting ihanoi serve on port {port} ...", flush=True)
        ihanoi = common.Server("ihanoi", [*common.ihanoi_command(), "serve", "--host", common.HOST, "--port",
                                          str(port), "--workers", "1"], env, workdir / "ihanoi.log")
        cleanup.append(ihanoi.stop)
        common.wait_until_ok(ihanoi, port, "/readyz", 90)
        base = f"http://{common.HOST}:{port}"
        client_id, client_key = add_client(env)
        level1, phone, token, sync_body = asyncio.run(prepare(base, client_id, client_key))
        keys = {k["key_id"]: credential.public_key(base64.b64decode(k["public_key"])) for k in sync_body["keys"]}

        bare_port = common.free_port()
        bare = common.Server("bare litestar", [sys.executable, "-m", "benchmarks.transit", "--baseline-server",
                                               str(bare_port)], {**os.environ, "PYTHONUNBUFFERED": "1"},
                             workdir / "bare.log")
        cleanup.append(bare.stop)
        common.wait_until_ok(bare, bare_port, "/healthz", 60)

        def fresh_codes(count: int) -> tuple[list[bytes], int]:
            now = int(time.time())
            return [credential.present(level1, phone, now) for _ in range(count)], now

        def requests_for(codes: list[bytes]) -> list[bytes]:
            return [post_bytes("/v1/transit/validator/check", json.dumps(
                {"code": base64.b64encode(c).decode(), "route_id": 102, "vehicle": "gate-1"}).encode(), token)
                for c in codes]

        worker = common.Server("ihanoi worker", [*common.ihanoi_command(), "worker"], env, workdir / "worker.log")
        cleanup.append(worker.stop)
        empty = post_bytes("/v1/transit/validator/check", b'{"code":"","route_id":102,"vehicle":"gate-1"}', token)
        rounds = []
        per_core: list[str] = []
        accepted_all = 0
        for number in range(1, args.rounds + 1):
            # alternating, so that what the other tenants of the machine do falls on both sides alike
            load_before = os.getloadavg()[0]
            print(f"round {number}: {args.codes} fresh codes to ihanoi, an empty code to ihanoi, the same requests "
                  f"to bare litestar (load average {load_before:.2f}) ...", flush=True)
            codes, _ = fresh_codes(args.codes)
            meter = common.CpuMeter({"ihanoi serve": ihanoi.pid, "ihanoi worker": worker.pid}, database=name).start()
            ours = load(port, requests_for(codes), args)
            meter.stop()
            per_core.append(meter.describe(ours[7], "accepted checks"))  # warm-up included on both sides
            accepted_all += ours[7]
            floor = load(port, [empty] * args.codes, args)
            codes, _ = fresh_codes(args.codes)
            baseline = load(bare_port, requests_for(codes), args)
            opened = None
            if args.open_rate > 0:
                # the same offered rate to both: a fraction of what ihanoi checked per second in this round
                offered = max(1.0, args.open_rate * ours[0] / ours[1])
                needed = int(offered * (args.warmup + args.duration)) + 100
                codes, _ = fresh_codes(needed)
                ours_open = open_load(port, requests_for(codes), offered, args)
                accepted_all += ours_open[4]
                codes, _ = fresh_codes(needed)
                opened = (offered, ours_open, open_load(bare_port, requests_for(codes), offered, args))
            rounds.append((ours, floor, baseline, load_before, os.getloadavg()[0], opened))
        written = asyncio.run(wait_for_boardings(database_url, accepted_all, 30))
        sample, now = fresh_codes(2000)
        raw = raw_rate(sample, keys, now)
        offline, offline_ok = offline_rate(sample, sync_body, now)
        offline_kept, _ = offline_rate(sample, sync_body, now, memory_path=workdir / "seen.log")
    finally:
        common.run_cleanup(cleanup)

    def rate(m) -> float:
        return m[0] / m[1]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print("\niHaNoi transit benchmark")
    print(f"  services   {origin}; ihanoi serve --workers 1 and ihanoi worker (flushes the boardings); "
          f"{args.connections} keep-alive connections, {args.warmup:g} s warm-up, {args.duration:g} s measured, "
          f"{args.rounds} alternating rounds; {args.client_loop} client; {os.cpu_count()} CPUs shared by all")
    failed = 0
    for number, (ours, floor, baseline, before, after, opened) in enumerate(rounds, 1):
        print(f"  round {number} (load average {before:.2f} -> {after:.2f})")
        for label, m in (("ihanoi check", ours), ("ihanoi, empty", floor), ("bare litestar", baseline)):
            print(f"    {label:<14} {rate(m):8.0f} req/s  p50 {m[2]:6.2f} ms  p99 {m[3]:6.2f} ms  non-200 {m[4]}  "
                  f"accepted {m[5]}" + ("  (ran out of codes: raise --codes)" if m[6] else ""))
            failed += m[4]
        print(f"    ratio online / bare {rate(ours) / rate(baseline):.2f}; empty / bare "
              f"{rate(floor) / rate(baseline):.2f}")
        print(f"    per core     {per_core[number - 1]}")
        if opened is not None:
            offered, mine, bare_open = opened
            print(f"    open loop at {offered:.0f} req/s offered ({args.open_rate:g} x this round's ihanoi capacity), "
                  "latency from when each request was due:")
            for label, m in (("ihanoi check", mine), ("bare litestar", bare_open)):
                print(f"      {label:<14} {m[0]:8.0f} req/s sent  p50 {m[1]:6.2f} ms  p99 {m[2]:7.2f} ms  "
                      f"non-200 {m[3]}" + ("  (ran out of codes)" if m[5] else ""))
                failed += m[3]
    online = [rate(r[0]) / rate(r[2]) for r in rounds]
    floors = [rate(r[1]) / rate(r[2]) for r in rounds]
    p99s = [r[0][3] for r in rounds]
    print(f"  raw verification (credential.verify, no caches, 1 core): {raw:8.0f} /s")
    print(f"  offline Validator.scan (1 core):                         {offline:8.0f} /s  ({offline_ok} accepted)")
    print(f"  offline, each accepted code kept in its file (as the CLI): {offline_kept:8.0f} /s")
    print(f"  ratio online / bare litestar, median of {len(rounds)}: {median(online):.2f} "
          f"(rounds {', '.join(f'{x:.2f}' for x in online)}; goal >= 0.5)")
    print(f"  online p99, median of {len(rounds)}: {median(p99s):.1f} ms "
          f"(rounds {', '.join(f'{x:.1f}' for x in p99s)}; goal < 20)")
    open_p99s = [r[5][1][2] for r in rounds if r[5] is not None]
    if open_p99s:
        print(f"  open-loop p99 at {args.open_rate:g} x capacity, median of {len(open_p99s)}: "
              f"{median(open_p99s):.1f} ms (rounds {', '.join(f'{x:.1f}' for x in open_p99s)}; bare at the same rate: "
              f"{', '.join(f'{r[5][2][2]:.1f}' for r in rounds if r[5] is not None)})")
    print(f"  ratio online (median round) / raw verification: {median([rate(r[0]) for r in rounds]) / raw:.2f}")
    print(f"  ratio ihanoi empty-code refusal / bare litestar, median: {median(floors):.2f} "
          "(the kernel's share: auth, inputs, observe)")
    print(f"  ratio offline / raw verification: {offline / raw:.2f}, with the file memory {offline_kept / raw:.2f} "
          "(goal >= 0.8)")
    print(f"  boardings in transit_tap after the worker's flush: {written} of {accepted_all} accepted")
    return 1 if failed or written != accepted_all else 0


async def wait_for_boardings(database_url: str, expected: int, timeout: float) -> int:
    """The worker's flush job writes every accepted boarding to transit_tap: wait for it (or the timeout)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            written = await conn.fetchval("SELECT count(*) FROM transit_tap WHERE accepted")
            if written >= expected or time.monotonic() > deadline:
                return written
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--codes", type=int, default=80000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the load generator's event loop (asyncio, the first version's, tops out near 3,000 "
                             "requests/s here: it bounded the bare endpoint's figure)")
    parser.add_argument("--open-rate", type=float, default=0.5,
                        help="also offer a fixed rate (open loop) to both servers each round: this fraction of the "
                             "round's closed-loop ihanoi checks per second (0: skip)")
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        serve_baseline(args.baseline_server)
        return 0
    return common.run_main(run, args, "servers stopped")


if __name__ == "__main__":
    sys.exit(main())
