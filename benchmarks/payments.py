"""Payments: charges per second through `payments.charge` against a bare asyncpg transaction writing the same rows
(the transaction, its entries and the balances), in the same run, on many wallets and on one hot wallet.

    .venv/bin/python -m benchmarks.payments [--wallets 2000] [--operators 20] [--concurrency 16] [--seconds 5]
                                            [--rounds 2]

1. Creates a throw-away database on BENCH_DATABASE_URL / DATABASE_URL / the local default (embedded PostgreSQL if
   unreachable), applies the migrations of the catalog's modules, and seeds --wallets residents whose wallets are
   credited through balanced top-up transactions, and --operators operators (a 1 % fee, so each charge writes
   three entries: wallet, operator, fees).
2. For each scenario (many wallets: each charge picks a random wallet and operator; hot wallet: every charge is on
   one wallet) and each round, measures --seconds of charges with --concurrency connections in flight, twice:
   `payments.charge` inside `conn.transaction()` (what a caller does: wallet row locked FOR UPDATE, key and
   operator checked, then the one posting statement), and the bare transaction: the same posting statement alone
   (no lock, no checks). Rounds alternate the two so that both see the same machine.
3. Checks the ledger afterwards (every balance equals its entries, everything sums to zero) and prints the rates
   and the ratio service / bare. Goal: many wallets >= 0.5.

Everything it creates is dropped at the end (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import time
import uuid
from urllib.parse import urlsplit

from benchmarks import common


async def seed(url: str, wallets: int, operators: int) -> tuple[list[uuid.UUID], list[str]]:
    import asyncpg

    from app import migrate
    from app.asgi import migration_sources
    from app.identity.store import insert_bare_resident
    from modules import catalog
    from payments import service, store

    modules = catalog.load()
    catalog.install(modules)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn, migration_sources(modules))
        async with conn.transaction():
            slugs = [f"bench-op-{n:03d}" for n in range(operators)]
            for slug in slugs:
                await service.ensure_operator(conn, slug, slug, "parking", 100)
            residents = []
            for n in range(wallets):
                row = await insert_bare_resident(conn, personal_id_hash=hashlib.sha256(f"bench:{n}".encode()).digest(),
                                                 personal_id_enc=b"")
                wallet = await store.open_wallet(conn, row["id"])
                amount = 10**12  # enough for any run: no charge is refused, no low-balance notice is sent
                await store.post(conn, kind="topup", key=f"bench-seed:{n}", amount=amount, resident_id=row["id"],
                                 operator=None, reason="vnpay", refund_of=None,
                                 entries={service.CLEARING: -amount, wallet: amount})
                residents.append(row["id"])
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return residents, slugs


async def measure(pool, how: str, residents: list, slugs: list[str], concurrency: int, seconds: float,
                  accounts: dict) -> float:
    import payments
    from payments import service, store

    done = 0
    stop_at = time.monotonic() + seconds
    run = uuid.uuid4().hex[:8]

    async def worker(number: int) -> None:
        nonlocal done
        rng = random.Random(number)
        i = 0
        async with pool.acquire() as conn:
            while time.monotonic() < stop_at:
                resident = residents[rng.randrange(len(residents))]
                slug = slugs[rng.randrange(len(slugs))]
                amount = rng.randrange(1_000, 50_000)
                key = f"{how}:{run}:{number}:{i}"
                async with conn.transaction():
                    if how == "service":
                        await payments.charge(conn, resident, slug, amount, "bench", key)
                    else:
                        fee = amount // 100
                        wallet, operator = accounts[resident], accounts[slug]
                        entries = {wallet: -amount, operator: amount - fee, service.FEES: fee}
                        ordered = sorted(entries)
                        await conn.fetchrow(store._POST, "charge", key, amount, fee, resident, slug, "bench", None,
                                            ordered, [entries[a] for a in ordered])
                done += 1
                i += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.monotonic() - started)


async def bench(args: argparse.Namespace, url: str) -> int:
    from app import db
    from payments import service

    print(f"seeding {args.wallets} wallets and {args.operators} operators ...", flush=True)
    began = time.monotonic()
    residents, slugs = await seed(url, args.wallets, args.operators)
    print(f"  seeded in {time.monotonic() - began:.1f} s", flush=True)
    database = urlsplit(url).path.lstrip("/")  # its backends' CPU is measured (common.CpuMeter), as this process's
    pool = await db.create_pool(url, min_size=args.concurrency, max_size=args.concurrency, timeout=30)
    try:
        async with pool.acquire() as conn:
            accounts = {r["resident_id"]: r["id"] for r in await conn.fetch(
                "SELECT id, resident_id FROM payment_account WHERE resident_id IS NOT NULL")}
            accounts |= {r["operator_slug"]: r["id"] for r in await conn.fetch(
                "SELECT id, operator_slug FROM payment_account WHERE operator_slug IS NOT NULL")}
        results: dict[tuple[str, str], list[float]] = {}
        scenarios = (("many wallets", residents), ("one hot wallet", residents[:1]))
        for label, wallets in scenarios:
            for round_no in range(args.rounds):
                order = ("bare", "service") if round_no % 2 == 0 else ("service", "bare")
                for how in order:
                    meter = common.CpuMeter(database=database, this_process=True).start()
                    rate = await measure(pool, how, wallets, slugs, args.concurrency, args.seconds, accounts)
                    meter.stop()
                    results.setdefault((label, how), []).append(rate)
                    print(f"  {label:15} {how:8} round {round_no + 1}: {rate:8.0f} charges/s; "
                          f"{meter.describe(rate * args.seconds, 'charges')}", flush=True)
        async with pool.acquire() as conn:
            audit = await service.audit(conn)
            charges = await conn.fetchval("SELECT count(*) FROM payment_transaction WHERE kind = 'charge'")
    finally:
        await pool.close()
    print()
    print(f"{'scenario':16} {'bare tx/s':>10} {'charge()/s':>11} {'ratio':>7}")
    verdict = 0
    for label, _ in scenarios:
        bare = sum(results[(label, "bare")]) / args.rounds
        served = sum(results[(label, "service")]) / args.rounds
        print(f"{label:16} {bare:10.0f} {served:11.0f} {served / bare:7.2f}")
        if label == "many wallets" and served / bare < 0.5:
            verdict = 1
    print(f"\n{charges} charges written; ledger audit: {'ok' if audit.ok else 'FAILED'} "
          f"(entries sum {audit.entries_total_vnd}, balances sum {audit.balances_total_vnd}, "
          f"{len(audit.mismatched_accounts)} balances off)")
    print(f"goal many wallets >= 0.5x bare: {'met' if verdict == 0 else 'NOT met'}; "
          f"{args.concurrency} connections, {args.seconds:g} s x {args.rounds} rounds each, "
          f"load average {os.getloadavg()[0]:.1f} at the end (2 cores shared)")
    return 1 if verdict or not audit.ok else 0


def run(args: argparse.Namespace) -> int:
    return common.run_in_throwaway_database("payments", lambda database_url: bench(args, database_url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallets", type=int, default=2000)
    parser.add_argument("--operators", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    return common.run_main(run, args, "the throw-away database was dropped")


if __name__ == "__main__":
    sys.exit(main())
