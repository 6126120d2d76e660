"""The API toolkit: what every module's `api.py` uses, so no module writes its own plumbing.

A handler names what it needs by parameter, and the kernel provides it:

    from app import web

    @post("/{report_id:int}/close", dependencies=web.IDEMPOTENT)
    async def close(self, report_id: web.Id, tx: web.Tx, principal: web.Caller,
                    language: web.Lang) -> Report: ...

- `conn: web.Conn`: a pooled connection for reads; `tx: web.Tx`: a connection inside a transaction that
  commits when the handler returns and rolls back if it raises. Both are the primary's.
- `read_conn: web.ReadConn`: a connection for public reads that may lag the primary by a moment (the
  streaming replica's when `DATABASE_REPLICA_URL` is set, else the primary's): maps, public lists, figures,
  reports. Never for what a caller reads back right after writing it (its own reports, its wallet): `conn`.
- `principal: web.Caller`: the signed-in caller (401 without one); `viewer: web.Viewer`: the caller or
  None, for pages that work without signing in.
- `language: web.Lang`: "vi" or "en" from Accept-Language (Vietnamese first).
- Body text: `web.HumanText` for what people write, `web.Token` for machine strings (no control
  characters; a NUL anywhere is refused for every route by `app/inputs.py`).
- Path ids: `web.Id` (a positive int64; route `{name:int}`) and `web.UUIDPath` (route `{name:str}`): a bad
  value is a 400 naming the parameter, never a database error.
- Idempotent writes: `dependencies=web.IDEMPOTENT` (key optional) or `web.IDEMPOTENT_REQUIRED`, see
  `app/idempotency.py`.
- Cursor paging: `cursor: web.cursor_parameter(int)` in the handler (values of int, aware datetime or UUID),
  `encode_cursor(...)` / `decode_cursor(text, types)`; the document gives the cursor's exact pattern, anything
  else is a 400.
- A body the handler reads itself (a photo's bytes): `opt={"body": openapi.photo_body(max_bytes)}` documents it.
- Time: `CITY_TZ` (Asia/Ho_Chi_Minh) and `local()` for what residents read; stored times are UTC.
- Every handler returns a msgspec Struct (or a `Response[Struct]`), so the OpenAPI document names a body
  for every answer that has one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, TypeAlias
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter, QueryParameter

from app.errors import InvalidInput, Language, language_of
from app.idempotency import IDEMPOTENT, IDEMPOTENT_REQUIRED
from app.identity.models import Principal

__all__ = [
    "CITY_TZ", "IDEMPOTENT", "IDEMPOTENT_REQUIRED", "INT64_MAX", "Caller", "Conn", "HumanText", "Id", "Lang",
    "Limit", "Month", "ReadConn", "Slug", "Token", "Tx", "UUIDPath", "UUIDText", "Viewer", "cursor_parameter",
    "decode_cursor", "dependencies", "encode_cursor", "local",
]

CITY_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
INT64_MAX = 2**63 - 1

Conn: TypeAlias = NamedDependency[asyncpg.Connection]
Tx: TypeAlias = NamedDependency[asyncpg.Connection]
ReadConn: TypeAlias = NamedDependency[asyncpg.Connection]
Caller: TypeAlias = NamedDependency[Principal]
Viewer: TypeAlias = NamedDependency[Principal | None]
Lang: TypeAlias = NamedDependency[Language]

# int64 is declared as the format (a maximum of 2^63-1 would print as a float); app/inputs.py refuses
# anything larger for every route before the handler runs.
Id = Annotated[int, Parameter(ge=1, description="a positive 64-bit id", schema_extra={"format": "int64"})]
UUIDPath = Annotated[uuid.UUID, Parameter(description="a UUID")]
# A record named by a slug in a path (an operator): what every module's slugs look like.
SLUG = r"^[a-z][a-z0-9-]{1,62}$"
Slug = Annotated[str, Parameter(pattern=SLUG,
                                description="2-63 lowercase letters, digits or '-', starting with a letter")]
# A calendar month in a path, YYYY-MM, 2000-2100.
Month = Annotated[str, Parameter(pattern=r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])$", description="a month, YYYY-MM")]
# A UUID inside a body (msgspec field): the document gives its exact form.
UUIDText = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                                               r"[0-9a-fA-F]{12}$", description="a UUID")]
Limit = Annotated[int, Parameter(ge=1, le=100, description="page size")]
# Text a person wrote (a description, a note, an answer): no control characters but line breaks and tabs.
HumanText = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
                                        description="text without control characters (line breaks and tabs are fine)")]
# A machine-made string (a token, a code): printable, no control characters at all.
Token = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]*$")]


def _viewer(request: Request) -> Principal | None:
    return request.scope.get("user")


def _language(request: Request) -> Language:
    return language_of(request)


def dependencies() -> dict[str, Provide]:
    """What the kernel provides to every handler (besides `conn`, `tx` and `principal`)."""
    return {"viewer": Provide(_viewer, sync_to_thread=False), "language": Provide(_language, sync_to_thread=False)}


def local(moment: dt.datetime) -> dt.datetime:
    """A stored UTC time as residents read it."""
    return moment.astimezone(CITY_TZ)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Each value of a cursor by its type: an int64 id below 10^17; a moment in microseconds since 1970 (1653 to 5138);
# a UUID as 32 hex digits. Any text of this form decodes to a value of its type.
_CURSOR_PARTS: dict[type, str] = {int: r"[0-9]{1,17}", dt.datetime: r"(?:-[0-9]{1,16}|[0-9]{1,17})",
                                  uuid.UUID: r"[0-9a-f]{32}"}


def cursor_parameter(*types: type) -> Any:
    """The `cursor` query parameter of a list whose cursors hold values of `types` (int, an aware datetime, UUID).

    A cursor is its values joined by dots (a moment in microseconds since 1970, a UUID as hex), and the OpenAPI
    document says so with a pattern: any cursor that matches is one the list could have given, so a client (or
    a fuzzer) that keeps to the document is never refused. Anything else is a 400 on `cursor`."""
    pattern = "^" + r"\.".join(_CURSOR_PARTS[kind] for kind in types) + "$"
    return Annotated[str | None, QueryParameter(pattern=pattern, required=False,
                                                description="`next_cursor` of the page before")]


def _cursor_part(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return str((value - _EPOCH) // dt.timedelta(microseconds=1))
    return value.hex if isinstance(value, uuid.UUID) else str(value)


def encode_cursor(*values: Any) -> str:
    """The cursor of the next page: the sort key of the last row given. Ints, aware datetimes and UUIDs give the
    form `cursor_parameter` documents; other values (text) an opaque base64url of their JSON."""
    if all(isinstance(v, (int, dt.datetime, uuid.UUID)) and not isinstance(v, bool) for v in values):
        return ".".join(_cursor_part(v) for v in values)
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def _decode_part(text: str, kind: type) -> Any:
    if kind is dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=int(text))
    return uuid.UUID(hex=text) if kind is uuid.UUID else int(text)


def decode_cursor(text: str, types: Sequence[type]) -> tuple[Any, ...]:
    """The values of `encode_cursor`, checked against `types`; anything else is a 400 on `cursor`."""
    if types and all(kind in _CURSOR_PARTS for kind in types):
        parts = text.split(".")
        if len(parts) != len(types) or not all(
                re.fullmatch(_CURSOR_PARTS[kind], part) for part, kind in zip(parts, types, strict=False)):
            raise InvalidInput.field("cursor", "not a cursor this list gave", source="query")
        return tuple(_decode_part(part, kind) for part, kind in zip(parts, types, strict=True))
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return msgspec.json.decode(raw, type=tuple[tuple(types)] if types else tuple)  # type: ignore[misc]
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput.field("cursor", "not a cursor this list gave", source="query") from None
