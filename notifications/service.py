"""Notifications' face: what other modules call and what the resident's API serves.

Other modules call `notify(conn, ...)` inside their own transaction: the inbox rows and the outbox
commit or roll back with the change they announce. The resident's phones (devices), inbox and
preferences (push per category, quiet hours, home ward) are here too. What happens after the
commit (outbox expansion and sending) is in `delivery.py`; city broadcasts are in `broadcasts.py`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from app.errors import InvalidInput, NotFound, UnknownReference, Unprocessable
from app.web import CITY_TZ, decode_cursor, encode_cursor
from notifications import store, templates
from notifications.models import (
    Device,
    DeviceRegistration,
    InboxItem,
    InboxPage,
    Preferences,
    PreferencesView,
    QuietHours,
)

# ---- the one call every module makes ---------------------------------------------------------------------


async def notify(
    conn: asyncpg.Connection,
    recipients: Sequence[uuid.UUID | str],
    template: str,
    data: dict[str, Any],
    *,
    category: str,
    idempotency_key: str,
    urgency: str = "normal",
    deep_link: str | None = None,
) -> list[int]:
    """Put a notification in each recipient's inbox and queue its push, in the caller's transaction.

    The same `idempotency_key` for the same resident is stored once, so a retried caller cannot
    notify twice. Returns the ids of the inbox rows created now.
    """
    if category not in templates.category_names():
        raise InvalidInput.field("category", f"unknown category {category!r}")
    if urgency not in ("normal", "emergency"):
        raise InvalidInput.field("urgency", "normal or emergency")
    if deep_link is not None and not deep_link.startswith("ihanoi://"):
        raise InvalidInput.field("deep_link", "deep links start with ihanoi://")
    rendered = templates.render(template, data)
    residents = [uuid.UUID(str(r)) for r in recipients]
    return await store.insert_notifications(
        conn, recipients=residents, category=category, urgency=urgency, template=template, rendered=rendered,
        deep_link=deep_link, data={k: v for k, v in data.items()}, idempotency_key=idempotency_key,
    )


# ---- devices ----------------------------------------------------------------------------------------------


def _device(row: asyncpg.Record) -> Device:
    return Device(id=str(row["id"]), platform=row["platform"], locale=row["locale"], app_version=row["app_version"],
                  created_at=row["created_at"], updated_at=row["updated_at"])


async def register_device(conn: asyncpg.Connection, resident_id: uuid.UUID, session_id: str | None,
                          body: DeviceRegistration) -> Device:
    row = await store.upsert_device(
        conn, resident_id=resident_id, session_id=uuid.UUID(session_id) if session_id else None,
        fcm_token=body.fcm_token, installation_id=body.installation_id, platform=body.platform,
        locale=body.locale, app_version=body.app_version,
    )
    return _device(row)


async def unregister_device(conn: asyncpg.Connection, resident_id: uuid.UUID, device_id: uuid.UUID) -> None:
    if not await store.deactivate_device(conn, device_id, resident_id, "unregistered by the app"):
        raise NotFound("no such device")


async def list_devices(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[Device]:
    return [_device(r) for r in await store.list_devices(conn, resident_id)]


async def on_session_end(conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    """Identity calls this at logout: a signed-out phone gets no more pushes."""
    await store.deactivate_session_devices(conn, session_id)


# ---- the inbox -------------------------------------------------------------------------------------------


def inbox_item(row: asyncpg.Record, language: str) -> InboxItem:
    english = language == "en"
    return InboxItem(
        id=row["id"], category=row["category"], urgency=row["urgency"],
        title=row["title_en"] if english else row["title_vi"], body=row["body_en"] if english else row["body_vi"],
        deep_link=row["deep_link"], data=row["data"], created_at=row["created_at"], read_at=row["read_at"],
    )


async def inbox(conn: asyncpg.Connection, resident_id: uuid.UUID, *, cursor: str | None, limit: int,
                language: str) -> InboxPage:
    before_id = decode_cursor(cursor, (int,))[0] if cursor else None
    rows = await store.inbox_page(conn, resident_id, before_id=before_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return InboxPage(
        items=[inbox_item(r, language) for r in rows],
        next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
        unread=await store.unread_count(conn, resident_id),
    )


async def unread_count(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    return await store.unread_count(conn, resident_id)


async def mark_all_read(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    return await store.mark_all_read(conn, resident_id)


async def mark_read(conn: asyncpg.Connection, resident_id: uuid.UUID, notification_id: int) -> None:
    if not await store.mark_read(conn, resident_id, notification_id):
        raise NotFound("no such notification")


async def archive(conn: asyncpg.Connection, resident_id: uuid.UUID, notification_id: int) -> None:
    if not await store.archive(conn, resident_id, notification_id):
        raise NotFound("no such notification")


# ---- preferences and quiet hours -----------------------------------------------------------------------------


async def get_preferences(conn: asyncpg.Connection, resident_id: uuid.UUID) -> PreferencesView:
    push_rows, setting = await store.get_preferences(conn, resident_id)
    push = {category: True for category in templates.category_names()}
    push.update({r["category"]: r["push"] for r in push_rows})
    quiet = None
    if setting and setting["quiet_start"] is not None:
        quiet = QuietHours(start=setting["quiet_start"], end=setting["quiet_end"])
    return PreferencesView(push=push, quiet_hours=quiet, home_unit=setting["home_unit"] if setting else None)


async def put_preferences(conn: asyncpg.Connection, resident_id: uuid.UUID, body: Preferences,
                          known_unit: Callable[[str], bool]) -> PreferencesView:
    if body.quiet_hours and body.quiet_hours.start == body.quiet_hours.end:
        raise Unprocessable.field("quiet_hours", "start and end must differ")
    if body.home_unit is not None and not known_unit(body.home_unit):
        raise UnknownReference.field("home_unit", f"unknown ward or commune {body.home_unit!r}")
    for category in body.push:
        if category not in templates.category_names():
            known = ", ".join(templates.category_names())
            raise UnknownReference.field(f"push.{category}", f"unknown category; known: {known}")
    quiet = body.quiet_hours
    async with conn.transaction():
        await store.put_preferences(conn, resident_id, dict(body.push), quiet.start if quiet else None,
                                    quiet.end if quiet else None, body.home_unit)
    return await get_preferences(conn, resident_id)


def quiet_until(now: dt.datetime, start: dt.time | None, end: dt.time | None) -> dt.datetime | None:
    """If `now` falls in the quiet hours (local time, possibly across midnight), when they end (UTC)."""
    if start is None or end is None:
        return None
    local = now.astimezone(CITY_TZ)
    clock = local.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    end_day = local.date() if clock < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(end_day, end, CITY_TZ).astimezone(dt.UTC)


async def home_unit(conn: asyncpg.Connection, resident_id: uuid.UUID) -> str | None:
    """The resident's home ward, which decides the city broadcasts their live stream shows."""
    _, setting = await store.get_preferences(conn, resident_id)
    return setting["home_unit"] if setting else None
