"""The kernel's time partitions (app/partitions.py): a table a module declares gets its months ahead, loses
the months past its retention (dropped when the declaration says so), and two workers at once do it once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
import uuid

import asyncpg
import pytest

from app import partitions
from app.settings import load_settings
from app.worker import Worker
from modules import TimePartitions
from tests.conftest import IHANOI, ROOT, process_env
from tests.fixture_module import module as fixture_module

NOW = dt.datetime(2027, 3, 10, 8, 30, tzinfo=dt.UTC)


def probe_module(table: str, **options):
    # the fixture's shelf_size stands in for a retention setting (an int field of the module's settings)
    return dataclasses.replace(fixture_module, partitions=[TimePartitions(table, "at", **options)])


async def make_probe(conn, table: str) -> None:
    await conn.execute(f"CREATE TABLE {table} (id bigint NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at)) "
                       "PARTITION BY RANGE (at)")
    await conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")


async def names(conn, table: str) -> list[str]:
    return sorted(p.name for p in await partitions.partitions_of(conn, table))


def test_a_declaration_names_a_setting_the_module_has():
    with pytest.raises(ValueError, match="retention setting 'nope'"):
        probe_module("probe_events", retention_setting="nope")
    with pytest.raises(ValueError, match="only monthly"):
        TimePartitions("probe_events", "at", interval="day")


async def test_months_ahead_then_old_months_dropped_by_retention(conn, settings):
    await make_probe(conn, "probe_events")
    module = probe_module("probe_events", ahead=2, retention_setting="shelf_size", expire="drop")
    keep_all = load_settings({**settings.environ, "IHANOI_FIXTURE_SHELF_SIZE": "0"})
    assert await partitions.maintain(conn, [module], keep_all, now=NOW) == [
        "probe_events: created probe_events_p202703 [2027-03-01, 2027-04-01)",
        "probe_events: created probe_events_p202704 [2027-04-01, 2027-05-01)",
        "probe_events: created probe_events_p202705 [2027-05-01, 2027-06-01)",
    ]
    await conn.execute("INSERT INTO probe_events VALUES (1, '2027-03-31 23:59:59+00'), (2, '2027-04-01 00:00+07'),"
                       " (3, '2027-04-01 00:00+00')")
    landed = await conn.fetch("SELECT id, tableoid::regclass::text AS part FROM probe_events ORDER BY id")
    # 00:00 in Hà Nội on 1 April is still March in UTC: months are UTC months
    assert [(r["id"], r["part"]) for r in landed] == [
        (1, "probe_events_p202703"), (2, "probe_events_p202703"), (3, "probe_events_p202704")]
    # in July, keeping two months (July and June): March, April and May go, and so do their rows
    keep_two = load_settings({**settings.environ, "IHANOI_FIXTURE_SHELF_SIZE": "2"})
    done = await partitions.maintain(conn, [module], keep_two, now=dt.datetime(2027, 7, 2, tzinfo=dt.UTC))
    assert done == [
        "probe_events: created probe_events_p202706 [2027-06-01, 2027-07-01)",
        "probe_events: created probe_events_p202707 [2027-07-01, 2027-08-01)",
        "probe_events: created probe_events_p202708 [2027-08-01, 2027-09-01)",
        "probe_events: created probe_events_p202709 [2027-09-01, 2027-10-01)",
        "probe_events: dropped probe_events_p202703 (older than 2 month(s))",
        "probe_events: dropped probe_events_p202704 (older than 2 month(s))",
        "probe_events: dropped probe_events_p202705 (older than 2 month(s))",
    ]
    assert await names(conn, "probe_events") == [
        "probe_events_default", "probe_events_p202706", "probe_events_p202707", "probe_events_p202708",
        "probe_events_p202709"]
    assert await conn.fetchval("SELECT to_regclass('probe_events_p202703')") is None
    assert await conn.fetchval("SELECT count(*) FROM probe_events") == 0


async def test_two_workers_at_once_make_each_month_once(pool, settings):
    table = f"probe_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await make_probe(conn, table)
    module = probe_module(table, ahead=3)
    try:
        async def run() -> list[str]:
            async with pool.acquire() as conn:
                return await partitions.maintain(conn, [module], settings, now=NOW)

        first, second = await asyncio.gather(run(), run())
        assert sorted([first, second], key=len) == [[], [
            f"{table}: created {table}_p{month} [{month[:4]}-{month[4:]}-01, {end}-01)"
            for month, end in (("202703", "2027-04"), ("202704", "2027-05"), ("202705", "2027-06"),
                               ("202706", "2027-07"))]]
        async with pool.acquire() as conn:
            assert len(await names(conn, table)) == 5
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TABLE {table}")


def test_the_worker_runs_the_job_only_when_a_module_declares_partitions(settings):
    assert "kernel.partitions" not in [j.name for j in Worker(settings, [fixture_module]).jobs]
    assert "kernel.partitions" in [j.name for j in Worker(settings, [probe_module("probe_events")]).jobs]


@pytest.mark.e2e
async def test_ihanoi_partitions_maintain_prints_what_it_did(databases, redis_url):
    url = await databases.create("partitions")
    env = process_env(DATABASE_URL=url, REDIS_URL=redis_url)

    def maintain() -> str:
        result = subprocess.run([*IHANOI, "partitions", "maintain"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    this_month = partitions.month_start(dt.datetime.now(dt.UTC))
    first = maintain()
    for ahead in (1, 2, 3):
        month = partitions.add_months(this_month, ahead)
        assert f"health_access_log: created health_access_log_p{month:%Y%m}" in first
    assert maintain().strip() == "partitions: nothing to do"


CONVERTING = {"health/052_access_log_partitions.sql", "payments/003_entry_partitions.sql",
              "transit/003_tap_partitions.sql", "notifications/004_delivery_partitions.sql",
              "feedback/005_event_partitions.sql"}


async def test_the_migrations_convert_existing_rows_into_their_months(databases, settings, tmp_path):
    """A database holding access-log rows and ledger entries from before the partitioning migrations: after them
    every row sits in its month, the chain still verifies and the ledger still balances."""
    from app import migrate
    from app.asgi import migration_sources
    from app.identity import service as identity
    from health import crypto
    from health import store as health_store
    from payments import store as payments_store
    from tests.conftest import TEST_MODULES

    url = await databases.create("convert")
    sources = migration_sources(TEST_MODULES)
    before = []  # every migration but the two that partition
    for module, folder in sources:
        if folder is not None:
            copy = tmp_path / module
            copy.mkdir()
            for path in folder.glob("*.sql"):
                if f"{module}/{path.name}" not in CONVERTING:
                    (copy / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
            folder = copy
        before.append((module, folder))
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn, before)
        cipher = crypto.cipher_of(settings)
        async with conn.transaction():
            resident = await identity.demo_resident(conn, key="convert", full_name="Lê Văn Cường")
            patient = await health_store.ensure_patient(conn, cipher, resident)
            for at in (dt.datetime(2025, 11, 5, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC), None):
                await health_store.append_access(conn, cipher, patient["id"], actor="client:his", actor_kind="facility",
                                                 facility_id=None, action="read", purpose="consent", what="x", at=at)
        for key, at in (("old", dt.datetime(2025, 7, 4, 10, tzinfo=dt.UTC)), ("new", None)):
            async with conn.transaction():  # the entries as the ledger wrote them before booked_at existed
                tid = await conn.fetchval(
                    "INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason, created_at) "
                    "VALUES ('topup', $1, 100, 'convert', coalesce($2, now())) RETURNING id", key, at)
                await conn.execute("INSERT INTO payment_entry VALUES ($1, 1, -100), ($1, 3, 100)", tid)
                await conn.execute("UPDATE payment_account SET balance_vnd = balance_vnd + "
                                   "CASE id WHEN 1 THEN -100 ELSE 100 END WHERE id IN (1, 3)")
        # taps and a flag naming two of them, a delivery of an old notification, a report's old steps
        old_at, new_at = dt.datetime(2025, 9, 3, 7, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, 8, tzinfo=dt.UTC)
        taps = [uuid.uuid4(), uuid.uuid4()]
        await conn.execute(
            "INSERT INTO transit_tap (tap_id, validator, operator_slug, ticket_id, route_id, vehicle, direction, at, "
            "accepted, fingerprint) SELECT t, 'client:v', 'hanoibus', 7, 101, 'bus-1', 'on', a, true, '\\x01' "
            "FROM unnest($1::uuid[], $2::timestamptz[]) AS u(t, a)", taps, [old_at, new_at])
        await conn.execute("INSERT INTO transit_flag (operator_slug, ticket_id, reason, first_tap, second_tap) "
                           "VALUES ('hanoibus', 7, 'replayed-code', $1, $2)", *taps)
        device = uuid.uuid4()
        await conn.execute("INSERT INTO notification_device (id, resident_id, fcm_token, platform, locale, "
                           "app_version) VALUES ($1, $2, 'tok-convert', 'android', 'vi', '1')", device, resident)
        notification = await conn.fetchval(
            "INSERT INTO notification (resident_id, category, urgency, template, title_vi, body_vi, title_en, "
            "body_en, idempotency_key, created_at) VALUES ($1, 'city', 'normal', 't', 'a', 'b', 'c', 'd', 'k', $2) "
            "RETURNING id", resident, old_at)
        await conn.execute("INSERT INTO notification_delivery (notification_id, device_id, status, updated_at) "
                           "VALUES ($1, $2, 'sent', now())", notification, device)
        report = await conn.fetchval(
            "INSERT INTO report (reporter_id, idempotency_key, visibility, source, category_code, urgency, "
            "description, latitude, longitude, ward_code, unit_code, submitted_at, routed_at, receive_due_at, "
            "answer_due_at, updated_at) SELECT $1, 'convert', 'public', 'app', code, urgency, 'Rác ở góc phố', "
            "21.03, 105.85, 'hoan-kiem', 'hoan-kiem', $2, $2, $2, $2, $2 FROM feedback_category LIMIT 1 "
            "RETURNING id", resident, old_at)
        events = [await conn.fetchval("INSERT INTO report_event (report_id, at, kind, public, actor_role) "
                                      "VALUES ($1, $2, $3, true, 'system') RETURNING id", report, at, kind)
                  for at, kind in ((old_at, "submitted"), (new_at, "received"))]
        await conn.execute("INSERT INTO report_photo (id, owner_id, report_id, event_id, content_type, width, height, "
                           "byte_size, sha256, data, thumbnail) VALUES ($1, $2, $3, $4, 'image/jpeg', 1, 1, 1, 'x', "
                           "'\\x00', '\\x00')", uuid.uuid4(), resident, report, events[1])

        applied = await migrate.migrate(conn, sources)
        assert {m.label for m in applied} == CONVERTING
        part = "tableoid::regclass::text"
        assert [tuple(r) for r in await conn.fetch(f"SELECT tap_id, {part} FROM transit_tap ORDER BY at")] == [
            (taps[0], "transit_tap_p202509"), (taps[1], "transit_tap_p202602")]
        assert await conn.fetchval("SELECT count(*) FROM transit_flag WHERE first_tap = $1", taps[0]) == 1
        assert tuple(await conn.fetchrow(f"SELECT created_at, status, {part} FROM notification_delivery")) == (
            old_at, "sent", "notification_delivery_p202509")
        assert [tuple(r) for r in await conn.fetch(f"SELECT id, kind, {part} FROM report_event ORDER BY id")] == [
            (events[0], "submitted", "report_event_p202509"), (events[1], "received", "report_event_p202602")]
        # the identity goes on after the copied ids
        after = await conn.fetchval("INSERT INTO report_event (report_id, at, kind, public, actor_role) "
                                    "VALUES ($1, now(), 'note', false, 'system') RETURNING id", report)
        assert after == events[1] + 1
        this_month = f"{partitions.month_start(dt.datetime.now(dt.UTC)):%Y%m}"
        log = await conn.fetch("SELECT seq, tableoid::regclass::text AS part FROM health_access_log ORDER BY seq")
        assert [(r["seq"], r["part"]) for r in log] == [
            (1, "health_access_log_p202511"), (2, "health_access_log_p202603"), (3, f"health_access_log_p{this_month}")]
        assert await health_store.verify_chain(conn, cipher, patient["id"]) is None
        entries = await conn.fetch("SELECT t.idempotency_key AS key, e.booked_at = t.created_at AS same, "
                                   "e.tableoid::regclass::text AS part FROM payment_entry e "
                                   "JOIN payment_transaction t ON t.id = e.transaction_id ORDER BY t.id, e.account_id")
        assert [(r["key"], r["same"], r["part"]) for r in entries] == [
            ("old", True, "payment_entry_p202507"), ("old", True, "payment_entry_p202507"),
            ("new", True, f"payment_entry_p{this_month}"), ("new", True, f"payment_entry_p{this_month}")]
        audit = await payments_store.audit(conn)
        assert audit["mismatched_accounts"] == [] and audit["unbalanced_transactions"] == []
        assert audit["entries_total"] == 0 and audit["transactions"] == 2
    finally:
        await conn.close()


