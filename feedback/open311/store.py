"""The SQL of Open311: client api keys, and public reports in the shape Open311 lists them."""

from __future__ import annotations

import uuid

import asyncpg

from feedback.open311.models import Query
from feedback.store import Filters


async def insert_client(conn: asyncpg.Connection, name: str, key_sha256: str, created_by: uuid.UUID | None) -> None:
    await conn.execute("INSERT INTO open311_client (name, key_sha256, created_by) VALUES ($1, $2, $3)",
                       name, key_sha256, created_by)


async def revoke_client(conn: asyncpg.Connection, name: str, revoked_by: uuid.UUID | None) -> int:
    """Revoke the client's active keys; answers how many."""
    result = await conn.execute(
        "UPDATE open311_client SET revoked_at = now(), revoked_by = $2 WHERE name = $1 AND revoked_at IS NULL",
        name, revoked_by)
    return int(result.split()[-1])


async def client_name(conn: asyncpg.Connection, key_sha256: str) -> str | None:
    """The client holding this active key."""
    return await conn.fetchval("SELECT name FROM open311_client WHERE key_sha256 = $1 AND revoked_at IS NULL",
                               key_sha256)


_REQUEST_COLUMNS = """
    r.id, r.status, feedback_report_is_open(r.status) AS open, r.category_code,
    c.name_vi AS category_vi, c.name_en AS category_en, r.description, r.unit_code, r.address, r.latitude,
    r.longitude, r.submitted_at, r.updated_at, r.answer_due_at, r.answered_at, r.closed_at, r.answer_text,
    r.duplicate_of,
    CASE WHEN r.status = 'rejected' THEN
        (SELECT e.message FROM report_event e
          WHERE e.report_id = r.id AND e.kind = 'rejected' AND e.public
            AND e.at >= r.submitted_at - interval '1 day' ORDER BY e.id DESC LIMIT 1)
    END AS rejection,
    (SELECT p.id FROM report_photo p WHERE p.report_id = r.id AND p.event_id IS NULL AND p.public
      ORDER BY p.position LIMIT 1) AS photo_id
"""


async def public_requests(conn: asyncpg.Connection, query: Query) -> list[asyncpg.Record]:
    """Public reports only, newest first; nothing about who reported, no private photo."""
    filters = Filters()
    filters.add("r.visibility = 'public'")
    if query.ids is not None:
        filters.add("r.id = ANY(?::bigint[])", query.ids)
    else:
        filters.add("r.submitted_at >= ? AND r.submitted_at <= ?", query.start, query.end)
        if query.codes:
            filters.add("r.category_code = ANY(?::text[])", query.codes)
        if query.open is not None:
            filters.add("feedback_report_is_open(r.status)" if query.open else "NOT feedback_report_is_open(r.status)")
    args = [*filters.args, query.page_size, (query.page - 1) * query.page_size]
    return await conn.fetch(
        f"""SELECT {_REQUEST_COLUMNS} FROM report r JOIN feedback_category c ON c.code = r.category_code
             WHERE {filters.where()} ORDER BY r.submitted_at DESC, r.id DESC
             LIMIT ${len(args) - 1} OFFSET ${len(args)}""", *args)
