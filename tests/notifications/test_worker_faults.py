"""Fault test: the worker is killed in the middle of a broadcast and started again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid

import httpx
import pytest

from app import db
from notifications import delivery, store
from tests.conftest import IHANOI, ROOT, process_env, stop_process, sync_redis_client

pytestmark = pytest.mark.e2e
DEVICES = 3000


async def seed_broadcast(database_url: str, ward: str) -> tuple[int, list[str]]:
    conn = await db.connect(database_url)
    try:
        async with conn.transaction():
            ids = [uuid.uuid4() for _ in range(DEVICES)]
            tokens = [f"fault-{uuid.uuid4().hex}" for _ in range(DEVICES)]
            await conn.execute("INSERT INTO resident (id, personal_id_hash, personal_id_enc) "
                               "SELECT r, decode(md5(r::text), 'hex'), '\\x00' FROM unnest($1::uuid[]) AS r", ids)
            await conn.execute(
                "INSERT INTO notification_device (id, resident_id, fcm_token, platform, locale, app_version) "
                "SELECT gen_random_uuid(), r, t, 'android', 'vi', '3.2.1' FROM unnest($1::uuid[], $2::text[]) "
                "AS x(r, t)", ids, tokens)
            await conn.execute("INSERT INTO notification_setting (resident_id, home_unit) "
                               "SELECT r, $2 FROM unnest($1::uuid[]) AS r", ids, ward)
            row, _ = await store.insert_broadcast(
                conn, created_by=ids[0], idempotency_key=uuid.uuid4().hex, target_unit=ward, urgency="emergency",
                texts={"title_vi": "Ngập lụt", "body_vi": "Tránh đường Kim Mã", "title_en": "Flooding",
                       "body_en": "Avoid Kim Ma street"},
                deep_link=None, status="scheduled", scheduled_at=await conn.fetchval("SELECT now()"))
        return row["id"], tokens
    finally:
        await conn.close()


async def delivery_state(database_url: str, broadcast_id: int) -> dict[str, int]:
    conn = await db.connect(database_url)
    try:
        return await store.broadcast_delivery_counts(conn, broadcast_id)
    finally:
        await conn.close()


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_worker_killed_mid_broadcast(kill, database_url, redis_url, fcm_url):
    ward = "phuong-kim-lien" if kill == signal.SIGTERM else "phuong-lang"
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_REDIS_PREFIX=prefix,
                      IHANOI_FCM_ENDPOINT=fcm_url, IHANOI_LOG_LEVEL="WARNING",
                      # short, so a killed worker's batch is sent again soon, but longer than a batch takes on a
                      # loaded machine, or a later claim takes a batch still in flight
                      IHANOI_PUSH_LEASE="6")
    async with httpx.AsyncClient(base_url=fcm_url) as stand_in:
        await stand_in.post("/_control/reset")
        broadcast_id, tokens = await seed_broadcast(database_url, ward)

        def start():
            return subprocess.Popen([*IHANOI, "worker"], cwd=ROOT, env=env,  # noqa: ASYNC220
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        worker = start()
        try:
            deadline = time.monotonic() + 60
            while (await stand_in.get("/_control/stats")).json()["accepted"] < 600:
                assert time.monotonic() < deadline, "the worker never got going"
                await asyncio.sleep(0.05)
            worker.send_signal(kill)
            worker.wait(30)
            at_kill = (await stand_in.get("/_control/stats")).json()["accepted"]
            assert at_kill < DEVICES, "killed too late to be in the middle"
            worker = start()
            deadline = time.monotonic() + 120
            while (await delivery_state(database_url, broadcast_id)).get("sent", 0) < DEVICES:
                assert time.monotonic() < deadline, await delivery_state(database_url, broadcast_id)
                await asyncio.sleep(0.2)
        finally:
            stop_process(worker)
            client = sync_redis_client(redis_url)
            for key in client.scan_iter(prefix + "*"):
                client.delete(key)
        stats = (await stand_in.get("/_control/stats")).json()
        counts = [(await stand_in.get("/_control/messages", params={"token": t})).json()["count"] for t in tokens[:200]]
    assert stats["distinct_targets"] == DEVICES  # every device got the message
    assert min(counts) >= 1
    if kill == signal.SIGTERM:
        # a stopped worker finishes and records its batch: nobody gets it twice
        assert stats["max_per_target"] == 1 and stats["accepted"] == DEVICES
    else:
        # killed with batches in flight, the worker cannot know what FCM took: they are sent again (at least
        # once). Every copy has the same notification_id and collapse key, so the phone shows one. The send pipeline
        # has at most SENT_UNRECORDED batches sent but not recorded (one being recorded, one being sent), so at most
        # that many come back.
        assert stats["accepted"] - DEVICES <= delivery.SENT_UNRECORDED * delivery.BATCH
    print(f"\n{kill.name}: killed at {at_kill} accepted; after restart {stats['accepted']} for {DEVICES} devices")
