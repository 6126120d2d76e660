"""Idempotency-Key for writes a client may retry (a phone on a bad network sends the same request twice).

The first request with a key runs and its response is stored in the same transaction as its effects;
a retry with the same key and the same request gets that stored response back (with
`Idempotent-Replayed: true`), and a retry with another body is refused. While the first is still
running, the retry waits on the row lock and then replays. If the first failed, nothing was stored
(its transaction rolled back) and the retry runs afresh. Records are kept for a day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response

from app.errors import IdempotencyKeyReused, InvalidInput, RequestInProgress

KEEP_HOURS = 24
HEADER = "idempotency-key"


def key_of(request: Request, *, required: bool) -> str | None:
    key = request.headers.get(HEADER)
    if key is None and not required:
        return None
    if key is None or not 8 <= len(key) <= 128 or not key.isascii() or not key.isprintable():
        raise InvalidInput.field("Idempotency-Key", "send an Idempotency-Key header of 8-128 printable ASCII "
                                 "characters, new for each new request", source="header")
    return key


async def run_once(
    conn: asyncpg.Connection,
    request: Request,
    *,
    owner: str,
    key: str | None,
    body: bytes,
    run: Callable[[], Awaitable[tuple[int, Any]]],
) -> Response:
    """Run `run` (answering status and a msgspec-encodable body) once per (owner, key).

    `conn` must be the request's transaction (`tx`), so the record commits or rolls back with the write.
    """
    if key is None:
        status, result = await run()
        return Response(msgspec.json.encode(result), status_code=status, media_type="application/json")
    fingerprint = hashlib.sha256(b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), body)).digest()
    inserted = await conn.fetchval(
        "INSERT INTO idempotent_request (owner, key, fingerprint) VALUES ($1, $2, $3) "
        "ON CONFLICT (owner, key) DO NOTHING RETURNING true", owner, key, fingerprint)
    if not inserted:
        row = await conn.fetchrow(
            "SELECT fingerprint, status, body FROM idempotent_request WHERE owner = $1 AND key = $2", owner, key)
        if row is None or row["status"] is None:  # expired between the two statements, or never finished
            raise RequestInProgress("the request with this Idempotency-Key is still being processed; retry shortly")
        if bytes(row["fingerprint"]) != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request; use a new key")
        return Response(bytes(row["body"]), status_code=row["status"], media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})
    status, result = await run()
    encoded = msgspec.json.encode(result)
    await conn.execute("UPDATE idempotent_request SET status = $3, body = $4 WHERE owner = $1 AND key = $2",
                       owner, key, status, encoded)
    return Response(encoded, status_code=status, media_type="application/json")


async def purge(conn: asyncpg.Connection) -> int:
    result = await conn.execute(
        "DELETE FROM idempotent_request WHERE created_at < now() - make_interval(hours => $1)", KEEP_HOURS)
    return int(result.split()[-1])
