"""SQL of the resident side: the apps a resident lets read their summary (migration 050)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

Record = asyncpg.Record


async def grant_app(conn: asyncpg.Connection, patient_id: uuid.UUID, client_id: str, *, now: dt.datetime,
                    expires_at: dt.datetime) -> Record:
    """A new grant, replacing the one in force for the same app (both in the caller's transaction)."""
    await conn.execute(
        "UPDATE health_app_grant SET revoked_at = $3 WHERE patient_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        patient_id, client_id, now)
    return await conn.fetchrow(
        """INSERT INTO health_app_grant (patient_id, client_id, granted_at, expires_at) VALUES ($1, $2, $3, $4)
           RETURNING *""", patient_id, client_id, now, expires_at)


async def app_grants(conn: asyncpg.Connection, patient_id: uuid.UUID) -> list[Record]:
    return await conn.fetch("SELECT * FROM health_app_grant WHERE patient_id = $1 ORDER BY id DESC", patient_id)


async def revoke_app(conn: asyncpg.Connection, patient_id: uuid.UUID, client_id: str,
                     now: dt.datetime) -> Record | None:
    return await conn.fetchrow(
        """UPDATE health_app_grant SET revoked_at = $3
            WHERE patient_id = $1 AND client_id = $2 AND revoked_at IS NULL RETURNING *""",
        patient_id, client_id, now)


async def live_app_grant(conn: asyncpg.Connection, patient_id: uuid.UUID, client_id: str,
                         now: dt.datetime) -> Record | None:
    return await conn.fetchrow(
        """SELECT * FROM health_app_grant WHERE patient_id = $1 AND client_id = $2 AND revoked_at IS NULL
              AND granted_at <= $3 AND expires_at > $3""", patient_id, client_id, now)
