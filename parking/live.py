"""Live free spaces on the declared channel `parking.availability` (app.live, Redis pub/sub): every API
process's stream forwards what any process or the worker published."""

from __future__ import annotations

import asyncpg

from app import live
from app.redisdb import Redis
from parking import store

MODULE = "parking"


async def free_spaces(conn: asyncpg.Connection, lot_code: str) -> dict | None:
    lot = await store.lot(conn, lot_code)
    if lot is None:
        return None
    taken = await store.occupied(conn, lot["id"])
    return {"lot": lot_code, "free": {v: max(0, lot[f"capacity_{v}"] - taken.get(v, 0))
                                      for v in ("motorbike", "car", "large") if lot[f"capacity_{v}"]}}


async def publish(pool, redis: Redis, lot_code: str) -> None:
    """After the write committed: the lot's free spaces now, read fresh (best-effort, as app.live says)."""
    async with pool.acquire() as conn:
        event = await free_spaces(conn, lot_code)
    if event is not None:
        await live.publish(redis, MODULE, "availability", event)


def channel(redis: Redis) -> str:
    return live.channel(redis, MODULE, "availability")
