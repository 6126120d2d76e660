"""A city broadcast to N registered devices through the FCM stand-in, against the stand-in's own raw intake rate.

    .venv/bin/python -m benchmarks.broadcast [--devices 1000000] [--target phuong-hoan-kiem|hanoi] [--timeout 3600]

1. Creates a throw-away database on the PostgreSQL server (BENCH_DATABASE_URL, else DATABASE_URL, else the local
   default below; Redis from BENCH_REDIS_URL / REDIS_URL, else the local default), applies the migrations with
   `ihanoi migrate`, and seeds N residents with one active device each, all living in the target ward (set-based
   SQL in chunks; not part of the measurement). Then one scheduled, normal-urgency broadcast, due now.
2. Starts the FCM stand-in alone (`uvicorn --factory notifications.fcm_stand_in:create_app`, one process) and
   measures its raw intake: 64 keep-alive connections POSTing small valid `messages:send` bodies for a few seconds,
   from a raw-socket client in a process of its own. That is the ceiling any sender can reach on this machine.
3. Starts one `ihanoi worker` against the stand-in and times it, from its start until the stand-in has accepted N
   messages (and the database records N deliveries 'sent'): fan-out (inbox and delivery rows written, broadcast
   'done') and push are reported separately, with the worker's peak memory (VmHWM) and CPU time. The rate and CPU
   per message are also given from the first message accepted on, without the worker's start-up.

Exits 1 if any device did not get exactly one message or the database disagrees, 130 on Ctrl-C. Everything it
starts is stopped, and the database and Redis keys it made are dropped, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import (
    HOST,  # every socket this script opens or serves is on the loopback interface
    REPO,
    BenchError,
    CpuMeter,
    Server,
    create_database,
    delete_redis_prefix,
    drop_database,
    free_port,
    given_services,
    http_request,
    ihanoi_command,
    run_cleanup,
    run_in_child,
    run_main,
    safe_url,
    version,
    with_database,
)

SEED_CHUNK = 100_000
STOP_GRACE = 30.0  # seconds a process gets after SIGTERM before SIGKILL
PROGRESS_EVERY = 10.0
POLL_EVERY = 0.25
STALL_AFTER = 30.0  # seconds without a new message after the fan-out before the deliveries are looked at
RAW_CONNECTIONS = 64
RAW_PATH = "/v1/projects/p/messages:send"
TEXTS = {"title_vi": "Thông báo cắt nước", "body_vi": "Phường Hoàn Kiếm cắt nước 8h-12h ngày mai",
         "title_en": "Water cut", "body_en": "Hoan Kiem ward: no water 8am-12pm tomorrow"}


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class ProcSample:
    rss_kb: int = 0
    hwm_kb: int = 0
    cpu_s: float = 0.0


def sample_proc(pid: int, into: ProcSample) -> None:
    """Memory (VmRSS, VmHWM = peak RSS) and CPU time (user + system) of a live process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return  # gone: keep the last sample
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            into.rss_kb = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            into.hwm_kb = max(into.hwm_kb, int(line.split()[1]))
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime, stime are fields 14, 15
    into.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_call(port: int, method: str, path: str, timeout: float = 10.0) -> dict:
    status, body = http_request(port, path, timeout=timeout, method=method)
    if status != 200:
        raise BenchError(f"{method} {path}: HTTP {status} {body[:200]!r}")
    return json.loads(body)


def wait_for_stand_in(stand_in: Server, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stand_in.alive():
            raise BenchError(f"the FCM stand-in exited with {stand_in.proc.returncode}:\n{stand_in.log_tail()}")
        with contextlib.suppress(OSError):
            http_call(port, "GET", "/_control/stats", timeout=2.0)
            return
        time.sleep(0.1)
    raise BenchError(f"the FCM stand-in did not answer within {timeout:.0f}s:\n{stand_in.log_tail()}")


def base_env(**values: str) -> dict[str, str]:
    """This environment without any IHANOI_* setting of the caller's, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IHANOI_", "BENCH_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


# --------------------------------------------------------------------------------------------------
# The stand-in's raw intake: a raw-socket keep-alive client POSTing small valid messages (own process)


async def _raw_connection(port: int, index: int, begin: float, end: float, tally: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    clock = time.perf_counter
    n = 0
    try:
        while clock() < end:
            body = b'{"message":{"token":"raw-%d-%d","notification":{"title":"t","body":"b"}}}' % (index, n)
            n += 1
            writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (RAW_PATH.encode(), len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            lowered = head.lower()
            at = lowered.index(b"\r\ncontent-length:") + len(b"\r\ncontent-length:")
            length = int(lowered[at:lowered.index(b"\r\n", at)])
            if length:
                await reader.readexactly(length)
            finished = clock()
            if int(head[9:12]) != 200:
                tally["non_200"] += 1
            elif begin <= finished <= end:
                tally["ok"] += 1
    finally:
        writer.close()


async def _raw_load(port: int, connections: int, warmup: float, duration: float) -> dict:
    tally = {"ok": 0, "non_200": 0}
    start = time.perf_counter()
    cpu_started = time.process_time()
    begin = start + warmup
    end = begin + duration
    results = await asyncio.wait_for(
        asyncio.gather(*(_raw_connection(port, i, begin, end, tally) for i in range(connections)),
                       return_exceptions=True),
        timeout=warmup + duration + 30,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    tally["errors"] = len(errors)
    tally["first_error"] = f"{type(errors[0]).__name__}: {errors[0]}" if errors else None
    tally["client_cpu"] = (time.process_time() - cpu_started) / (time.perf_counter() - start)
    tally["seconds"] = duration
    return tally


def measure_raw_intake(port: int, connections: int, warmup: float, duration: float) -> dict:
    """The raw-socket client in a process of its own (fork), on uvloop if there is one."""
    payload = run_in_child(_raw_load, (port, connections, warmup, duration), "bench-raw-intake",
                           "the raw-intake load generator", warmup + duration + 60, uvloop=True)
    if payload["errors"] or payload["non_200"]:
        raise BenchError(f"raw intake: {payload['non_200']} non-200 answers, {payload['errors']} broken "
                         f"connections (first: {payload['first_error']})")
    return payload


# --------------------------------------------------------------------------------------------------
# Database


async def seed(database_url: str, devices: int, target: str, deadline: float) -> tuple[int, float]:
    """N residents, one active device each, all in `target`; then the broadcast. Returns (broadcast id, seconds)."""
    from app import db
    from notifications import store

    started = time.monotonic()
    conn = await db.connect(database_url)
    try:
        # A resident and its device and setting per n, in one statement per chunk. The volatile CTE is
        # materialised once; the foreign keys are checked at the end of the statement.
        statement = """
            WITH src AS (
                SELECT n, gen_random_uuid() AS id FROM generate_series($1::int, $2::int) AS n
            ), residents AS (
                INSERT INTO resident (id, personal_id_hash, personal_id_enc)
                SELECT id, decode(md5('bench-' || n), 'hex'), '\\x00'::bytea FROM src
            ), devices AS (
                INSERT INTO notification_device (id, resident_id, fcm_token, platform, locale, app_version)
                SELECT gen_random_uuid(), id, 'bench-' || n || '-' || md5(id::text),
                       CASE WHEN n % 3 = 0 THEN 'ios' ELSE 'android' END,
                       CASE WHEN n % 10 = 0 THEN 'en' ELSE 'vi' END, '3.2.1'
                FROM src
            )
            INSERT INTO notification_setting (resident_id, home_unit) SELECT id, $3 FROM src
        """
        home_unit = "phuong-hoan-kiem" if target == "hanoi" else target
        for low in range(1, devices + 1, SEED_CHUNK):
            if time.monotonic() > deadline:
                raise BenchError("--timeout reached while seeding")
            high = min(devices, low + SEED_CHUNK - 1)
            await conn.execute(statement, low, high, home_unit, timeout=max(1.0, deadline - time.monotonic()))
            print(f"  seeded {high:,}/{devices:,} residents and devices ({time.monotonic() - started:.1f} s)",
                  flush=True)
        # What autovacuum would have done by the time a real city has a million devices.
        await conn.execute("ANALYZE", timeout=max(1.0, deadline - time.monotonic()))
        created_by = await conn.fetchval("SELECT id FROM resident ORDER BY id LIMIT 1")
        row, _ = await store.insert_broadcast(
            conn, created_by=created_by, idempotency_key=uuid.uuid4().hex, target_unit=target, urgency="normal",
            texts=TEXTS, deep_link=None, status="scheduled", scheduled_at=await conn.fetchval("SELECT now()"))
        return row["id"], time.monotonic() - started
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# The measured broadcast


@dataclass
class Result:
    first_accept_s: float | None = None
    first_accept_cpu_s: float = 0.0  # the worker's CPU time then: its start-up (imports, connections) until then
    fan_out_s: float | None = None
    accepted_s: float | None = None  # the stand-in has accepted N
    recorded_s: float | None = None  # the database records N deliveries sent
    deliveries: dict | None = None  # the broadcast's maintained counts (what GET /v1/broadcasts/{id} shows)
    counted: dict | None = None  # the same counted from the delivery rows, once at the end
    stats: dict | None = None


async def run_broadcast(args, database_url: str, worker: Server, stand_in: Server, stand_in_port: int,
                        broadcast_id: int, started: float, deadline: float, worker_mem: ProcSample,
                        stand_in_mem: ProcSample) -> Result:
    from app import db
    from notifications import store

    n = args.devices
    result = Result()
    conn = await db.connect(database_url)
    try:
        last_report, last_accepted = started, 0
        last_seen, last_change = 0, started
        while True:
            now = time.monotonic()
            elapsed = now - started
            if now > deadline:
                raise BenchError(f"--timeout reached after {elapsed:.0f}s of broadcast: {result.stats}")
            if not worker.alive():
                raise BenchError(f"the worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
            if not stand_in.alive():
                raise BenchError(f"the stand-in exited with {stand_in.proc.returncode}:\n{stand_in.log_tail()}")
            sample_proc(worker.pid, worker_mem)
            sample_proc(stand_in.pid, stand_in_mem)
            stats = await asyncio.to_thread(http_call, stand_in_port, "GET", "/_control/stats")
            result.stats = stats
            accepted = stats["accepted"]
            if accepted and result.first_accept_s is None:
                result.first_accept_s = elapsed
                result.first_accept_cpu_s = worker_mem.cpu_s
            if result.fan_out_s is None:
                status = await conn.fetchval("SELECT status FROM broadcast WHERE id = $1", broadcast_id)
                if status == "done":
                    result.fan_out_s = elapsed
            if accepted >= n and result.accepted_s is None:
                result.accepted_s = elapsed
            if accepted != last_seen:
                last_seen, last_change = accepted, now
            # The broadcast's maintained counts (one row), once the stand-in has everything (the worker records a
            # batch after the stand-in has answered all of it), or when nothing has moved for a while after the
            # fan-out (then the run ends here and the checks below say what is missing). At the end the delivery
            # rows are also counted one by one (a scan of all of them), which must agree.
            stalled = result.fan_out_s is not None and now - last_change > STALL_AFTER
            if result.accepted_s is not None or stalled:
                counts = await store.broadcast_delivery_counts(conn, broadcast_id)
                unfinished = counts.get("pending", 0) + counts.get("sending", 0)
                if counts.get("sent", 0) >= n or (stalled and not unfinished):
                    result.recorded_s = elapsed
                    result.deliveries = counts
                    result.counted = await store.broadcast_delivery_counts_exact(conn, broadcast_id, timeout=600)
                    return result
                if stalled:
                    last_change = now  # deliveries still due (a retry, a lease): give them another while
            if now - last_report >= PROGRESS_EVERY:
                rate = (accepted - last_accepted) / (now - last_report)
                phase = "pushing" if result.fan_out_s is not None else "fanning out and pushing"
                print(f"  {elapsed:6.1f} s  accepted {accepted:>9,}/{n:,}  {rate:>7,.0f} msg/s now, "
                      f"{accepted / elapsed:>7,.0f} overall  worker RSS {worker_mem.rss_kb / 1024:,.0f} MB  "
                      f"({phase})", flush=True)
                last_report, last_accepted = now, accepted
            await asyncio.sleep(POLL_EVERY)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000, help="registered devices (one per resident)")
    parser.add_argument("--target", default="phuong-hoan-kiem",
                        help="the broadcast's target unit: a ward, or `hanoi` for the whole city")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the whole run may take")
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="seconds the stand-in's raw intake is measured")
    parser.add_argument("--fcm-concurrency", type=int, default=None,
                        help="IHANOI_FCM_CONCURRENCY for the worker (default: the worker's own default)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database (to look at it)")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.timeout <= 0 or args.raw_seconds <= 0:
        parser.error("--devices must be >= 1, --timeout and --raw-seconds > 0")
    if args.fcm_concurrency is not None and args.fcm_concurrency < 1:
        parser.error("--fcm-concurrency must be >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    import redis as sync_redis

    begun = time.monotonic()
    deadline = begun + args.timeout
    server_url, redis_url = given_services()
    for url in (server_url, redis_url):
        if urlsplit(url).hostname not in (HOST, "localhost"):
            raise BenchError(f"{safe_url(url)}: this benchmark only talks to {HOST}")
    db_name = f"ihanoi_bench_{secrets.token_hex(6)}"
    database_url = with_database(server_url, db_name)
    prefix = f"bench:{secrets.token_hex(6)}:"
    master_key = b64encode(secrets.token_bytes(32)).decode()
    app_env = base_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_ENV="test",
                       IHANOI_MASTER_KEY=master_key, IHANOI_REDIS_PREFIX=prefix, IHANOI_LOG_LEVEL="WARNING")
    cleanup: list = []
    worker_mem, stand_in_mem = ProcSample(), ProcSample()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="ihanoi-bench-broadcast-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))

        create_database(server_url, db_name, timeout=60)
        if not args.keep_database:
            cleanup.append(lambda: drop_database(server_url, db_name, timeout=60))
        else:
            cleanup.append(lambda: print(f"kept database {safe_url(database_url)}", file=sys.stderr))

        cleanup.append(lambda: delete_redis_prefix(redis_url, prefix))

        print(f"database {safe_url(database_url)}: migrating ...", flush=True)
        try:
            done = subprocess.run([*ihanoi_command(), "migrate"], cwd=REPO, env=app_env, capture_output=True,
                                  text=True, timeout=max(1.0, min(300.0, deadline - time.monotonic())), check=False)
        except subprocess.TimeoutExpired:
            raise BenchError("`ihanoi migrate` did not finish in time") from None
        if done.returncode != 0:
            raise BenchError(f"`ihanoi migrate` failed ({done.returncode}):\n{done.stdout}{done.stderr}")

        print(f"seeding {args.devices:,} residents with one device each (home unit of all: "
              f"{'phuong-hoan-kiem' if args.target == 'hanoi' else args.target}) ...", flush=True)
        broadcast_id, seed_seconds = asyncio.run(seed(database_url, args.devices, args.target, deadline))

        stand_in_port = free_port()
        print(f"starting the FCM stand-in on port {stand_in_port} ...", flush=True)
        stand_in = Server(
            "fcm stand-in",
            [sys.executable, "-m", "uvicorn", "--factory", "notifications.fcm_stand_in:create_app", "--host", HOST,
             "--port", str(stand_in_port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
            base_env(), workdir / "stand-in.log", stop_grace=STOP_GRACE,
        )
        cleanup.append(stand_in.stop)
        wait_for_stand_in(stand_in, stand_in_port)

        print(f"measuring the stand-in's raw intake ({RAW_CONNECTIONS} connections, 1 s warm-up + "
              f"{args.raw_seconds:g} s) ...", flush=True)
        raw = measure_raw_intake(stand_in_port, RAW_CONNECTIONS, 1.0, args.raw_seconds)
        raw_rate = raw["ok"] / raw["seconds"]
        http_call(stand_in_port, "POST", "/_control/reset")
        sample_proc(stand_in.pid, stand_in_mem)
        stand_in_cpu_before = stand_in_mem.cpu_s

        print(f"starting `ihanoi worker` (broadcast {broadcast_id} to {args.target}) ...", flush=True)
        pg_meter = CpuMeter(database=db_name).start()  # the database's backends: fan-out, claims, records
        started = time.monotonic()
        worker_env = {**app_env, "IHANOI_FCM_ENDPOINT": f"http://{HOST}:{stand_in_port}"}
        if args.fcm_concurrency is not None:
            worker_env["IHANOI_FCM_CONCURRENCY"] = str(args.fcm_concurrency)
        worker = Server("worker", [*ihanoi_command(), "worker"], worker_env, workdir / "worker.log",
                        stop_grace=STOP_GRACE)
        cleanup.append(worker.stop)
        result = asyncio.run(run_broadcast(args, database_url, worker, stand_in, stand_in_port, broadcast_id,
                                           started, deadline, worker_mem, stand_in_mem))
        sample_proc(worker.pid, worker_mem)
        sample_proc(stand_in.pid, stand_in_mem)
        pg_meter.stop()
        stats = http_call(stand_in_port, "GET", "/_control/stats")
        pg_version = _pg_version(database_url)
        redis_version = sync_redis.Redis.from_url(redis_url).info("server").get("redis_version", "?")
    finally:
        run_cleanup(cleanup)  # a second Ctrl-C must not skip the cleanup

    n = args.devices
    push_s = result.accepted_s or 0.0
    rate = n / push_s if push_s else 0.0
    fan_out = f"{result.fan_out_s:.1f} s" if result.fan_out_s is not None else "not seen (finished with the push)"
    after_fan_out = (f"{n / (push_s - result.fan_out_s):,.0f} msg/s" if result.fan_out_s is not None
                     and push_s > result.fan_out_s else "n/a")
    # From the first message accepted to the last: the sending itself, without the worker's start-up (the
    # overall rate above counts it: about 2-4 s of imports and connections, a large share of a short run).
    first = result.first_accept_s or 0.0
    sending_rate = n / (push_s - first) if push_s > first else 0.0
    sending_cpu = worker_mem.cpu_s - result.first_accept_cpu_s
    print("\niHaNoi broadcast benchmark")
    print(f"  devices          {n:,} (one active device per resident), target {args.target}, urgency normal, "
          f"FCM requests in flight: {args.fcm_concurrency or 'the default'}")
    print(f"  seeding          {seed_seconds:.1f} s (set-based SQL in chunks of {SEED_CHUNK:,}, then ANALYZE; "
          "not measured)")
    print(f"  first message    {result.first_accept_s:.1f} s after the worker was started (start-up included)")
    print(f"  fan-out          {fan_out} (inbox and delivery rows written, broadcast 'done')")
    print(f"  push total       {push_s:.1f} s from worker start to the stand-in accepting all {n:,}; "
          f"{result.recorded_s:.1f} s until the database recorded them")
    print(f"  throughput       {rate:,.0f} msg/s overall; after the fan-out: {after_fan_out}")
    print(f"  stand-in intake  {raw_rate:,.0f} msg/s raw ({RAW_CONNECTIONS} keep-alive connections, "
          f"{args.raw_seconds:g} s, client used {raw['client_cpu']:.0%} of a core)")
    print(f"  sending          {sending_rate:,.0f} msg/s from the first message accepted to the last")
    print(f"  ratio            {rate / raw_rate:.2f} of the stand-in's raw intake overall, "
          f"{sending_rate / raw_rate:.2f} from the first message" if raw_rate else "  ratio n/a")
    print(f"  worker           peak RSS (VmHWM) {worker_mem.hwm_kb / 1024:,.0f} MB, last RSS "
          f"{worker_mem.rss_kb / 1024:,.0f} MB, CPU {worker_mem.cpu_s:.1f} s "
          f"({worker_mem.cpu_s / result.recorded_s:.0%} of a core, {worker_mem.cpu_s / n * 1000:.2f} ms a message; "
          f"{sending_cpu / n * 1000:.2f} ms a message after the start-up)"
          if result.recorded_s else "")
    pg_cpu = pg_meter.seconds.get("postgresql", 0.0)
    print(f"  per core         {n / sending_cpu:,.0f} msg/s per worker core after the start-up "
          f"({n / worker_mem.cpu_s:,.0f} with it); {n / pg_cpu:,.0f} msg/s per PostgreSQL core (fan-out included: "
          f"{pg_cpu:.1f} s of its backends' CPU); load average {os.getloadavg()[0]:.2f}"
          if sending_cpu > 0 and pg_cpu > 0 else "  per core         n/a")
    print(f"  stand-in         peak RSS {stand_in_mem.hwm_kb / 1024:,.0f} MB, CPU during the broadcast "
          f"{stand_in_mem.cpu_s - stand_in_cpu_before:.1f} s")
    print(f"  stand-in stats   accepted {stats['accepted']:,}, distinct targets {stats['distinct_targets']:,}, "
          f"max per target {stats['max_per_target']}, answers {stats['answers']}")
    print(f"  database         deliveries {result.deliveries} (maintained counts); counted from the rows: "
          f"{result.counted}")
    print(f"  versions         Python {platform.python_version()}, firebase-admin {version('firebase-admin')}, "
          f"httptools {version('httptools')}, asyncpg {version('asyncpg')}, uvicorn {version('uvicorn')}, "
          f"Litestar {version('litestar')}, PostgreSQL {pg_version}, Redis {redis_version}")
    print(f"  machine          {os.cpu_count()} CPUs shared by the worker, PostgreSQL, Redis and the stand-in "
          "(and this script's polling): compare the ratio, not the absolute figures")

    problems = []
    if stats["distinct_targets"] != n:
        problems.append(f"the stand-in saw {stats['distinct_targets']:,} distinct devices, not {n:,}")
    if stats["max_per_target"] != 1:
        problems.append(f"some device got {stats['max_per_target']} messages")
    if (result.deliveries or {}).get("sent", 0) != n:
        problems.append(f"the database records {result.deliveries} deliveries, not {n:,} sent")
    if result.counted != result.deliveries:
        problems.append(f"the broadcast's maintained counts {result.deliveries} differ from the delivery rows "
                        f"{result.counted}")
    if problems:
        print("\nFAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def _pg_version(database_url: str) -> str:
    async def fetch() -> str:
        import asyncpg

        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    return asyncio.run(fetch()).split()[0]


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv), "processes stopped, database dropped")


if __name__ == "__main__":
    sys.exit(main())
