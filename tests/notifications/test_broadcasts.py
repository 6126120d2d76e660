"""City broadcasts: who may send where, a second admin for the whole city, fan-out, progress, cancel."""

from __future__ import annotations

import uuid

import httpx
import pytest_asyncio

from app.identity import service as identity
from app.identity.devlogin import sign_in
from app.identity.models import GrantRequest
from notifications import broadcasts, delivery, store
from notifications.sender import FirebaseSender
from tests.conftest import TransactionPool

CLERK, ADMIN, ADMIN2 = "001192034567", "001078056789", "001301045678"
WARD, OTHER_WARD = "phuong-hoan-kiem", "phuong-ba-dinh"


@pytest_asyncio.fixture
async def stand_in(fcm_url):
    async with httpx.AsyncClient(base_url=fcm_url) as control:
        await control.post("/_control/reset")
        yield control


async def grant(client, conn, personal_id, role, scope=""):
    rt = client.app.state.identity
    resident = await identity.resident_for_personal_id(rt, conn, personal_id, create=True)
    await identity.grant_role(rt, conn, actor="test", resident_id=resident["id"], request_id=None,
                              request=GrantRequest(resident_id=str(resident["id"]), role=role, scope=scope))


async def bearer(client, personal_id, level=2) -> dict[str, str]:
    response = await sign_in(client, personal_id, level=level)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def residents_in(conn, unit: str | None, count: int, prefix="tok") -> list[str]:
    ids = [uuid.uuid4() for _ in range(count)]
    tokens = [f"{prefix}-{uuid.uuid4().hex}" for _ in range(count)]
    await conn.execute("INSERT INTO resident (id, personal_id_hash, personal_id_enc) "
                       "SELECT r, decode(md5(r::text), 'hex'), '\\x00' FROM unnest($1::uuid[]) AS r", ids)
    await conn.execute("INSERT INTO notification_device (id, resident_id, fcm_token, platform, locale, app_version) "
                       "SELECT gen_random_uuid(), r, t, 'ios', 'vi', '3.2.1' FROM unnest($1::uuid[], $2::text[]) "
                       "AS x(r, t)", ids, tokens)
    if unit:
        await conn.execute("INSERT INTO notification_setting (resident_id, home_unit) SELECT r, $2 "
                           "FROM unnest($1::uuid[]) AS r", ids, unit)
    return tokens


def body(target=WARD, **extra):
    return {"target_unit": target, "title_vi": "Cắt điện", "body_vi": "Cắt điện 8h-11h ngày mai",
            "title_en": "Power cut", "body_en": "No power 8-11am tomorrow"} | extra


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def run_worker(conn, redis, fcm_url, client):
    pool = TransactionPool(conn)
    await broadcasts.fan_out(pool, client.app.state.identity.units)
    sender = FirebaseSender(project_id="ihanoi-test", endpoint=fcm_url)
    try:
        return await delivery.send_due(pool, redis, sender)
    finally:
        await sender.aclose()


async def test_ward_staff_broadcast_reaches_the_ward_only(client, conn, redis, fcm_url, stand_in):
    await grant(client, conn, CLERK, "staff", WARD)
    clerk = await bearer(client, CLERK)
    in_ward = await residents_in(conn, WARD, 30)
    await residents_in(conn, OTHER_WARD, 10)
    await residents_in(conn, None, 5)
    headers = clerk | key()
    created = await client.post("/v1/broadcasts", json=body(), headers=headers)
    assert created.status_code == 201, created.text
    again = await client.post("/v1/broadcasts", json=body(), headers=headers)  # a retried request: the first answer
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == created.json()["id"]
    broadcast = created.json()
    assert broadcast["status"] == "scheduled" and broadcast["needs_approval"] is False

    await run_worker(conn, redis, fcm_url, client)
    progress = (await client.get(f"/v1/broadcasts/{broadcast['id']}", headers=clerk)).json()
    assert progress["status"] == "done" and progress["recipients"] == 30
    assert progress["deliveries"] == {"sent": 30}
    stats = (await stand_in.get("/_control/stats")).json()
    assert stats["accepted"] == 30 and stats["max_per_target"] == 1
    received = {t for t in in_ward if (await stand_in.get("/_control/messages", params={"token": t})).json()["count"]}
    assert received == set(in_ward)


async def test_who_may_broadcast_where(client, conn):
    await grant(client, conn, CLERK, "staff", WARD)
    clerk = await bearer(client, CLERK)
    other = await client.post("/v1/broadcasts", json=body(OTHER_WARD), headers=clerk | key())
    assert other.status_code == 403
    city = await client.post("/v1/broadcasts", json=body("hanoi"), headers=clerk | key())
    assert city.status_code == 403
    assert (await client.post("/v1/broadcasts", json=body("nowhere"), headers=clerk | key())).status_code == 422
    no_key = await client.post("/v1/broadcasts", json=body(), headers=clerk)
    assert no_key.status_code == 400 and no_key.json()["errors"][0]["field"] == "Idempotency-Key"
    low = await bearer(client, CLERK, level=1)
    assert (await client.post("/v1/broadcasts", json=body(), headers=low | key())).status_code == 403


async def test_city_wide_needs_a_second_admin(client, conn, redis, fcm_url, stand_in):
    await grant(client, conn, ADMIN, "admin")
    await grant(client, conn, ADMIN2, "admin")
    first, second = await bearer(client, ADMIN), await bearer(client, ADMIN2)
    await residents_in(conn, WARD, 4)
    await residents_in(conn, None, 3)
    created = (await client.post("/v1/broadcasts", json=body("hanoi", urgency="emergency"),
                                 headers=first | key())).json()
    assert created["status"] == "awaiting_approval" and created["needs_approval"]
    await run_worker(conn, redis, fcm_url, client)
    assert (await stand_in.get("/_control/stats")).json()["accepted"] == 0  # nothing before approval
    assert (await client.post(f"/v1/broadcasts/{created['id']}/approve", headers=first)).status_code == 403
    retried = second | key()
    approved = await client.post(f"/v1/broadcasts/{created['id']}/approve", headers=retried)
    assert approved.status_code == 200 and approved.json()["status"] == "scheduled"
    # the same request again (a phone that lost the answer) gets the first answer, not a conflict
    replayed = await client.post(f"/v1/broadcasts/{created['id']}/approve", headers=retried)
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == approved.json()
    assert (await client.post(f"/v1/broadcasts/{created['id']}/approve", headers=second)).status_code == 409
    await run_worker(conn, redis, fcm_url, client)
    done = (await client.get(f"/v1/broadcasts/{created['id']}", headers=first)).json()
    # every resident of the city has it in the inbox; the three admins and the clerk have no phone registered
    assert done["status"] == "done" and done["deliveries"] == {"sent": 7}
    assert done["recipients"] == await conn.fetchval("SELECT count(*) FROM resident")


async def test_cancel_stops_what_is_not_sent(client, conn, redis, fcm_url, stand_in):
    await grant(client, conn, CLERK, "staff", WARD)
    clerk = await bearer(client, CLERK)
    await residents_in(conn, WARD, 12)
    created = (await client.post("/v1/broadcasts", json=body(), headers=clerk | key())).json()
    await broadcasts.fan_out(TransactionPool(conn), client.app.state.identity.units)  # fanned out, nothing sent
    cancelled = await client.post(f"/v1/broadcasts/{created['id']}/cancel", headers=clerk)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["deliveries"] == {"skipped": 12}
    await run_worker(conn, redis, fcm_url, client)
    assert (await stand_in.get("/_control/stats")).json()["accepted"] == 0
    assert (await client.post(f"/v1/broadcasts/{created['id']}/cancel", headers=clerk)).status_code == 409


async def test_scheduled_broadcast_waits_for_its_time(client, conn, redis, fcm_url, stand_in):
    await grant(client, conn, CLERK, "staff", WARD)
    clerk = await bearer(client, CLERK)
    await residents_in(conn, WARD, 2)
    later = (await client.post("/v1/broadcasts", json=body(scheduled_at="2099-01-01T08:00:00+07:00"),
                               headers=clerk | key())).json()
    await run_worker(conn, redis, fcm_url, client)
    assert (await client.get(f"/v1/broadcasts/{later['id']}", headers=clerk)).json()["status"] == "scheduled"
    past = await client.post("/v1/broadcasts", json=body(scheduled_at="2020-01-01T08:00:00+07:00"),
                             headers=clerk | key())
    assert past.status_code == 400 and past.json()["errors"][0]["field"] == "scheduled_at"
    mine = (await client.get("/v1/broadcasts", headers=clerk)).json()["broadcasts"]
    assert [b["id"] for b in mine] == [later["id"]]
    # another resident does not see it
    stranger = await bearer(client, "001085012345")
    assert (await client.get(f"/v1/broadcasts/{later['id']}", headers=stranger)).status_code == 404


async def test_progress_counts_are_maintained_through_every_state(client, conn, redis, fcm_url, stand_in):
    """The counts `GET /v1/broadcasts/{id}` reads from `broadcast_delivery_count` equal a count of the delivery rows
    after every kind of change: fan-out, claim, sent, retry, dead token, quota, lease expiry, cancel."""
    await grant(client, conn, CLERK, "staff", WARD)
    clerk = await bearer(client, CLERK)
    tokens = await residents_in(conn, WARD, 20)
    await residents_in(conn, WARD, 2, prefix="dead")
    await stand_in.post("/_control/faults", json={"token": tokens[0], "answer": "UNAVAILABLE", "times": 1})
    await stand_in.post("/_control/faults", json={"token": tokens[1], "answer": "QUOTA_EXCEEDED", "times": 1})
    created = (await client.post("/v1/broadcasts", json=body(), headers=clerk | key())).json()
    pool = TransactionPool(conn)

    async def check(expected: dict[str, int]) -> None:
        shown = (await client.get(f"/v1/broadcasts/{created['id']}", headers=clerk)).json()["deliveries"]
        assert shown == await store.broadcast_delivery_counts_exact(conn, created["id"]) == expected

    await broadcasts.fan_out(pool, client.app.state.identity.units)
    await check({"pending": 22})
    # the phones with faults and the dead ones are left for the real sender below, not claimed by hand here
    special = ("UPDATE notification_delivery SET available_at = {} WHERE device_id IN (SELECT id FROM "
               "notification_device WHERE fcm_token = ANY($1) OR fcm_token LIKE 'dead-%')")
    await conn.execute(special.format("now() + interval '1 hour'"), tokens[:2])
    # a worker claims a batch and dies: its lease runs out and another claims the same rows again (sending ->
    # sending), then both record (the second overwrites the first)
    first = await store.claim_due(conn, 5, 60)
    await check({"pending": 17, "sending": 5})
    await conn.execute("UPDATE notification_delivery SET available_at = now() WHERE status = 'sending'")
    again = await store.claim_due(conn, 5, 60)
    assert {(r["notification_id"], r["device_id"]) for r in again} == {(r["notification_id"], r["device_id"])
                                                                       for r in first}
    await check({"pending": 17, "sending": 5})
    done = [(r["notification_id"], r["device_id"], "sent", "m", None, 0.0) for r in first]
    await store.record_results(conn, done)
    await check({"pending": 17, "sent": 5})
    await store.record_results(conn, [(*d[:2], "failed", None, "UNKNOWN", 0.0) for d in done])
    await check({"pending": 17, "failed": 5})
    await store.record_results(conn, done)
    await check({"pending": 17, "sent": 5})

    await conn.execute(special.format("now()"), tokens[:2])
    sender = FirebaseSender(project_id="ihanoi-test", endpoint=fcm_url)
    await delivery.send_due(pool, redis, sender)
    # UNAVAILABLE and QUOTA_EXCEEDED wait (pending); the dead tokens failed
    await check({"sent": 18, "failed": 2, "pending": 2})
    await redis.client.delete(redis.key("fcm", "paused-until"))
    await conn.execute("UPDATE notification_delivery SET available_at = now() WHERE status = 'pending'")
    # cancelled with one still pending: it is skipped
    await conn.execute("UPDATE notification_delivery SET available_at = now() + interval '1 hour' "
                       "WHERE status = 'pending' AND device_id = "
                       "(SELECT id FROM notification_device WHERE fcm_token = $1)", tokens[0])
    await delivery.send_due(pool, redis, sender)
    cancelled = await client.post(f"/v1/broadcasts/{created['id']}/cancel", headers=clerk)
    assert cancelled.status_code == 200
    assert cancelled.json()["deliveries"] == {"sent": 20 - 1, "failed": 2, "skipped": 1}
    await check({"sent": 19, "failed": 2, "skipped": 1})
    await sender.aclose()
