"""Ledger entries are partitioned by month on booked_at (their transaction's time): a posting lands in its
month, a query by booking time reads only its months, every month stays append-only, and the partitions job
never drops money records: past a retention it detaches the month and the table keeps its rows."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from app import partitions
from app.settings import load_settings
from payments import store
from payments.module import module as payments_module
from tests.plans import Recorder, relations

THIS_MONTH = partitions.month_start(dt.datetime.now(dt.UTC))
CLEARING, TREASURY = 1, 3


def month(offset: int) -> dt.datetime:
    return partitions.add_months(THIS_MONTH, offset)


def name(offset: int) -> str:
    return partitions.partition_name("payment_entry", month(offset))


async def booked(conn, at: dt.datetime, amount: int = 1_000) -> int:
    """A balanced transfer between two house accounts, booked at `at`."""
    tid = await conn.fetchval(
        "INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason, created_at) "
        "VALUES ('topup', $1, $2, 'partition test', $3) RETURNING id", uuid.uuid4().hex, amount, at)
    await conn.execute("INSERT INTO payment_entry (transaction_id, account_id, amount_vnd, booked_at) "
                       "VALUES ($1, $2, $3, $5), ($1, $4, -$3, $5)", tid, TREASURY, amount, CLEARING, at)
    return tid


async def test_a_posting_lands_in_its_month_booked_at_its_transaction_time(conn):
    posted = await store.post(conn, kind="topup", key=uuid.uuid4().hex, amount=50_000, resident_id=None,
                              operator=None, reason="partition test", refund_of=None,
                              entries={CLEARING: -50_000, TREASURY: 50_000})
    rows = await conn.fetch("SELECT booked_at, tableoid::regclass::text AS part FROM payment_entry "
                            "WHERE transaction_id = $1", posted["id"])
    assert len(rows) == 2
    assert {(r["booked_at"], r["part"]) for r in rows} == {(posted["created_at"], name(0))}


async def test_a_query_by_booking_time_reads_only_its_months(conn, settings):
    await partitions.maintain(conn, [payments_module], settings)
    for offset in range(4):
        await booked(conn, month(offset) + dt.timedelta(days=1, hours=3))
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) SELECT account_id, sum(amount_vnd) FROM payment_entry "
                               "WHERE booked_at >= $1 AND booked_at < $2 GROUP BY account_id", month(1), month(3))
    assert relations(plan) == {name(1), name(2)}
    totals = await conn.fetch("SELECT account_id, sum(amount_vnd)::bigint AS total FROM payment_entry "
                              "WHERE booked_at >= $1 AND booked_at < $2 GROUP BY account_id ORDER BY account_id",
                              month(1), month(3))
    assert [(r["account_id"], r["total"]) for r in totals] == [(CLEARING, -2_000), (TREASURY, 2_000)]


async def test_every_month_is_append_only(conn):
    # first, before this transaction has deferred checks pending (TRUNCATE refuses those itself)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        async with conn.transaction():
            await conn.execute("TRUNCATE payment_entry")
    tid = await booked(conn, month(0) + dt.timedelta(hours=1))
    for statement in (f"UPDATE {name(0)} SET amount_vnd = 1 WHERE transaction_id = $1",
                      f"DELETE FROM {name(0)} WHERE transaction_id = $1",
                      "DELETE FROM payment_entry WHERE transaction_id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            async with conn.transaction():
                await conn.execute(statement, tid)
    assert await conn.fetchval("SELECT count(*) FROM payment_entry WHERE transaction_id = $1", tid) == 2


async def test_an_unbalanced_month_is_still_refused_at_commit(pool):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            async with conn.transaction():
                tid = await conn.fetchval(
                    "INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason) "
                    "VALUES ('topup', $1, 5, 'unbalanced') RETURNING id", uuid.uuid4().hex)
                await conn.execute(f"INSERT INTO {name(0)} (transaction_id, account_id, amount_vnd) "
                                   "VALUES ($1, $2, 5), ($1, $3, -4)", tid, TREASURY, CLEARING)


async def test_old_months_are_detached_never_dropped(conn, settings):
    await partitions.maintain(conn, [payments_module], settings)
    tid = await booked(conn, month(1) + dt.timedelta(days=2))
    # by default nothing leaves the ledger, however late it is
    assert not [line for line in await partitions.maintain(conn, [payments_module], settings, now=month(40))
                if "detached" in line or "dropped" in line]
    keep_one = load_settings({**settings.environ, "IHANOI_PAYMENTS_ENTRY_RETENTION_MONTHS": "1"})
    done = await partitions.maintain(conn, [payments_module], keep_one, now=month(3))
    assert f"payment_entry: detached {name(1)} (older than 1 month(s); the table is kept)" in done
    assert not [line for line in done if "dropped" in line]
    assert await conn.fetchval(f"SELECT count(*) FROM {name(1)} WHERE transaction_id = $1", tid) == 2
    assert await conn.fetchval("SELECT count(*) FROM payment_entry WHERE transaction_id = $1", tid) == 0


async def test_a_statement_reads_only_its_months_and_its_opening_survives_detached_months(conn, settings):
    await partitions.maintain(conn, [payments_module], settings, now=month(-3))  # months -3 .. 3 exist
    wallet = await conn.fetchval("INSERT INTO payment_account (kind, resident_id) VALUES ('wallet', $1) RETURNING id",
                                 await conn.fetchval("INSERT INTO resident (id, personal_id_hash, personal_id_enc) "
                                                     "VALUES (gen_random_uuid(), '\\x01', '\\x00') RETURNING id"))
    for offset, amount in ((-3, 100_000), (-2, 20_000), (-1, 3_000), (0, 400)):
        at = month(offset) + dt.timedelta(days=2)
        tid = await conn.fetchval(
            "INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason, created_at) "
            "VALUES ('topup', $1, $2, 'statement test', $3) RETURNING id", uuid.uuid4().hex, amount, at)
        await conn.execute("INSERT INTO payment_entry (transaction_id, account_id, amount_vnd, booked_at) "
                           "VALUES ($1, $2, $3, $5), ($1, $4, -$3, $5)", tid, wallet, amount, CLEARING, at)
        await conn.execute("UPDATE payment_account SET balance_vnd = balance_vnd + $2 WHERE id = $1", wallet, amount)
    recorder = Recorder(conn)
    lines = await store.statement_lines(recorder, wallet, month(-2), month(-1))
    assert [r["amount_vnd"] for r in lines] == [20_000]
    assert await recorder.tables(prefix="payment_entry") == {name(-2)}
    assert await store.balance_before(recorder, wallet, month(-1)) == 120_000
    # the opening balance is the balance now less what was booked since: the months before are not read
    assert not {name(-3), name(-2)} & await recorder.tables(prefix="payment_entry")
    # and it stays right when the oldest months leave the ledger (keeping two months: -1 and 0)
    keep_two = load_settings({**settings.environ, "IHANOI_PAYMENTS_ENTRY_RETENTION_MONTHS": "2"})
    done = await partitions.maintain(conn, [payments_module], keep_two)
    assert f"payment_entry: detached {name(-2)} (older than 2 month(s); the table is kept)" in done
    assert await store.balance_before(conn, wallet, month(-1)) == 120_000
    assert await store.balance_before(conn, wallet, month(0)) == 123_000


async def test_the_audit_still_adds_up_after_a_month_is_detached(conn, settings):
    """A detached month leaves what it carried for each account: balances are still checked against all money."""
    from payments import service

    await partitions.maintain(conn, [payments_module], settings, now=month(-3))
    wallet = await conn.fetchval("INSERT INTO payment_account (kind, resident_id) VALUES ('wallet', $1) RETURNING id",
                                 await conn.fetchval("INSERT INTO resident (id, personal_id_hash, personal_id_enc) "
                                                     "VALUES (gen_random_uuid(), '\\x02', '\\x00') RETURNING id"))
    for offset, amount in ((-3, 70_000), (0, 5_000)):
        at = month(offset) + dt.timedelta(days=2)
        tid = await conn.fetchval(
            "INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason, created_at) "
            "VALUES ('topup', $1, $2, 'audit test', $3) RETURNING id", uuid.uuid4().hex, amount, at)
        await conn.execute("INSERT INTO payment_entry (transaction_id, account_id, amount_vnd, booked_at) "
                           "VALUES ($1, $2, $3, $5), ($1, $4, -$3, $5)", tid, wallet, amount, CLEARING, at)
        await conn.execute("UPDATE payment_account SET balance_vnd = balance_vnd + $2 WHERE id IN ($1)", wallet, amount)
        await conn.execute("UPDATE payment_account SET balance_vnd = balance_vnd - $2 WHERE id = $1", CLEARING, amount)
    before = await service.audit(conn)
    assert wallet not in before.mismatched_accounts
    keep_two = load_settings({**settings.environ, "IHANOI_PAYMENTS_ENTRY_RETENTION_MONTHS": "2"})
    done = await partitions.maintain(conn, [payments_module], keep_two)
    assert f"payment_entry: detached {name(-3)} (older than 2 month(s); the table is kept)" in done
    # the wallet's 70,000 left the attached ledger, and was carried
    assert await conn.fetchval("SELECT coalesce(sum(amount_vnd), 0) FROM payment_entry WHERE account_id = $1",
                               wallet) == 5_000
    assert await conn.fetchval("SELECT amount_vnd FROM payment_entry_carried WHERE partition_name = $1 "
                               "AND account_id = $2", name(-3), wallet) == 70_000
    after = await service.audit(conn)
    assert wallet not in after.mismatched_accounts
    assert after.mismatched_accounts == before.mismatched_accounts  # the clearing account too
    assert after.entries_total_vnd == before.entries_total_vnd and after.unbalanced_detached_months == []
    # what was carried is append-only, like the ledger
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        async with conn.transaction():
            await conn.execute("UPDATE payment_entry_carried SET amount_vnd = 0 WHERE account_id = $1", wallet)
