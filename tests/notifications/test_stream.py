"""The live inbox stream across processes: a notification committed anywhere, expanded by the worker
process, reaches an app connected to another API process within a second; so does a city broadcast
for the residents of its area, as one event on a shared channel."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest

from app import db
from app.identity.devlogin import sign_in
from notifications import service
from tests.conftest import (
    EXTRA_MODULES,
    IHANOI,
    ROOT,
    free_port,
    next_event,
    process_env,
    stop_process,
    sync_redis_client,
)

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def server_and_worker(start_server, database_url, redis_url):
    """A real API process and a real worker on a Redis prefix of their own; yields (base URL, connection)."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {"IHANOI_PUBLIC_URL": f"http://127.0.0.1:{port}", "IHANOI_REDIS_PREFIX": prefix}
    base, _ = start_server(port=port, **env)
    worker = subprocess.Popen([*IHANOI, "worker"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: ASYNC220
                              env=process_env(DATABASE_URL=database_url, REDIS_URL=redis_url,
                                              IHANOI_EXTRA_MODULES=EXTRA_MODULES, **env))
    conn = await db.connect(database_url)
    watcher = sync_redis_client(redis_url)
    try:
        deadline = time.monotonic() + 30
        while not watcher.exists(prefix + "job-lease:notifications.expand"):  # the worker is up and polling
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
            await asyncio.sleep(0.02)
        yield base, conn
    finally:
        await conn.close()
        stop_process(worker)
        for key in watcher.scan_iter(prefix + "*"):
            watcher.delete(key)


async def test_inbox_stream_gets_new_items_within_a_second(start_server, database_url, redis_url):
    async with server_and_worker(start_server, database_url, redis_url) as (base, conn), \
            httpx.AsyncClient(base_url=base, timeout=10) as client:
        signed = await sign_in(client, "001301045678")
        assert signed.status_code == 200, signed.text
        token = signed.json()["access_token"]
        resident = jwt.decode(token, options={"verify_signature": False})["sub"]
        headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
        async with client.stream("GET", "/v1/notifications/stream", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            await next_event(lines, "ready")
            sent = time.monotonic()
            async with conn.transaction():  # another process commits a notification
                ids = await service.notify(conn, [resident], "account.welcome", {"name": "Châu"},
                                           category="account", idempotency_key=f"welcome-{uuid.uuid4()}")
            data = await next_event(lines, "notification")
            took = time.monotonic() - sent
    assert data["id"] == ids[0] and data["title"] == "Welcome to iHaNoi, Châu"
    assert took < 1.0, f"the stream took {took:.2f} s"
    print(f"\ninbox stream latency across processes: {took * 1000:.0f} ms")


async def test_a_broadcast_reaches_connected_apps_in_its_area(start_server, database_url, redis_url):
    async with server_and_worker(start_server, database_url, redis_url) as (base, conn), \
            httpx.AsyncClient(base_url=base, timeout=10) as client:
        tokens = {}
        for personal_id, ward in (("001085012345", "phuong-hoan-kiem"), ("001078056789", "phuong-ba-dinh")):
            signed = await sign_in(client, personal_id)
            assert signed.status_code == 200, signed.text
            tokens[ward] = {"Authorization": f"Bearer {signed.json()['access_token']}"}
            saved = await client.put("/v1/notifications/preferences", json={"push": {}, "home_unit": ward},
                                    headers=tokens[ward])
            assert saved.status_code == 200, saved.text
        creator = jwt.decode(tokens["phuong-hoan-kiem"]["Authorization"][7:], options={"verify_signature": False})
        async with client.stream("GET", "/v1/notifications/stream", headers=tokens["phuong-hoan-kiem"]) as inside, \
                client.stream("GET", "/v1/notifications/stream", headers=tokens["phuong-ba-dinh"]) as outside:
            inside_lines, outside_lines = inside.aiter_lines(), outside.aiter_lines()
            await next_event(inside_lines, "ready")
            await next_event(outside_lines, "ready")
            sent = time.monotonic()
            broadcast_id = await conn.fetchval(
                "INSERT INTO broadcast (created_by, idempotency_key, target_unit, urgency, title_vi, body_vi, "
                "title_en, body_en, status, scheduled_at) VALUES ($1, $2, 'phuong-hoan-kiem', 'normal', 'Cắt nước', "
                "'Cắt nước 8h-11h', 'Water cut', 'No water 8-11am', 'scheduled', now()) RETURNING id",
                uuid.UUID(creator["sub"]), uuid.uuid4().hex)
            data = await next_event(inside_lines, "broadcast")
            took = time.monotonic() - sent
            # the other ward's app hears nothing (a keep-alive at most) within the same time
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(next_event(outside_lines, "broadcast"), 1.5)
    assert data["broadcast_id"] == broadcast_id and data["title"] == "Cắt nước"
    assert took < 1.0, f"the broadcast took {took:.2f} s to reach the stream"
    print(f"\nbroadcast stream latency across processes: {took * 1000:.0f} ms")
