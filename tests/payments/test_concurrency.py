"""Concurrent charges on one wallet from two OS processes never overdraw it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from asyncio.subprocess import PIPE

import payments
from app.identity.store import insert_bare_resident
from payments import service, store
from tests.conftest import ROOT, process_env


async def test_two_processes_charging_one_wallet_never_overdraw(pool, database_url):
    # committed data (the processes have their own connections); the run's database is dropped at its end
    tag = uuid.uuid4().hex[:10]
    slug = f"race-{tag}"
    async with pool.acquire() as conn, conn.transaction():
        payer = (await insert_bare_resident(conn, personal_id_hash=hashlib.sha256(tag.encode()).digest(),
                                            personal_id_enc=b""))["id"]
        await payments.ensure_operator(conn, slug, "Race operator", "parking", fee_bps=100)
        wallet = await payments.open_wallet(conn, payer)
        await store.post(conn, kind="topup", key=f"race:{tag}", amount=100_000, resident_id=payer, operator=None,
                         reason="vnpay", refund_of=None, entries={service.CLEARING: -100_000, wallet: 100_000})
    start_at = time.time() + 3
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.payments.charger", database_url, str(payer), slug, "5000", "40", "4",
        f"{tag}:{n}", str(start_at), cwd=ROOT, env=process_env(), stdout=PIPE, stderr=PIPE) for n in range(2)]
    results = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    # 80 attempts of 5,000 on 100,000: exactly 20 go through, whichever process makes them
    assert sum(r["charged"] for r in results) == 20
    assert all(r["charged"] + r["refused"] == 40 for r in results)
    async with pool.acquire() as conn:
        assert await payments.balance_of(conn, payer) == 0
        charged = await conn.fetchval(
            "SELECT count(*) FROM payment_transaction WHERE resident_id = $1 AND kind = 'charge'", payer)
        assert charged == 20
        assert await conn.fetchval("SELECT sum(amount_vnd) FROM payment_entry WHERE account_id = $1", wallet) == 0
        operator = await store.operator_account(conn, slug)
        assert operator["balance_vnd"] == 20 * (5_000 - 50)
        assert (await service.audit(conn)).ok


async def test_concurrent_charges_to_one_hot_operator_do_not_deadlock(pool):
    """Two gates of one busy lot: charges from different wallets to one operator (and the fees account) at once."""
    import asyncpg

    tag = uuid.uuid4().hex[:10]
    slug = f"hot-{tag}"
    async with pool.acquire() as conn, conn.transaction():
        await payments.ensure_operator(conn, slug, "Hot operator", "parking", fee_bps=100)
        payers = []
        for n in range(8):
            payer = (await insert_bare_resident(conn, personal_id_hash=hashlib.sha256(f"{tag}:{n}".encode()).digest(),
                                                personal_id_enc=b""))["id"]
            wallet = await payments.open_wallet(conn, payer)
            await store.post(conn, kind="topup", key=f"hot:{tag}:{n}", amount=10_000_000, resident_id=payer,
                             operator=None, reason="vnpay", refund_of=None,
                             entries={service.CLEARING: -10_000_000, wallet: 10_000_000})
            payers.append(payer)
    deadlocks = 0

    async def gate(number: int) -> None:
        nonlocal deadlocks
        for i in range(30):
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        await payments.charge(conn, payers[number], slug, 5_000, "hot-lot", f"hot:{tag}:{number}:{i}")
                except asyncpg.DeadlockDetectedError:
                    deadlocks += 1

    await asyncio.gather(*(gate(n) for n in range(8)))
    assert deadlocks == 0
    async with pool.acquire() as conn:
        assert (await store.operator_account(conn, slug))["balance_vnd"] == 8 * 30 * (5_000 - 50)
        assert (await service.audit(conn)).ok
