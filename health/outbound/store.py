"""Outbox SQL. Rows are added by the trigger of migration 051 (in the transaction that stores a finished visit)."""

from __future__ import annotations

import uuid

import asyncpg

Record = asyncpg.Record


async def claim_due(conn: asyncpg.Connection, *, limit: int, lease_seconds: float) -> list[Record]:
    """Due rows, each pushed `lease_seconds` ahead and counted as an attempt, in one statement: a worker that dies
    mid-send leaves them to be tried again after the lease, and another worker skips them meanwhile."""
    return await conn.fetch(
        """UPDATE health_outbox o SET attempts = o.attempts + 1,
                  next_attempt_at = statement_timestamp() + make_interval(secs => $2)
            WHERE o.id IN (SELECT id FROM health_outbox
                            WHERE state = 'pending' AND next_attempt_at <= statement_timestamp()
                            ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING o.*""", limit, lease_seconds)


async def delivered(conn: asyncpg.Connection, outbox_id: int, *, status: int, receipt: str | None) -> None:
    await conn.execute(
        """UPDATE health_outbox SET state = 'delivered', delivered_at = statement_timestamp(), last_status = $2,
                  receipt = $3, last_error = NULL WHERE id = $1""", outbox_id, status, receipt)


async def retry_later(conn: asyncpg.Connection, outbox_id: int, *, status: int | None, error: str,
                      after_seconds: float) -> None:
    # the database's clock, as claim_due compares with it (never a worker's); statement_timestamp() is stable,
    # so the due-rows index serves the comparison
    await conn.execute(
        """UPDATE health_outbox SET next_attempt_at = statement_timestamp() + make_interval(secs => $2),
                  last_status = $3, last_error = $4 WHERE id = $1""", outbox_id, after_seconds, status, error[:500])


async def failed(conn: asyncpg.Connection, outbox_id: int, *, status: int | None, error: str) -> None:
    await conn.execute(
        "UPDATE health_outbox SET state = 'failed', last_status = $2, last_error = $3 WHERE id = $1",
        outbox_id, status, error[:500])


async def by_encounter(conn: asyncpg.Connection, encounter_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_outbox WHERE encounter_id = $1", encounter_id)


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM health_outbox GROUP BY state")
    return {"pending": 0, "delivered": 0, "failed": 0} | {r["state"]: r["n"] for r in rows}
