"""SQL of the resident side: the rows of the patient summary, and the apps a resident lets read it (migration 050)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from health import store as health_store
from health.resident.ips import SECTIONS, SectionSpec

Record = asyncpg.Record

def _section(spec: SectionSpec, columns: str) -> str:
    def listed(values: tuple[str, ...]) -> str:
        return ", ".join("'" + v.replace("'", "''") + "'" for v in values)

    current = (f"status IN ({listed(spec.only)})" if spec.only
               else f"coalesce(status, '') <> ALL (ARRAY[{listed(spec.never)}])")
    types = listed(spec.types)
    return (f"(SELECT '{spec.key}' AS section, {columns} FROM health_resource WHERE patient_id = $1 "
            f"AND resource_type IN ({types}) AND {current} ORDER BY effective_at DESC, id DESC LIMIT {spec.limit})")


# Every section in one statement, each newest first, filtered and cut in SQL: only the rows shown are opened.
# The summary shows lines: it reads each row's sealed line (health.store.LINE_COLUMNS), not the resource.
# Who wrote each row comes in the same statement (the facility's name, health.store.LINE_COLUMNS_NAMED).
SUMMARY_SQL = "\nUNION ALL\n".join(_section(spec, health_store.LINE_COLUMNS_NAMED) for spec in SECTIONS)
# The summary as a FHIR document carries the resources themselves (health.store.RESOURCE_COLUMNS).
SUMMARY_RESOURCES_SQL = "\nUNION ALL\n".join(_section(spec, health_store.RESOURCE_COLUMNS) for spec in SECTIONS)


async def summary_lines(conn: asyncpg.Connection, patient_id: uuid.UUID) -> list[Record]:
    """The rows each section shows (column `section`, and `facility_name`), for `health.store.line_of`."""
    return await conn.fetch(SUMMARY_SQL, patient_id)


async def summary_rows(conn: asyncpg.Connection, patient_id: uuid.UUID) -> list[Record]:
    """The same rows whole, for `health.store.opened`."""
    return await conn.fetch(SUMMARY_RESOURCES_SQL, patient_id)


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


async def facility_names(conn: asyncpg.Connection, facility_ids: list[int]) -> dict[int, str]:
    """Names of the facilities that wrote these rows, in one statement."""
    rows = await conn.fetch("SELECT id, name FROM health_facility WHERE id = ANY($1::int[])", facility_ids)
    return {r["id"]: r["name"] for r in rows}
