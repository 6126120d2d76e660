"""Deliveries are partitioned by month on their notification's time (created_at, fixed at insert): one delivery per
(notification, device) still, the worker's claim and its recording read only the recent months (EXPLAIN), a push
left unsent past the window is expired with its broadcast's counts, and the job drops months past retention."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from app import partitions
from app.settings import SettingsError, load_settings
from notifications import store
from notifications.module import module as notifications_module
from tests.notifications.test_delivery import announce, make_residents
from tests.plans import Recorder

NOW = dt.datetime.now(dt.UTC)
THIS_MONTH = partitions.month_start(NOW)


def month(offset: int) -> dt.datetime:
    return partitions.add_months(THIS_MONTH, offset)


def name(offset: int) -> str:
    return partitions.partition_name("notification_delivery", month(offset))


def months_of(start: dt.datetime, end: dt.datetime) -> set[str]:
    """The partitions of the months [start, end) touches."""
    found, at = set(), partitions.month_start(start)
    while at < end:
        found.add(partitions.partition_name("notification_delivery", at))
        at = partitions.add_months(at, 1)
    return found


async def old_broadcast_delivery(conn, resident: uuid.UUID, at: dt.datetime) -> int:
    """A broadcast's push made at `at` and still pending, with its count, as the fan-out leaves them."""
    broadcast = await conn.fetchval(
        "INSERT INTO broadcast (created_by, idempotency_key, target_unit, urgency, title_vi, body_vi, title_en, "
        "body_en, status, scheduled_at, started_at) "
        "VALUES ($1, $2, 'HN', 'normal', 'a', 'b', 'c', 'd', 'done', $3, $3) RETURNING id",
        resident, uuid.uuid4().hex, at)
    notification = await conn.fetchval(
        "INSERT INTO notification (resident_id, category, urgency, template, title_vi, body_vi, title_en, body_en, "
        "idempotency_key, broadcast_id, created_at) VALUES ($1, 'city', 'normal', 'city.announcement', 'a', 'b', "
        "'c', 'd', $2, $3, $4) RETURNING id", resident, f"broadcast:{broadcast}", broadcast, at)
    await conn.execute("INSERT INTO notification_delivery (notification_id, device_id, available_at, created_at) "
                       "SELECT $1, id, $2, $2 FROM notification_device WHERE resident_id = $3", notification, at,
                       resident)
    await conn.execute("INSERT INTO broadcast_delivery_count (broadcast_id, pending) VALUES ($1, 1)", broadcast)
    return broadcast


async def test_a_delivery_is_filed_under_its_notifications_time_once(conn):
    residents, _ = await make_residents(conn, 2)
    ids = await announce(conn, residents)
    assert await store.insert_deliveries(conn, ids, [NOW] * len(ids)) == 2
    assert await store.insert_deliveries(conn, ids, [NOW + dt.timedelta(hours=1)] * len(ids)) == 0  # once
    rows = await conn.fetch("SELECT d.created_at = n.created_at AS same, d.tableoid::regclass::text AS part "
                            "FROM notification_delivery d JOIN notification n ON n.id = d.notification_id "
                            "WHERE d.notification_id = ANY($1)", ids)
    assert [(r["same"], r["part"]) for r in rows] == [(True, name(0))] * 2


async def test_the_claim_and_the_record_read_only_the_recent_months(conn, settings):
    await partitions.maintain(conn, [notifications_module], settings, now=month(-3))  # months -3 .. 3 exist
    residents, _ = await make_residents(conn, 2)
    old = await old_broadcast_delivery(conn, residents[0], month(-2) + dt.timedelta(days=3))
    new = await announce(conn, residents[1:])
    await store.insert_deliveries(conn, new, [NOW - dt.timedelta(minutes=1)])
    recorder = Recorder(conn)
    claimed = await store.claim_due(recorder, 10, 60)
    # the old push is due too, but older than the window: not claimed, its month not read
    assert [r["notification_id"] for r in claimed] == new
    window = months_of(NOW - dt.timedelta(days=store.DELIVERY_WINDOW_DAYS), NOW + dt.timedelta(days=1))
    assert await recorder.tables(prefix="notification_delivery") == window
    assert name(-2) not in window
    await store.record_results(recorder, [(new[0], claimed[0]["device_id"], "sent", "m-1", None, 0.0)])
    assert await recorder.tables(prefix="notification_delivery") == months_of(
        NOW - dt.timedelta(days=store.DELIVERY_WINDOW_DAYS + 1), NOW + dt.timedelta(days=1))
    assert await conn.fetchval("SELECT status FROM notification_delivery WHERE notification_id = $1",
                               new[0]) == "sent"
    # cancelling reads the months since the broadcast started (a day's margin), not those before
    assert await store.skip_pending_deliveries(recorder, old, month(-1) + dt.timedelta(days=2)) == 0
    read = await recorder.tables(prefix="notification_delivery")
    assert name(-1) in read and not {name(-3), name(-2)} & read

    # the job expires the old one (failed, EXPIRED) and its broadcast's counts move with it
    assert await store.expire_deliveries(conn) == 1
    assert await store.expire_deliveries(conn) == 0
    row = await conn.fetchrow("SELECT d.status, d.error_code FROM notification_delivery d "
                              "JOIN notification n ON n.id = d.notification_id WHERE n.broadcast_id = $1", old)
    assert tuple(row) == ("failed", "EXPIRED")
    assert await store.broadcast_delivery_counts(conn, old) == await store.broadcast_delivery_counts_exact(
        conn, old) == {"failed": 1}


async def test_months_past_the_delivery_retention_are_dropped(conn, settings):
    with pytest.raises(SettingsError, match="at least 2"):
        load_settings({**settings.environ, "IHANOI_PUSH_DELIVERY_RETENTION_MONTHS": "1"}).of("notifications")
    await partitions.maintain(conn, [notifications_module], settings, now=month(-3))
    residents, _ = await make_residents(conn, 1)
    broadcast = await old_broadcast_delivery(conn, residents[0], month(-3) + dt.timedelta(days=1))
    keep_two = load_settings({**settings.environ, "IHANOI_PUSH_DELIVERY_RETENTION_MONTHS": "2"})
    done = await partitions.maintain(conn, [notifications_module], keep_two, now=NOW)
    assert f"notification_delivery: dropped {name(-3)} (older than 2 month(s))" in done
    assert f"notification_delivery: dropped {name(-2)} (older than 2 month(s))" in done
    assert await conn.fetchval("SELECT count(*) FROM notification_delivery d JOIN notification n "
                               "ON n.id = d.notification_id WHERE n.broadcast_id = $1", broadcast) == 0
    # the inbox item and the broadcast's counts stay
    assert await conn.fetchval("SELECT count(*) FROM notification WHERE broadcast_id = $1", broadcast) == 1
    assert await store.broadcast_delivery_counts(conn, broadcast) == {"pending": 1}
