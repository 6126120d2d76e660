"""The access log is partitioned by month: rows land in their month, a query by time reads only its months,
the chain and the append-only rule hold across months, and the kernel's job keeps months ahead and detaches
(never drops) months past the retention setting."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from app import partitions
from app.identity import service as identity
from app.settings import load_settings
from health import crypto, store
from health.module import module as health_module
from tests.plans import relations

NOW = dt.datetime.now(dt.UTC)
THIS_MONTH = partitions.month_start(NOW)


def month(offset: int) -> dt.datetime:
    return partitions.add_months(THIS_MONTH, offset)


def name(offset: int) -> str:
    return partitions.partition_name("health_access_log", month(offset))


async def attached(conn) -> set[str]:
    return {p.name for p in await partitions.partitions_of(conn, "health_access_log")}


def with_env(settings, **env: str):
    return load_settings({**settings.environ, **env})


async def a_patient(conn, settings, key: str = "partitions"):
    cipher = crypto.cipher_of(settings)
    resident = await identity.demo_resident(conn, key=key, full_name="Trần Thị Bình")
    return cipher, await store.ensure_patient(conn, cipher, resident)


async def test_the_job_keeps_months_ahead_and_is_idempotent(conn, settings):
    done = await partitions.maintain(conn, [health_module], settings, now=NOW)
    assert {name(k) for k in range(4)} | {"health_access_log_default"} <= await attached(conn)
    assert all(name(0) not in line for line in done if "created" in line)  # the migration made this month
    assert await partitions.maintain(conn, [health_module], settings, now=NOW) == []
    # a month later (the job did not run in between): one more month, and nothing detached by default
    later = await partitions.maintain(conn, [health_module], settings, now=month(1) + dt.timedelta(days=3))
    assert later == [f"health_access_log: created {name(4)} [{month(4):%Y-%m-%d}, {month(5):%Y-%m-%d})"]


async def test_an_append_lands_in_its_month_and_the_chain_spans_months(conn, settings):
    await partitions.maintain(conn, [health_module], settings, now=NOW)
    cipher, patient = await a_patient(conn, settings)
    for offset in (0, 1, 2, 1):
        await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                                  facility_id=None, action="read", purpose="consent", what=f"read {offset}",
                                  at=month(offset) + dt.timedelta(days=2))
    # a clock years ahead still appends: the row waits in DEFAULT
    await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                              facility_id=None, action="read", purpose="consent", what="far",
                              at=month(60))
    rows = await conn.fetch("SELECT seq, tableoid::regclass::text AS part FROM health_access_log "
                            "WHERE patient_id = $1 ORDER BY seq", patient["id"])
    assert [(r["seq"], r["part"]) for r in rows] == [
        (1, name(0)), (2, name(1)), (3, name(2)), (4, name(1)), (5, "health_access_log_default")]
    assert await store.verify_chain(conn, cipher, patient["id"]) is None
    assert [r["seq"] for r in await store.access_log(conn, patient["id"], limit=10)] == [5, 4, 3, 2, 1]
    # the job will not make that far month while a row of it sits in DEFAULT, and says so
    done = await partitions.maintain(conn, [health_module], settings, now=month(60))
    assert f"health_access_log: {partitions.partition_name('health_access_log', month(60))} not created: " \
           "1 row(s) of that month are in health_access_log_default" in done


async def test_a_query_by_time_reads_only_its_months(conn, settings):
    await partitions.maintain(conn, [health_module], settings, now=NOW)
    cipher, patient = await a_patient(conn, settings)
    for offset in range(4):
        await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                                  facility_id=None, action="read", purpose="consent", what="x",
                                  at=month(offset) + dt.timedelta(hours=5))

    async def read_by(sql: str, *args) -> set[str]:
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
        return relations(plan)

    one_month = await read_by("SELECT * FROM health_access_log WHERE at >= $1 AND at < $2",
                              month(1), month(2))
    assert one_month == {name(1)}
    two_months = await read_by("SELECT count(*) FROM health_access_log WHERE patient_id = $1 AND at >= $2 "
                               "AND at < $3", patient["id"], month(2) + dt.timedelta(days=1), month(4))
    assert two_months == {name(2), name(3)}
    # without a time filter every month is read: the point of filtering by time
    assert {name(0), name(1), name(2), name(3), "health_access_log_default"} <= await read_by(
        "SELECT * FROM health_access_log WHERE patient_id = $1", patient["id"])


async def test_every_month_is_append_only(conn, settings):
    cipher, patient = await a_patient(conn, settings)
    await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                              facility_id=None, action="read", purpose="consent", what="x")
    for statement in (f"UPDATE {name(0)} SET actor = 'x' WHERE patient_id = $1",
                      f"DELETE FROM {name(0)} WHERE patient_id = $1",
                      "UPDATE health_access_log SET actor = 'x' WHERE patient_id = $1",
                      "DELETE FROM health_access_log WHERE patient_id = $1"):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            async with conn.transaction():
                await conn.execute(statement, patient["id"])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with conn.transaction():
            await conn.execute("TRUNCATE health_access_log")
    assert await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1", patient["id"]) == 1


async def test_past_retention_months_are_detached_and_kept(conn, settings):
    await partitions.maintain(conn, [health_module], settings, now=NOW)
    cipher, patient = await a_patient(conn, settings)
    await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                              facility_id=None, action="read", purpose="consent", what="old",
                              at=month(1) + dt.timedelta(days=1))
    keep_two = with_env(settings, IHANOI_HEALTH_ACCESS_LOG_RETENTION_MONTHS="2")
    # five months on, keeping two months (that one and the one before): months 0..3 leave the table
    done = await partitions.maintain(conn, [health_module], keep_two, now=month(5) + dt.timedelta(days=1))
    for offset in range(4):
        assert f"health_access_log: detached {name(offset)} (older than 2 month(s); the table is kept)" in done
    now_attached = await attached(conn)
    assert not {name(k) for k in range(4)} & now_attached
    assert {name(4), name(5), name(6), name(7), name(8)} <= now_attached
    # detached, not dropped: the month's rows are still there for the archive, out of the live log
    assert await conn.fetchval(f"SELECT count(*) FROM {name(1)} WHERE patient_id = $1", patient["id"]) == 1
    assert await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1", patient["id"]) == 0
    assert await partitions.maintain(conn, [health_module], keep_two, now=month(5) + dt.timedelta(days=1)) == []


async def read_at(conn, cipher, patient, at: dt.datetime) -> None:
    await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                              facility_id=None, action="read", purpose="consent", what="x", at=at)


async def test_the_chain_still_verifies_from_the_anchors_once_months_are_detached(conn, settings):
    await partitions.maintain(conn, [health_module], settings, now=NOW)
    cipher, regular = await a_patient(conn, settings, "anchor-regular")
    _, quiet = await a_patient(conn, settings, "anchor-quiet")
    _, archived = await a_patient(conn, settings, "anchor-archived")
    # regular: read every month (months 0 and 1 will leave, 2 and 3 stay); quiet: read in month 0 only, so even
    # the head's row leaves; archived: its detached month is then tampered with
    for offset in (0, 0, 1, 2, 3):
        await read_at(conn, cipher, regular, month(offset) + dt.timedelta(days=1 + offset))
    await read_at(conn, cipher, quiet, month(0) + dt.timedelta(days=4))
    await read_at(conn, cipher, quiet, month(0) + dt.timedelta(days=5))
    for offset in (1, 3):
        await read_at(conn, cipher, archived, month(offset) + dt.timedelta(hours=3))
    keep_two = with_env(settings, IHANOI_HEALTH_ACCESS_LOG_RETENTION_MONTHS="2")
    done = await partitions.maintain(conn, [health_module], keep_two, now=month(3) + dt.timedelta(days=10))
    assert f"health_access_log: detached {name(1)} (older than 2 month(s); the table is kept)" in done
    assert [r["seq"] for r in await store.access_log(conn, regular["id"], limit=10)] == [5, 4]
    anchors = await conn.fetch("SELECT patient_id, seq, partition_name FROM health_access_log_anchor "
                               "WHERE patient_id = ANY($1) ORDER BY partition_name, seq",
                               [regular["id"], quiet["id"], archived["id"]])
    assert {(r["patient_id"], r["seq"], r["partition_name"]) for r in anchors} == {
        (regular["id"], 2, name(0)), (regular["id"], 3, name(1)), (quiet["id"], 2, name(0)),
        (archived["id"], 1, name(1))}
    for patient in (regular, quiet, archived):
        assert await store.verify_chain(conn, cipher, patient["id"]) is None
    # an anchor is checked against its month's table while that is kept: a row changed in the archive shows
    await conn.execute(f"ALTER TABLE {name(1)} DISABLE TRIGGER USER")
    await conn.execute(f"UPDATE {name(1)} SET hash = '\\x00' WHERE patient_id = $1", archived["id"])
    assert await store.verify_chain(conn, cipher, archived["id"]) == 1
    # nobody rewrites an anchor
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with conn.transaction():
            await conn.execute("DELETE FROM health_access_log_anchor WHERE patient_id = $1", regular["id"])


async def test_without_its_anchor_a_detached_month_is_a_break(conn, settings):
    import dataclasses

    no_anchors = dataclasses.replace(health_module, partitions=[
        dataclasses.replace(health_module.partitions[0], before_expire=None)])
    await partitions.maintain(conn, [no_anchors], settings, now=NOW)
    cipher, patient = await a_patient(conn, settings, "no-anchor")
    for offset in (0, 2):
        await read_at(conn, cipher, patient, month(offset) + dt.timedelta(days=1))
    keep_two = with_env(settings, IHANOI_HEALTH_ACCESS_LOG_RETENTION_MONTHS="2")
    await partitions.maintain(conn, [no_anchors], keep_two, now=month(2) + dt.timedelta(days=3))
    assert await store.verify_chain(conn, cipher, patient["id"]) == 1
