"""Delivery through the real firebase-admin client to the FCM stand-in: batching, retry, quota
back-off, dead tokens, quiet hours, preferences, locale."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest_asyncio

from app import web
from notifications import delivery, service
from notifications.sender import FirebaseSender
from tests.conftest import TransactionPool

PROJECT = "ihanoi-test"


@pytest_asyncio.fixture
async def stand_in(fcm_url):
    async with httpx.AsyncClient(base_url=fcm_url) as control:
        await control.post("/_control/reset")
        yield control


@pytest_asyncio.fixture
async def sender(fcm_url):
    firebase = FirebaseSender(project_id=PROJECT, endpoint=fcm_url)
    yield firebase
    await firebase.aclose()  # its HTTP session and firebase app


class CountingSender:
    """The real sender, with a note of every batch size it was handed."""

    def __init__(self, inner) -> None:
        self.inner, self.batches = inner, []

    async def send(self, messages):
        self.batches.append(len(messages))
        return await self.inner.send(messages)


async def make_residents(conn, count: int, *, locale="vi", token_prefix="tok") -> tuple[list[uuid.UUID], list[str]]:
    """Residents each with one phone, written straight into the test's transaction."""
    ids = [uuid.uuid4() for _ in range(count)]
    tokens = [f"{token_prefix}-{uuid.uuid4().hex}" for _ in range(count)]
    await conn.execute(
        "INSERT INTO resident (id, personal_id_hash, personal_id_enc) "
        "SELECT r, decode(md5(r::text), 'hex'), '\\x00' FROM unnest($1::uuid[]) AS r", ids)
    await conn.execute(
        "INSERT INTO notification_device (id, resident_id, fcm_token, platform, locale, app_version) "
        "SELECT gen_random_uuid(), r, t, 'android', $3, '3.2.1' FROM unnest($1::uuid[], $2::text[]) AS x(r, t)",
        ids, tokens, locale)
    return ids, tokens


async def announce(conn, residents, key="news", urgency="normal", category="city") -> list[int]:
    template = "city.emergency" if urgency == "emergency" else "city.announcement"
    return await service.notify(
        conn, residents, template,
        {"title_vi": "Cắt nước", "body_vi": "Phường Hoàn Kiếm cắt nước 8h-12h", "title_en": "Water cut",
         "body_en": "Hoan Kiem ward: no water 8am-12pm"},
        category=category, urgency=urgency, idempotency_key=key, deep_link="ihanoi://city/news/1")


async def deliver(conn, redis, sender) -> int:
    pool = TransactionPool(conn)
    async with pool.acquire() as c:
        while await delivery.expand_outbox(c, redis):
            pass
    return await delivery.send_due(pool, redis, sender)


async def stats(stand_in) -> dict:
    return (await stand_in.get("/_control/stats")).json()


async def statuses(conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM notification_delivery GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_batches_of_at_most_500_each_device_once(conn, redis, sender, stand_in):
    residents, tokens = await make_residents(conn, 1203)
    await announce(conn, residents)
    counting = CountingSender(sender)
    assert await deliver(conn, redis, counting) == 1203
    assert counting.batches == [500, 500, 203]
    seen = await stats(stand_in)
    assert seen["accepted"] == 1203 and seen["max_per_target"] == 1
    assert await statuses(conn) == {"sent": 1203}
    assert await conn.fetchval("SELECT count(*) FROM notification_delivery WHERE fcm_message_id LIKE "
                               "'projects/ihanoi-test/messages/%'") == 1203
    # nothing left to do: a second pass sends nothing again
    assert await deliver(conn, redis, counting) == 0
    assert (await stats(stand_in))["accepted"] == 1203


async def test_message_content_follows_the_device_locale(conn, redis, sender, stand_in):
    (vi_resident,), (vi_token,) = await make_residents(conn, 1, locale="vi")
    (en_resident,), (en_token,) = await make_residents(conn, 1, locale="en")
    ids = await announce(conn, [vi_resident, en_resident])
    await deliver(conn, redis, sender)
    vi = (await stand_in.get("/_control/messages", params={"token": vi_token})).json()["messages"][0]
    en = (await stand_in.get("/_control/messages", params={"token": en_token})).json()["messages"][0]
    assert vi["message"]["notification"]["title"] == "Cắt nước"
    assert en["message"]["notification"]["title"] == "Water cut"
    assert vi["message"]["data"]["deep_link"] == "ihanoi://city/news/1"
    assert vi["message"]["data"]["notification_id"] == str(ids[0])


async def test_unavailable_is_retried_with_backoff(conn, redis, sender, stand_in):
    (resident,), (token,) = await make_residents(conn, 1)
    await stand_in.post("/_control/faults", json={"token": token, "answer": "UNAVAILABLE", "times": 1})
    await announce(conn, [resident])
    await deliver(conn, redis, sender)
    row = await conn.fetchrow("SELECT status, attempts, error_code, available_at > now() AS later "
                              "FROM notification_delivery")
    assert (row["status"], row["attempts"], row["error_code"], row["later"]) == ("pending", 1, "UNAVAILABLE", True)
    assert await deliver(conn, redis, sender) == 0  # not due yet
    await conn.execute("UPDATE notification_delivery SET available_at = now()")  # the back-off has passed
    await deliver(conn, redis, sender)
    row = await conn.fetchrow("SELECT status, attempts FROM notification_delivery")
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_internal_errors_give_up_after_the_last_attempt(conn, redis, sender, stand_in):
    (resident,), (token,) = await make_residents(conn, 1)
    await stand_in.post("/_control/faults", json={"token": token, "answer": "INTERNAL"})
    await announce(conn, [resident])
    for _ in range(delivery.MAX_ATTEMPTS):
        await conn.execute("UPDATE notification_delivery SET available_at = now() WHERE status = 'pending'")
        await deliver(conn, redis, sender)
    row = await conn.fetchrow("SELECT status, attempts, error_code FROM notification_delivery")
    assert (row["status"], row["attempts"], row["error_code"]) == ("failed", delivery.MAX_ATTEMPTS, "INTERNAL")


async def test_quota_exceeded_pauses_every_sender_for_at_least_a_minute(conn, redis, sender, stand_in):
    residents, tokens = await make_residents(conn, 3)
    await stand_in.post("/_control/faults", json={"token": tokens[0], "answer": "QUOTA_EXCEEDED",
                                                   "retry_after": 120, "times": 1})
    await announce(conn, residents)
    await deliver(conn, redis, sender)
    quota = await conn.fetchrow("SELECT status, extract(epoch FROM available_at - now()) AS wait "
                                "FROM notification_delivery WHERE error_code = 'QUOTA_EXCEEDED'")
    assert quota["status"] == "pending" and 115 <= quota["wait"] <= 125  # Retry-After honoured
    paused_ms = await redis.client.pttl(redis.key("fcm", "paused-until"))
    assert 115_000 <= paused_ms <= 120_000
    # while paused nobody sends, even what is due
    await conn.execute("UPDATE notification_delivery SET available_at = now() WHERE status = 'pending'")
    assert await deliver(conn, redis, sender) == 0
    await redis.client.delete(redis.key("fcm", "paused-until"))
    await deliver(conn, redis, sender)
    assert await statuses(conn) == {"sent": 3}


async def test_quota_without_retry_after_waits_the_minimum(conn, redis, sender, stand_in):
    (resident,), (token,) = await make_residents(conn, 1)
    await stand_in.post("/_control/faults", json={"token": token, "answer": "QUOTA_EXCEEDED", "times": 1})
    await announce(conn, [resident])
    await deliver(conn, redis, sender)
    wait = await conn.fetchval("SELECT extract(epoch FROM available_at - now()) FROM notification_delivery")
    assert wait >= 59


async def test_dead_tokens_are_deactivated(conn, redis, sender, stand_in):
    residents, _ = await make_residents(conn, 2, token_prefix="dead")
    (alive,), _ = await make_residents(conn, 1)
    await announce(conn, [*residents, alive])
    await deliver(conn, redis, sender)
    assert await statuses(conn) == {"failed": 2, "sent": 1}
    reasons = await conn.fetch("SELECT deactivated_reason FROM notification_device WHERE deactivated_at IS NOT NULL")
    assert [r["deactivated_reason"] for r in reasons] == ["FCM UNREGISTERED"] * 2
    # the next notification does not even try them
    await announce(conn, [*residents, alive], key="second")
    await deliver(conn, redis, sender)
    assert (await stats(stand_in))["answers"].get("UNREGISTERED") == 2


async def test_quiet_hours_hold_pushes_but_not_the_inbox_or_emergencies(conn, redis, sender, stand_in):
    (sleeper,), (token,) = await make_residents(conn, 1)
    now_local = dt.datetime.now(web.CITY_TZ)
    start = (now_local - dt.timedelta(hours=1)).time().replace(microsecond=0, second=0)
    end = (now_local + dt.timedelta(hours=2)).time().replace(microsecond=0, second=0)
    await conn.execute("INSERT INTO notification_setting (resident_id, quiet_start, quiet_end) VALUES ($1, $2, $3)",
                       sleeper, start, end)
    await announce(conn, [sleeper])
    await deliver(conn, redis, sender)
    held = await conn.fetchrow("SELECT status, available_at FROM notification_delivery")
    assert held["status"] == "pending"
    assert abs((held["available_at"] - dt.datetime.combine(
        (now_local + dt.timedelta(hours=2)).date(), end, web.CITY_TZ)).total_seconds()) < 1
    assert await conn.fetchval("SELECT count(*) FROM notification WHERE resident_id = $1", sleeper) == 1
    assert (await stats(stand_in))["accepted"] == 0
    await announce(conn, [sleeper], key="flood", urgency="emergency")
    await deliver(conn, redis, sender)
    messages = (await stand_in.get("/_control/messages", params={"token": token})).json()["messages"]
    assert [m["message"]["notification"]["title"] for m in messages] == ["Cảnh báo khẩn cấp: Cắt nước"]
    assert messages[0]["message"]["android"]["priority"] == "high"


async def test_a_category_switched_off_reaches_the_inbox_only(conn, redis, sender, stand_in):
    (resident,), _ = await make_residents(conn, 1)
    await conn.execute("INSERT INTO notification_preference (resident_id, category, push) VALUES ($1, 'city', false)",
                       resident)
    await announce(conn, [resident])
    await deliver(conn, redis, sender)
    assert await statuses(conn) == {}
    assert await conn.fetchval("SELECT count(*) FROM notification WHERE resident_id = $1", resident) == 1
    # emergency alerts cannot be switched off
    await announce(conn, [resident], key="storm", urgency="emergency")
    await deliver(conn, redis, sender)
    assert await statuses(conn) == {"sent": 1}


class SlowSender:
    """The real sender, after a pause longer than the lease: FCM slow to answer, or a loaded machine."""

    def __init__(self, inner, pause: float) -> None:
        self.inner, self.pause = inner, pause

    async def send(self, messages):
        await asyncio.sleep(self.pause)
        return await self.inner.send(messages)


async def test_a_batch_slower_than_its_lease_is_not_claimed_again_while_in_flight(conn, redis, sender, stand_in):
    residents, _ = await make_residents(conn, 3)
    ids = await announce(conn, residents)
    pool = TransactionPool(conn)
    async with pool.acquire() as c:
        await delivery.expand_outbox(c, redis)
    # a 1 s lease, a batch taking 2.5 s, and a second worker looking for due pushes 1.5 s in
    slow = asyncio.create_task(delivery.send_due(pool, redis, SlowSender(sender, 2.5), lease_seconds=1))
    await asyncio.sleep(1.5)
    assert await delivery.send_due(pool, redis, sender, lease_seconds=1) == 0
    assert await slow == 3
    seen = await stats(stand_in)
    assert seen["accepted"] == 3 and seen["max_per_target"] == 1
    # this test's rows only: the fault test's worker processes commit deliveries to the run's database
    assert await conn.fetchval("SELECT array_agg(DISTINCT status) FROM notification_delivery "
                               "WHERE notification_id = ANY($1::bigint[])", ids) == ["sent"]
