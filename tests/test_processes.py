"""End to end: the real `ihanoi` processes, the embedded default, shutdown, several processes."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from app.identity.devlogin import sign_in
from tests.conftest import (
    EXTRA_MODULES,
    IHANOI,
    ROOT,
    free_port,
    process_env,
    process_log,
    stop_process,
    sync_redis_client,
    wait_ready,
)

pytestmark = pytest.mark.e2e


def processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention `folder` (an embedded server left behind)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if str(folder) in line and state != "Z":
            found.append(f"{pid}: {line}")
    return found


def start_dev(data_dir: Path, port: int, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """`ihanoi dev` with its output in `log` (kept as `proc.log_path`: wait_ready shows it if the start fails)."""
    values = {"IHANOI_DATA_DIR": str(data_dir), "IHANOI_EXTRA_MODULES": EXTRA_MODULES, "IHANOI_ENV": "dev"}
    values.update(env)
    with open(log, "wb") as out:
        proc = subprocess.Popen([*IHANOI, "dev", "--port", str(port), *args], cwd=ROOT, env=process_env(**values),
                                stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log
    return proc


def test_dev_on_the_embedded_default_starts_keeps_data_and_stops_clean(embedded_data_dir, tmp_path):
    data_dir = embedded_data_dir
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    timings = {}

    proc = start_dev(data_dir, port, tmp_path / "dev1.log")
    try:
        timings["cold start"] = wait_ready(base, proc)
        created = httpx.post(base + "/v1/fixture/items", json={"name": "bãi xe Hoàn Kiếm", "quantity": 7})
        assert created.status_code == 201, created.text
        item_id = created.json()["id"]
        redis_port = int((data_dir / "redis" / "server.state").read_text().split()[1])
        sync_redis.Redis(port=redis_port).set("ihanoi:e2e:kept", "yes")
        assert processes_using(data_dir), "embedded servers should be running"
    finally:
        # the stop is mostly the embedded PostgreSQL's shutdown checkpoint of a cluster just initialised and
        # migrated: measured 9-15 s at load average 10-13 on 2 cores (the worker's stop took 0.6 s of that)
        timings["stop"] = stop_process(proc, timeout=40)
    log = (tmp_path / "dev1.log").read_text()
    assert proc.returncode == 0, log
    assert timings["stop"] < 30, (timings, log)
    assert "embedded PostgreSQL and Redis ready" in log and "embedded services stopped" in log, log
    assert processes_using(data_dir) == [], "no embedded server may outlive `ihanoi dev`"

    proc = start_dev(data_dir, port, tmp_path / "dev2.log")
    try:
        timings["warm start"] = wait_ready(base, proc)
        assert httpx.get(f"{base}/v1/fixture/items/{item_id}").json()["name"] == "bãi xe Hoàn Kiếm"
        redis_port = int((data_dir / "redis" / "server.state").read_text().split()[1])
        assert sync_redis.Redis(port=redis_port).get("ihanoi:e2e:kept") == b"yes"
    finally:
        stop_process(proc, timeout=40)
    assert proc.returncode == 0, process_log(proc)
    assert processes_using(data_dir) == []
    print("\nihanoi dev timings (s):", {k: round(v, 2) for k, v in timings.items()})


async def test_dev_with_urls_set_starts_no_embedded_server(tmp_path, databases, redis_url):
    # a database of its own, which dev migrates and seeds: the demo's grants (Trần Thị Bình's transit_operator)
    # would otherwise be committed to the run's database under tests that sign her in later
    database_url = await databases.create("dev_urls")
    data_dir = tmp_path / "data"
    port = free_port()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    proc = start_dev(data_dir, port, tmp_path / "dev.log", DATABASE_URL=database_url, REDIS_URL=redis_url,
                     IHANOI_REDIS_PREFIX=prefix)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert processes_using(data_dir) == []
        assert not (data_dir / "postgres").exists() and not (data_dir / "redis").exists()
    finally:
        stop_process(proc)
    log = (tmp_path / "dev.log").read_text()
    assert "embedded" not in log
    assert "iHaNoi API ready" in log and f"http://127.0.0.1:{port}/schema" in log


async def test_dev_runs_the_worker_so_a_notification_reaches_the_fcm_stand_in(tmp_path, databases, redis_url):
    """`ihanoi dev` runs the jobs too: the outbox is expanded and the push sent to dev's own FCM stand-in.

    On a database of its own, which dev migrates: its worker runs every job and commits what it does (a sent
    delivery, among others), which tests counting the run's database would otherwise see."""
    database_url = await databases.create("dev_worker")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    proc = start_dev(tmp_path / "data", port, tmp_path / "dev.log", "--no-seed", DATABASE_URL=database_url,
                     REDIS_URL=redis_url, IHANOI_REDIS_PREFIX=prefix)
    client = sync_redis_client(redis_url)
    fcm_token = f"dev-e2e-{uuid.uuid4().hex}"
    try:
        wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            # a resident no other test signs in (real processes commit to the run's database)
            signed = await sign_in(http, f"001086{secrets.randbelow(10**6):06d}")
            assert signed.status_code == 200, signed.text
            headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
            device = await http.put("/v1/notifications/devices", headers=headers, json={
                "fcm_token": fcm_token, "platform": "android", "app_version": "3.2.1"})
            assert device.status_code == 200, device.text
            item = (await http.post("/v1/fixture/items", json={"name": f"áo mưa {fcm_token[-6:]}", "quantity": 1}))
            told = await http.post(f"/v1/fixture/items/{item.json()['id']}/restocked",
                                   headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
            assert told.status_code == 200 and told.json() == {"notified": 1}, told.text
            deadline = time.monotonic() + 30
            while (await http.get("/stand-in/fcm/_control/messages", params={"token": fcm_token})).json()[
                    "count"] < 1:
                assert time.monotonic() < deadline, f"no push reached the stand-in\n{process_log(proc)}"
                await asyncio.sleep(0.2)
        assert int(client.get(prefix + "fixture:ticks") or 0) >= 1  # the test module's job ran as well
    finally:
        took = stop_process(proc)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    log = process_log(proc)
    assert proc.returncode == 0, log
    assert took < 10, (took, log)
    worker_line = log.split("  worker     ", 1)[1].splitlines()[0]
    assert "in this process" in worker_line and "notifications.send" in worker_line and "fixture.tick" in worker_line
    assert "worker stopped; runs:" in log


def test_serve_refuses_without_urls(tmp_path):
    result = subprocess.run([*IHANOI, "serve"], cwd=ROOT, env=process_env(IHANOI_DATA_DIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "needs DATABASE_URL and REDIS_URL" in result.stderr
    assert not any(tmp_path.iterdir())


def test_sigterm_lets_the_request_in_flight_finish(start_server):
    base, proc = start_server()
    answers = {}

    def slow_call() -> None:
        answers["slow"] = httpx.get(base + "/v1/fixture/slow?ms=1500", timeout=10)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    caller.join(15)
    assert proc.wait(10) == 0
    assert answers["slow"].status_code == 200
    assert answers["slow"].json() == {"slept_ms": 1500}
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=2)


def test_two_worker_processes_share_metrics(start_server):
    base, proc = start_server("--workers", "2")
    pids = set()
    with httpx.Client(base_url=base, timeout=5) as client:
        for _ in range(40):
            # new connections so that both processes take some
            response = httpx.get(base + "/v1/modules", headers={"Connection": "close"}, timeout=5)
            assert response.status_code == 200
        metrics = client.get("/metrics").text
        del pids
    served = sum(
        float(m.group(1))
        for m in re.finditer(r'http_requests_total\{method="GET",route="/v1/modules",status="200"\} (\S+)', metrics)
    )
    assert served == 40, metrics[:2000]
    assert "http_request_duration_seconds_bucket" in metrics
    assert "db_pool_connections_in_use" in metrics


def test_worker_runs_module_jobs_until_sigterm(database_url, redis_url, tmp_path):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_REDIS_PREFIX=prefix,
                      IHANOI_EXTRA_MODULES=EXTRA_MODULES)
    proc = subprocess.Popen([*IHANOI, "worker"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client = sync_redis_client(redis_url)
    try:
        # 60 s as wait_ready gives a server: a cold `ihanoi worker` imports every module first, which took over 20 s
        # (the old bound) on this 2-core machine at load average 13
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and int(client.get(prefix + "fixture:ticks") or 0) < 3:
            time.sleep(0.1)
        assert int(client.get(prefix + "fixture:ticks") or 0) >= 3
    finally:
        took = stop_process(proc)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    output = proc.stdout.read()
    assert proc.returncode == 0, output
    assert took < 10, output
    assert "fixture.tick" in output.split("worker: ", 1)[1].splitlines()[0]
    assert "worker stopped" in output
