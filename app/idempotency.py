"""Idempotency-Key for writes a client may retry (a phone on a bad network sends the same request twice).

A route declares it: `@post(..., dependencies=IDEMPOTENT)` (key optional) or `IDEMPOTENT_REQUIRED`; its
handler takes `tx`. The declaration replaces the route's transaction with one that first records the key:

- the first request with a key runs, and its response is stored by `store_response` (an after-request
  hook) in the same transaction as its effects, so both commit or neither does;
- a retry with the same key and the same request gets the stored response back (with
  `Idempotent-Replayed: true`); a retry with another body is refused (422);
- while the first is still running, the retry waits on the row lock and then replays; if the first
  failed, nothing was stored (its transaction rolled back) and the retry runs afresh.

Records are kept for a day (`purge`, a kernel job). The header is documented in the OpenAPI document
on exactly the routes that accept it.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import HeaderParameter
from litestar.serialization import get_serializer

from app.errors import Answered, IdempotencyKeyReused, InvalidInput, RequestInProgress

KEEP_HOURS = 24
HEADER = "Idempotency-Key"
_KEY_PATTERN = r"^[\x21-\x7e]{8,128}$"
_DESCRIPTION = "8-128 printable ASCII characters, new for each new request; a retry sends the same key"
_SCOPE_KEY = "ihanoi.idempotency"
MARK = "ihanoi.idempotent"  # in the opt of a handler that declares the header (set by app/asgi.py at start)

# The request's pending record, set by `start_request` in the task that also runs `store_response`.
_pending: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("idempotency", default=None)


def start_request(request: Request) -> None:
    """From the app's before-request hook, on a route that declares the header: a fresh holder for this request's
    record (or none)."""
    holder: dict[str, Any] = {}
    request.scope[_SCOPE_KEY] = holder  # type: ignore[literal-required]
    _pending.set(holder)


def no_request() -> None:
    """From the app's before-request hook, on every other route: nothing to store, whatever ran before in this
    context (a test client runs requests in the caller's task)."""
    _pending.set(None)


async def store_response(response: Response) -> Response:
    """App-wide after-request hook: store the answer with the write, before the transaction commits."""
    holder = _pending.get()
    if not holder or "conn" not in holder:
        return response
    body = response.render(response.content, response.media_type or "application/json",
                           get_serializer(response.response_type_encoders))
    response.content = body
    await holder["conn"].execute(
        "UPDATE idempotent_request SET status = $3, body = $4 WHERE owner = $1 AND key = $2",
        holder["owner"], holder["key"], response.status_code, body)
    holder.clear()
    return response


def _owner(request: Request) -> str:
    user = request.scope.get("user")
    if user is not None:
        return user.sub
    return "address:" + (request.client.host if request.client else "unknown")


async def _begin(conn: asyncpg.Connection, request: Request, key: str | None) -> None:
    if key is None:
        return
    owner = _owner(request)
    body = await request.body()
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
        raise Answered(Response(bytes(row["body"]), status_code=row["status"], media_type="application/json",
                                headers={"Idempotent-Replayed": "true"}))
    holder = request.scope.get(_SCOPE_KEY)  # type: ignore[call-overload]
    if holder is not None:
        holder.update(conn=conn, owner=owner, key=key)


@asynccontextmanager
async def _transaction(state: State, request: Request, key: str | None) -> AsyncIterator[asyncpg.Connection]:
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn, conn.transaction():
        await _begin(conn, request, key)
        yield conn


async def _tx_key_optional(
    state: State, request: Request,
    idempotency_key: Annotated[str | None, HeaderParameter(name=HEADER, required=False, pattern=_KEY_PATTERN,
                                                           description=_DESCRIPTION)] = None,
) -> AsyncIterator[asyncpg.Connection]:
    async with _transaction(state, request, idempotency_key) as conn:
        yield conn


async def _tx_key_required(
    state: State, request: Request,
    idempotency_key: Annotated[str, HeaderParameter(name=HEADER, pattern=_KEY_PATTERN, description=_DESCRIPTION)],
) -> AsyncIterator[asyncpg.Connection]:
    async with _transaction(state, request, idempotency_key) as conn:
        yield conn


# Route declarations: `@post(..., dependencies=IDEMPOTENT)`; the handler must take `tx`.
IDEMPOTENT = {"tx": Provide(_tx_key_optional)}
IDEMPOTENT_REQUIRED = {"tx": Provide(_tx_key_required)}
PROVIDERS = (_tx_key_optional, _tx_key_required)


def key_of(request: Request, *, required: bool = False) -> str | None:
    """The key of this request, for a service that keeps it with what it creates."""
    key = request.headers.get(HEADER)
    if key is None and not required:
        return None
    if key is None or not 8 <= len(key) <= 128 or not key.isascii() or not key.isprintable():
        raise InvalidInput.field(HEADER, "send an Idempotency-Key header of 8-128 printable ASCII "
                                 "characters, new for each new request", source="header")
    return key


async def purge(conn: asyncpg.Connection) -> int:
    result = await conn.execute(
        "DELETE FROM idempotent_request WHERE created_at < now() - make_interval(hours => $1)", KEEP_HOURS)
    return int(result.split()[-1])
