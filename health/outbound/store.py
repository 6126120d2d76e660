"""Outbox SQL. Rows are added by the triggers of migrations 051 and 061 (in the transaction that stores a finished
visit, or changes one: a new revision)."""

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


async def _requeue_if_changed(conn: asyncpg.Connection, row: Record | None, changes_seen: int) -> None:
    """The visit was written again while its claim was on the way: queue the next revision."""
    if row is not None and row["changes"] != changes_seen:
        await conn.execute("SELECT health_outbox_queue($1, $2)", row["encounter_id"], row["patient_id"])


async def delivered(conn: asyncpg.Connection, outbox_id: int, *, status: int, receipt: str | None,
                    claim_hash: bytes | None = None, changes_seen: int | None = None) -> None:
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE health_outbox SET state = 'delivered', delivered_at = statement_timestamp(), last_status = $2,
                      receipt = $3, last_error = NULL, claim_hash = $4 WHERE id = $1
            RETURNING encounter_id, patient_id, changes""", outbox_id, status, receipt, claim_hash)
        if changes_seen is not None:
            await _requeue_if_changed(conn, row, changes_seen)


async def unchanged(conn: asyncpg.Connection, outbox_id: int, *, changes_seen: int) -> None:
    """This revision's claim is the one delivered before (the same visit sent again): not sent."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE health_outbox SET state = 'unchanged', last_error = NULL WHERE id = $1
            RETURNING encounter_id, patient_id, changes""", outbox_id)
        await _requeue_if_changed(conn, row, changes_seen)


async def last_delivered_hash(conn: asyncpg.Connection, destination: str, encounter_id: uuid.UUID) -> bytes | None:
    """The keyed hash of the claim last delivered for this visit (None: never delivered)."""
    found = await conn.fetchval(
        """SELECT claim_hash FROM health_outbox WHERE destination = $1 AND encounter_id = $2 AND state = 'delivered'
            ORDER BY revision DESC LIMIT 1""", destination, encounter_id)
    return None if found is None else bytes(found)


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
    """The visit's latest revision."""
    return await conn.fetchrow("SELECT * FROM health_outbox WHERE encounter_id = $1 ORDER BY revision DESC LIMIT 1",
                               encounter_id)


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM health_outbox GROUP BY state")
    return {"pending": 0, "delivered": 0, "failed": 0, "unchanged": 0} | {r["state"]: r["n"] for r in rows}
