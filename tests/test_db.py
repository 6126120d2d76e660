"""The connections the app opens: the session settings every statement runs under."""

from __future__ import annotations

from app import db


async def test_pool_and_script_connections_run_in_utc_without_jit(pool, database_url):
    async with pool.acquire() as conn:
        assert (await conn.fetchval("SHOW jit"), await conn.fetchval("SHOW timezone")) == ("off", "UTC")
    conn = await db.connect(database_url)
    try:
        assert (await conn.fetchval("SHOW jit"), await conn.fetchval("SHOW timezone")) == ("off", "UTC")
    finally:
        await conn.close()
