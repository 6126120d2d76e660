"""One OS process charging one wallet over several connections (tests/payments/test_concurrency.py).

    python -m tests.payments.charger DATABASE_URL PAYER PAYEE AMOUNT COUNT CONNECTIONS TAG START_AT

Waits until START_AT (epoch seconds) so that the processes start together, then prints JSON counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from app import db
from modules import catalog


async def main(url: str, payer: str, payee: str, amount: int, count: int, connections: int, tag: str,
               start_at: float) -> dict[str, int]:
    catalog.install(catalog.load())  # the templates a low-balance notice uses
    import payments

    pool = await db.create_pool(url, min_size=connections, max_size=connections, timeout=30)  # the app's codecs
    counts = {"charged": 0, "refused": 0}
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def worker(number: int) -> None:
        for i in range(count // connections):
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        await payments.charge(conn, payer, payee, amount, "race", f"{tag}:{number}:{i}")
                    counts["charged"] += 1
                except payments.InsufficientFunds:
                    counts["refused"] += 1

    await asyncio.gather(*(worker(n) for n in range(connections)))
    await pool.close()
    return counts


if __name__ == "__main__":
    url, payer, payee, amount, count, connections, tag, start_at = sys.argv[1:9]
    print(json.dumps(asyncio.run(main(url, payer, payee, int(amount), int(count), int(connections), tag,
                                      float(start_at)))))
