"""The live inbox stream across processes: a notification committed anywhere, expanded by the worker
process, reaches an app connected to another API process within a second."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import httpx
import jwt
import pytest
import redis as sync_redis

from app import db
from app.identity.devlogin import sign_in
from notifications import service
from tests.conftest import EXTRA_MODULES, IHANOI, ROOT, free_port, process_env, stop_process

pytestmark = pytest.mark.e2e


async def test_inbox_stream_gets_new_items_within_a_second(start_server, database_url, redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {"IHANOI_PUBLIC_URL": f"http://127.0.0.1:{port}", "IHANOI_REDIS_PREFIX": prefix}
    base, _ = start_server(port=port, **env)
    worker = subprocess.Popen([*IHANOI, "worker"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: ASYNC220
                              env=process_env(DATABASE_URL=database_url, REDIS_URL=redis_url,
                                              IHANOI_EXTRA_MODULES=EXTRA_MODULES, **env))
    conn = await db.connect(database_url)
    watcher = sync_redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while not watcher.exists(prefix + "job-lease:notifications.expand"):  # the worker is up and polling
        assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            signed = await sign_in(client, "001301045678")
            assert signed.status_code == 200, signed.text
            token = signed.json()["access_token"]
            resident = jwt.decode(token, options={"verify_signature": False})["sub"]
            headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
            async with client.stream("GET", "/v1/notifications/stream", headers=headers) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                while (await anext(lines)) != "event: ready":
                    pass
                sent = time.monotonic()
                async with conn.transaction():  # another process commits a notification
                    ids = await service.notify(conn, [resident], "account.welcome", {"name": "Châu"},
                                               category="account", idempotency_key=f"welcome-{uuid.uuid4()}")
                event = data = None
                while data is None:
                    line = await asyncio.wait_for(anext(lines), 5)
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "notification":
                        data = json.loads(line.split(":", 1)[1])
                took = time.monotonic() - sent
        assert data["id"] == ids[0] and data["title"] == "Welcome to iHaNoi, Châu"
        assert took < 1.0, f"the stream took {took:.2f} s"
        print(f"\ninbox stream latency across processes: {took * 1000:.0f} ms")
    finally:
        await conn.close()
        stop_process(worker)
        client = sync_redis.Redis.from_url(redis_url)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
