"""Taps are partitioned by month on their time: a tap lands in its month, a batch sent again counts once, the
reconciliation, the refund check and the operator report read only the months they need (EXPLAIN), and the
partitions job drops the months past the tap retention."""

from __future__ import annotations

import datetime as dt
import uuid

from app import partitions
from app.settings import load_settings
from tests.plans import Recorder, relations
from transit import store
from transit.models import Tap
from transit.module import module as transit_module

THIS_MONTH = partitions.month_start(dt.datetime.now(dt.UTC))


def month(offset: int) -> dt.datetime:
    return partitions.add_months(THIS_MONTH, offset)


def name(offset: int) -> str:
    return partitions.partition_name("transit_tap", month(offset))


def tap(at: dt.datetime, *, ticket: int = 900_001, vehicle: str = "bus-01", fingerprint: str = "ab" * 16) -> Tap:
    return Tap(tap_id=uuid.uuid4(), ticket_id=ticket, route_id=101, vehicle=vehicle, at=at, accepted=True,
               fingerprint=fingerprint)


async def test_a_tap_lands_in_its_month_and_a_batch_sent_again_counts_once(conn, settings):
    await partitions.maintain(conn, [transit_module], settings, now=month(0))
    batch = [tap(month(0) + dt.timedelta(days=3)), tap(month(1) + dt.timedelta(hours=2)), tap(month(40))]
    stored = await store.insert_taps(conn, "client:v1", "hanoibus", batch)
    assert [(r["tap_id"], r["at"]) for r in stored] == [(t.tap_id, t.at) for t in batch]
    assert await store.insert_taps(conn, "client:v1", "hanoibus", batch) == []
    rows = await conn.fetch("SELECT tap_id, tableoid::regclass::text AS part FROM transit_tap WHERE tap_id = ANY($1)",
                            [t.tap_id for t in batch])
    # a validator's clock years ahead still uploads: the row waits in DEFAULT
    assert {r["tap_id"]: r["part"] for r in rows} == {
        batch[0].tap_id: name(0), batch[1].tap_id: name(1), batch[2].tap_id: "transit_tap_default"}


async def test_reconciliation_reads_only_the_months_around_the_new_taps(conn, settings):
    await partitions.maintain(conn, [transit_module], settings, now=month(2))  # months up to 5 exist
    earlier = tap(month(2) + dt.timedelta(days=14, hours=8), vehicle="bus-01")
    replay = tap(month(2) + dt.timedelta(days=15), vehicle="bus-02")  # the same code a day later
    await store.insert_taps(conn, "client:v1", "hanoibus", [earlier])
    recorder = Recorder(conn)
    stored = await store.insert_taps(recorder, "client:v2", "hanoibus", [replay])
    assert await store.flag_new_taps(recorder, stored, dt.timedelta(seconds=120)) == 1
    flag = await conn.fetchrow("SELECT reason, first_tap, second_tap FROM transit_flag WHERE ticket_id = 900001")
    assert tuple(flag) == ("replayed-code", earlier.tap_id, replay.tap_id)
    # one ticket's boardings lie within its validity (a month at most): the month before and after, no more
    assert await recorder.tables(prefix="transit_tap") == {name(1), name(2), name(3)}


async def test_the_refund_check_and_the_report_read_only_their_months(conn, settings):
    await partitions.maintain(conn, [transit_module], settings, now=month(0))
    recorder = Recorder(conn)
    valid_from = month(1) + dt.timedelta(days=10)
    assert not await store.was_tapped(recorder, 900_002, valid_from, valid_from + dt.timedelta(hours=24))
    assert await recorder.tables(prefix="transit_tap") == {name(1)}
    await store.insert_taps(conn, "client:v1", "hanoibus", [tap(valid_from + dt.timedelta(hours=1), ticket=900_002)])
    assert await store.was_tapped(conn, 900_002, valid_from, valid_from + dt.timedelta(hours=24))
    assert await store.rides(recorder, "hanoibus", month(2), month(3) + dt.timedelta(days=3)) == []
    assert await recorder.tables(prefix="transit_tap") == {name(2), name(3)}
    # without a time filter every month is read: the point of filtering by time
    plan_all = await conn.fetchval("EXPLAIN (FORMAT JSON) SELECT count(*) FROM transit_tap WHERE ticket_id = 1")
    assert {name(0), name(1), name(2), name(3), "transit_tap_default"} <= relations(
        plan_all)


async def test_months_past_the_tap_retention_are_dropped(conn, settings):
    await partitions.maintain(conn, [transit_module], settings, now=month(0))
    await store.insert_taps(conn, "client:v1", "hanoibus", [tap(month(1) + dt.timedelta(days=1))])
    assert not [line for line in await partitions.maintain(conn, [transit_module], settings, now=month(30))
                if "dropped" in line]  # by default every month is kept
    keep_two = load_settings({**settings.environ, "IHANOI_TRANSIT_TAP_RETENTION_MONTHS": "2"})
    done = await partitions.maintain(conn, [transit_module], keep_two, now=month(3) + dt.timedelta(days=2))
    assert f"transit_tap: dropped {name(1)} (older than 2 month(s))" in done
    assert await conn.fetchval("SELECT to_regclass($1)", name(1)) is None
    assert await conn.fetchval("SELECT count(*) FROM transit_tap WHERE ticket_id = 900001") == 0
