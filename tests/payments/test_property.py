"""Property-based: 10,000 random operations (top-ups, charges good and bad, refunds, remittances) through the
service functions leave a ledger that sums to zero, every balance equal to its entries and to a model of it,
and no wallet below zero.

The operations run on one connection inside a transaction rolled back at the end (each example inside a
savepoint), so that the 10,000 take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import uvloop
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import payments
from app import db
from app.errors import DomainError
from app.identity.store import insert_bare_resident
from modules import catalog
from payments import service, store

EXAMPLES, STEPS = 50, 200  # up to 10,000 operations a run; runs again until 10,000 were done
OPERATORS = (("prop-bus", "transit", 0), ("prop-park", "parking", 250), ("prop-metro", "transit", 1_000))
amounts = st.one_of(st.integers(min_value=1, max_value=300_000), st.sampled_from([0, -1, -5_000, 10**10]))


class Ledger(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection
    residents: list[uuid.UUID]
    wallet_ids: dict[uuid.UUID, int]
    operations = 0

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    @initialize()
    def start(self) -> None:
        self.savepoint = self.conn.transaction()
        self.run(self.savepoint.start())
        self.wallets = {r: 0 for r in self.residents}  # the model: what each wallet should hold
        self.operators = {slug: 0 for slug, _, _ in OPERATORS}
        self.charges: list[tuple[int, uuid.UUID, str, int, int]] = []  # id, payer, operator, amount, fee
        self.refunded: dict[int, int] = {}
        self.treasury = self.fees = self.clearing = 0

    def teardown(self) -> None:
        if hasattr(self, "savepoint"):
            self.check_books()
            self.run(self.savepoint.rollback())

    def check_books(self) -> None:
        self.run(self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE"))  # the commit-time balance checks, now
        self.run(self.conn.execute("SET CONSTRAINTS ALL DEFERRED"))
        audit = self.run(service.audit(self.conn))
        assert audit.ok, audit
        for resident, expected in self.wallets.items():
            assert self.run(payments.balance_of(self.conn, resident)) == expected
        for slug, expected in self.operators.items():
            assert self.run(store.operator_account(self.conn, slug))["balance_vnd"] == expected
        house = self.run(store.house_balances(self.conn))
        assert house["fees"] == self.fees + self.base["fees"]
        assert house["treasury"] == self.treasury + self.base["treasury"]

    @rule(who=st.integers(0, 3), amount=st.integers(min_value=1, max_value=500_000))
    def top_up(self, who: int, amount: int) -> None:
        resident = self.residents[who]
        wallet = self.wallet_ids[resident]
        self.run(store.post(self.conn, kind="topup", key=uuid.uuid4().hex, amount=amount, resident_id=resident,
                            operator=None, reason="vnpay", refund_of=None,
                            entries={service.CLEARING: -amount, wallet: amount}))
        self.wallets[resident] += amount
        Ledger.operations += 1

    @rule(who=st.integers(0, 3), op=st.integers(0, 2), amount=amounts, repeat=st.booleans())
    def charge(self, who: int, op: int, amount: int, repeat: bool) -> None:
        resident, (slug, _, fee_bps) = self.residents[who], OPERATORS[op]
        key = uuid.uuid4().hex
        try:
            posted = self.run(payments.charge(self.conn, resident, slug, amount, "prop", key))
        except payments.AmountInvalid:
            assert amount <= 0 or amount > service.MAX_AMOUNT_VND
        except payments.InsufficientFunds:
            assert 0 < amount <= service.MAX_AMOUNT_VND and self.wallets[resident] < amount
        else:
            assert self.wallets[resident] >= amount > 0
            fee = amount * fee_bps // 10_000
            assert posted.fee_vnd == fee
            self.wallets[resident] -= amount
            self.operators[slug] += amount - fee
            self.fees += fee
            self.charges.append((posted.transaction_id, resident, slug, amount, fee))
            if repeat:  # a retried caller: the same key charges once
                again = self.run(payments.charge(self.conn, resident, slug, amount, "prop", key))
                assert again.replayed and again.transaction_id == posted.transaction_id
        Ledger.operations += 1

    @precondition(lambda self: self.charges)
    @rule(pick=st.integers(0, 10**6), part=st.one_of(st.none(), st.integers(min_value=-10, max_value=300_000)))
    def refund(self, pick: int, part: int | None) -> None:
        charge_id, resident, slug, amount, fee = self.charges[pick % len(self.charges)]
        left = amount - self.refunded.get(charge_id, 0)
        try:
            posted = self.run(payments.refund(self.conn, charge_id, part, uuid.uuid4().hex))
        except payments.AmountInvalid:
            assert (part if part is not None else left) <= 0 or (part or 0) > left
        else:
            given = left if part is None else part
            assert posted.amount_vnd == given and 0 < given <= left
            self.refunded[charge_id] = self.refunded.get(charge_id, 0) + given
            self.wallets[resident] += given
            self.operators[slug] -= given - posted.fee_vnd
            self.fees -= posted.fee_vnd
        Ledger.operations += 1

    @rule(op=st.integers(0, 2), amount=amounts)
    def remit(self, op: int, amount: int) -> None:
        slug = OPERATORS[op][0]
        try:
            self.run(payments.service.remit(self.conn, slug, amount, "KBNN", uuid.uuid4().hex))
        except DomainError:
            assert amount <= 0 or amount > self.operators[slug]
        else:
            self.operators[slug] -= amount
            self.treasury += amount
        Ledger.operations += 1

    @invariant()
    def wallets_never_negative(self) -> None:
        assert all(v >= 0 for v in self.wallets.values())


def test_ten_thousand_random_operations_keep_the_books(database_url):
    catalog.install(catalog.load())
    loop = uvloop.new_event_loop()  # the same loop the server runs on; a third faster than asyncio's here
    pool = loop.run_until_complete(db.create_pool(database_url, min_size=1, max_size=1, timeout=10))
    conn = loop.run_until_complete(pool.acquire())
    outer = conn.transaction()
    loop.run_until_complete(outer.start())
    try:
        residents = []
        for n in range(4):
            row = loop.run_until_complete(insert_bare_resident(
                conn, personal_id_hash=hashlib.sha256(f"prop:{uuid.uuid4()}:{n}".encode()).digest(),
                personal_id_enc=b""))
            residents.append(row["id"])
        wallet_ids = {r: loop.run_until_complete(payments.open_wallet(conn, r)) for r in residents}
        for slug, kind, fee_bps in OPERATORS:
            loop.run_until_complete(payments.ensure_operator(conn, slug, slug, kind, fee_bps))
        Ledger.loop, Ledger.conn, Ledger.residents, Ledger.wallet_ids = loop, conn, residents, wallet_ids
        Ledger.base = loop.run_until_complete(store.house_balances(conn))
        Ledger.operations = 0
        options = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                           suppress_health_check=list(HealthCheck))
        while Ledger.operations < 10_000:  # hypothesis ends some examples early: run until 10,000 were done
            left = 10_000 - Ledger.operations
            run_state_machine_as_test(Ledger, settings=settings(options, max_examples=max(1, min(EXAMPLES,
                                                                                             left // STEPS + 1))))
        print(f"{Ledger.operations} operations")
    finally:
        loop.run_until_complete(outer.rollback())
        loop.run_until_complete(pool.release(conn))
        loop.run_until_complete(pool.close())
        loop.close()
