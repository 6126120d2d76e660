"""The ledger and the calls other modules make: charge and refund in the caller's transaction.

Other modules call these in-process (not over HTTP), so they are tested as those modules call them; the
database is checked directly.
"""

from __future__ import annotations

import asyncpg
import pytest

import payments
from app.errors import IdempotencyKeyReused, NotFound
from payments import service, store
from tests.payments.support import RESIDENT_A, RESIDENT_B, ledger_counts, operator, resident_id


async def credit(conn, resident, amount: int) -> None:
    """Money into a wallet as a paid top-up posts it (clearing -X, wallet +X)."""
    wallet = await payments.open_wallet(conn, resident)
    import uuid

    row = await store.post(conn, kind="topup", key=f"test:{uuid.uuid4().hex}", amount=amount, resident_id=resident,
                           operator=None, reason="vnpay", refund_of=None,
                           entries={service.CLEARING: -amount, wallet: amount})
    assert row is not None


async def entries_of(conn, transaction_id: int) -> dict[int, int]:
    rows = await conn.fetch("SELECT account_id, amount_vnd FROM payment_entry WHERE transaction_id = $1",
                            transaction_id)
    return {r["account_id"]: r["amount_vnd"] for r in rows}


async def check_books(conn) -> None:
    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred balance checks, now
    await conn.execute("SET CONSTRAINTS ALL DEFERRED")
    audit = await service.audit(conn)
    assert audit.ok, audit


@pytest.fixture
async def payer(client, conn):
    return await resident_id(client, conn, RESIDENT_A)


async def test_a_charge_moves_money_from_wallet_to_operator_and_fee(conn, payer):
    slug = await operator(conn, fee_bps=150)  # 1.5 %
    await credit(conn, payer, 100_000)
    posted = await payments.charge(conn, payer, slug, 30_000, "lot:hang-bac", "parking:session:1")
    assert (posted.amount_vnd, posted.fee_vnd, posted.replayed) == (30_000, 450, False)
    wallet = (await store.wallet(conn, payer))["id"]
    op = (await store.operator_account(conn, slug))["id"]
    assert await entries_of(conn, posted.transaction_id) == {wallet: -30_000, op: 29_550, service.FEES: 450}
    assert await payments.balance_of(conn, payer) == 70_000
    assert posted.created_at.utcoffset().total_seconds() == 7 * 3600  # shown in Asia/Ho_Chi_Minh
    await check_books(conn)


async def test_the_same_key_never_charges_twice(conn, payer):
    slug = await operator(conn)
    await credit(conn, payer, 100_000)
    first = await payments.charge(conn, payer, slug, 10_000, "monthly-pass", "pass:42")
    again = await payments.charge(conn, payer, slug, 10_000, "monthly-pass", "pass:42")
    assert again.replayed and again.transaction_id == first.transaction_id
    assert await payments.balance_of(conn, payer) == 90_000
    with pytest.raises(IdempotencyKeyReused):
        await payments.charge(conn, payer, slug, 20_000, "monthly-pass", "pass:42")
    # the database's unique constraint, not only the service's check
    with pytest.raises(asyncpg.UniqueViolationError):
        async with conn.transaction():
            await conn.execute("INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason) "
                               "VALUES ('charge', 'pass:42', 1, 'x')")


async def test_insufficient_funds_writes_nothing_and_the_caller_goes_on(conn, payer):
    slug = await operator(conn)
    await credit(conn, payer, 5_000)
    before = await ledger_counts(conn)
    async with conn.transaction():  # the caller's own work, e.g. a parking session
        await conn.execute("CREATE TEMP TABLE parking_debt (amount bigint) ON COMMIT DROP")
        try:
            async with conn.transaction():  # a savepoint, as parking does
                await payments.charge(conn, payer, slug, 25_000, "lot:hang-bac", "parking:session:2")
        except payments.InsufficientFunds as exc:
            assert exc.extra == {"balance_vnd": 5_000, "amount_vnd": 25_000, "missing_vnd": 20_000}
            await conn.execute("INSERT INTO parking_debt VALUES (25000)")
        assert await conn.fetchval("SELECT sum(amount) FROM parking_debt") == 25_000
    assert await ledger_counts(conn) == before
    assert await payments.balance_of(conn, payer) == 5_000
    # a resident who never topped up has an empty wallet: the same problem
    other = await resident_id_of(conn, RESIDENT_B)
    with pytest.raises(payments.InsufficientFunds):
        await payments.charge(conn, other, slug, 1_000, "lot:hang-bac", "parking:session:3")


async def resident_id_of(conn, personal_id: str):
    import hashlib

    from app.identity.store import insert_bare_resident

    row = await insert_bare_resident(conn, personal_id_hash=hashlib.sha256(personal_id.encode()).digest(),
                                     personal_id_enc=b"")
    return row["id"]


@pytest.mark.parametrize("amount", [0, -1, -50_000, 1.5, 10_000.0, 10**12, True, "10000", None])
async def test_bad_amounts_are_refused_and_the_ledger_untouched(conn, payer, amount):
    slug = await operator(conn)
    await credit(conn, payer, 100_000)
    before = await ledger_counts(conn)
    with pytest.raises(payments.AmountInvalid) as refused:
        await payments.charge(conn, payer, slug, amount, "monthly-pass", f"bad:{amount!r}")
    assert refused.value.errors[0].field == "amount_vnd"
    assert await ledger_counts(conn) == before


async def test_unknown_wallet_operator_and_bad_reason(conn, payer):
    import uuid

    slug = await operator(conn)
    await credit(conn, payer, 100_000)
    before = await ledger_counts(conn)
    with pytest.raises(payments.WalletNotFound):
        await payments.charge(conn, uuid.uuid4(), slug, 1_000, "x", "unknown-wallet")
    with pytest.raises(NotFound):
        await payments.charge(conn, payer, "no-such-operator", 1_000, "x", "unknown-operator")
    from app.errors import InvalidInput

    for bad in ("", "   ", "x" * 121):
        with pytest.raises(InvalidInput):
            await payments.charge(conn, payer, slug, 1_000, bad, f"bad-reason-{len(bad)}")
    with pytest.raises(InvalidInput):
        await payments.charge(conn, "not-a-uuid", slug, 1_000, "x", "bad-payer")
    assert await ledger_counts(conn) == before


async def test_reason_is_stored_nfc(conn, payer):
    import unicodedata

    slug = await operator(conn)
    await credit(conn, payer, 100_000)
    decomposed = unicodedata.normalize("NFD", "Bãi xe Hàng Bạc")
    posted = await payments.charge(conn, payer, slug, 1_000, decomposed, "nfc:1")
    stored = await conn.fetchval("SELECT reason FROM payment_transaction WHERE id = $1", posted.transaction_id)
    assert stored == unicodedata.normalize("NFC", "Bãi xe Hàng Bạc") != decomposed


async def test_refunds_give_back_at_most_the_charge_and_its_fee_share(conn, payer):
    slug = await operator(conn, fee_bps=1000)  # 10 %
    await credit(conn, payer, 100_000)
    charged = await payments.charge(conn, payer, slug, 33_333, "lot:a", "charge:refundable")
    part = await payments.refund(conn, charged.transaction_id, 10_000, "refund:1")
    assert (part.amount_vnd, part.fee_vnd) == (10_000, 999)  # 10,000 x 3,333 / 33,333, rounded down
    assert (await payments.refund(conn, charged.transaction_id, 10_000, "refund:1")).replayed
    with pytest.raises(payments.AmountInvalid):
        await payments.refund(conn, charged.transaction_id, 23_334, "refund:too-much")
    rest = await payments.refund(conn, charged.transaction_id, None, "refund:2")
    assert rest.amount_vnd == 23_333 and part.fee_vnd + rest.fee_vnd == charged.fee_vnd == 3_333
    assert await payments.balance_of(conn, payer) == 100_000
    assert (await store.operator_account(conn, slug))["balance_vnd"] == 0
    with pytest.raises(payments.AmountInvalid):
        await payments.refund(conn, charged.transaction_id, 1, "refund:3")
    with pytest.raises(NotFound):
        await payments.refund(conn, rest.transaction_id, 1, "refund:of-a-refund")
    await check_books(conn)


async def test_the_database_refuses_an_unbalanced_transaction(pool, conn, payer):
    slug = await operator(conn)
    account = (await store.operator_account(conn, slug))["id"]

    async def write(entries: list[tuple[int, int]]) -> None:
        async with conn.transaction():
            tid = await conn.fetchval("INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, reason) "
                                      "VALUES ('remittance', $1, 100, 'x') RETURNING id", str(entries))
            for account_id, amount in entries:
                await conn.execute("INSERT INTO payment_entry VALUES ($1, $2, $3)", tid, account_id, amount)
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT does

    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        await write([(account, -100), (service.TREASURY, 99)])
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced|fewer than two"):
        await write([(account, -100)])
    with pytest.raises(asyncpg.CheckViolationError, match="fewer than two"):
        await write([])
    await write([(account, -100), (service.TREASURY, 100)])  # balanced: accepted
    # and a real COMMIT of an unbalanced one, on a connection of its own
    async with pool.acquire() as other:
        with pytest.raises(asyncpg.CheckViolationError):
            async with other.transaction():
                tid = await other.fetchval("INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, "
                                           "reason) VALUES ('remittance', 'commit-test', 5, 'x') RETURNING id")
                await other.execute("INSERT INTO payment_entry VALUES ($1, $2, 5), ($1, $3, -4)", tid,
                                    service.TREASURY, service.FEES)
        kept = await other.fetchval("SELECT count(*) FROM payment_transaction WHERE idempotency_key = 'commit-test'")
        assert kept == 0


async def test_entries_and_transactions_are_append_only(conn, payer):
    slug = await operator(conn)
    await credit(conn, payer, 10_000)
    posted = await payments.charge(conn, payer, slug, 1_000, "x", "append-only")
    for statement in ("UPDATE payment_entry SET amount_vnd = amount_vnd WHERE transaction_id = $1",
                      "DELETE FROM payment_entry WHERE transaction_id = $1",
                      "UPDATE payment_transaction SET reason = 'y' WHERE id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            async with conn.transaction():
                await conn.execute(statement, posted.transaction_id)


async def test_a_wallet_is_never_negative_even_written_around_the_service(conn, payer):
    wallet = await payments.open_wallet(conn, payer)
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            await store.post(conn, kind="remittance", key="around", amount=1, resident_id=None, operator=None,
                             reason="x", refund_of=None, entries={wallet: -1, service.TREASURY: 1})


async def test_the_audit_finds_a_balance_that_is_not_its_entries(conn, payer, redis, settings):
    import logging
    from contextlib import asynccontextmanager

    from modules import JobContext
    from payments.module import audit as audit_job

    await credit(conn, payer, 10_000)
    assert (await service.audit(conn)).ok
    # damage written around the service (the test's transaction is rolled back at its end)
    await conn.execute("UPDATE payment_account SET balance_vnd = balance_vnd + 1 WHERE resident_id = $1", payer)
    result = await service.audit(conn)
    assert not result.ok and result.mismatched_accounts == [await payments.open_wallet(conn, payer)]
    assert result.balances_total_vnd == 1

    class OneConnection:
        @asynccontextmanager
        async def acquire(self):
            yield conn

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ihanoi.payments").addHandler(handler)
    try:
        await audit_job(JobContext(pool=OneConnection(), redis=redis, settings=settings, log=logging.getLogger("t")))
    finally:
        logging.getLogger("ihanoi.payments").removeHandler(handler)
    assert [r.getMessage() for r in records] == ["ledger audit failed"]


async def test_a_kiosk_cash_sale_posts_cash_to_the_operator_once_and_is_remitted_like_charges(conn):
    slug = await operator(conn, kind="transit", fee_bps=150)
    before = await ledger_counts(conn)
    sold = await payments.record_cash_sale(conn, slug, 8_000, "bus-paper-single (cash)", "transit:kiosk:1")
    assert (sold.kind, sold.amount_vnd, sold.fee_vnd, sold.replayed) == ("cash_sale", 8_000, 0, False)
    op = (await store.operator_account(conn, slug))["id"]
    assert await entries_of(conn, sold.transaction_id) == {service.CASH: -8_000, op: 8_000}  # no fee on cash
    again = await payments.record_cash_sale(conn, slug, 8_000, "bus-paper-single (cash)", "transit:kiosk:1")
    assert again.replayed and again.transaction_id == sold.transaction_id
    with pytest.raises(IdempotencyKeyReused):
        await payments.record_cash_sale(conn, slug, 10_000, "bus-paper-single (cash)", "transit:kiosk:1")
    assert (await payments.operator_outstanding(conn, slug))["outstanding_vnd"] == 8_000
    remitted = await service.remit(conn, slug, 8_000, "UNC-1", "remit:kiosk:1")
    assert remitted.amount_vnd == 8_000 and (await payments.operator_outstanding(conn, slug))["outstanding_vnd"] == 0
    # bad input and an unknown operator write nothing
    after = await ledger_counts(conn)
    for amount in (0, -8_000, 8_000.5):
        with pytest.raises(service.AmountInvalid):
            await payments.record_cash_sale(conn, slug, amount, "bus-paper-single", f"transit:kiosk:{amount}")
    with pytest.raises(NotFound):
        await payments.record_cash_sale(conn, "no-such-op", 8_000, "bus-paper-single", "transit:kiosk:2")
    assert await ledger_counts(conn) == after and after[0] == before[0] + 2
    await check_books(conn)
