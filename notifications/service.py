"""The rules of notifications: who gets what, when, in which language, and how delivery is retried.

Other modules call `notify(conn, ...)` inside their own transaction: the inbox rows and the outbox
commit or roll back with the change they announce. `ihanoi worker` then expands each outbox row into
one delivery per active device (respecting preferences and quiet hours; emergency alerts ignore
both), and sends due deliveries in batches of at most 500 through the push sender.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.identity.service import covers_unit
from notifications import store, templates
from notifications.models import (
    Broadcast,
    BroadcastCreate,
    Device,
    DeviceRegistration,
    InboxItem,
    InboxPage,
    Preferences,
    PreferencesView,
    QuietHours,
)
from notifications.sender import PushMessage, PushResult, PushSender

log = logging.getLogger("ihanoi.notifications")

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
BATCH = 500  # FCM's limit per send_each call
LEASE_SECONDS = 60  # a claimed delivery whose worker died is sent again after this
MAX_ATTEMPTS = 5
# Send loops per send_due: two, so that claiming and recording one batch overlaps sending another.
SEND_LOOPS = 2
QUOTA_BACKOFF_MIN = 60.0
RETRYABLE = {"UNAVAILABLE", "INTERNAL"}
DEAD_TOKEN = {"UNREGISTERED", "INVALID_ARGUMENT"}


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


def _device(row) -> Device:
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


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def _parse_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError:
        raise InvalidInput.field("cursor", "not a cursor from this API", source="query") from None


def inbox_item(row, language: str) -> InboxItem:
    english = language == "en"
    return InboxItem(
        id=row["id"], category=row["category"], urgency=row["urgency"],
        title=row["title_en"] if english else row["title_vi"], body=row["body_en"] if english else row["body_vi"],
        deep_link=row["deep_link"], data=row["data"], created_at=row["created_at"], read_at=row["read_at"],
    )


async def inbox(conn: asyncpg.Connection, resident_id: uuid.UUID, *, cursor: str | None, limit: int,
                language: str) -> InboxPage:
    rows = await store.inbox_page(conn, resident_id, before_id=_parse_cursor(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return InboxPage(
        items=[inbox_item(r, language) for r in rows],
        next_cursor=_cursor(rows[-1]["id"]) if more else None,
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
                          known_unit) -> PreferencesView:
    if body.quiet_hours and body.quiet_hours.start == body.quiet_hours.end:
        raise InvalidInput.field("quiet_hours", "start and end must differ")
    if body.home_unit is not None and not known_unit(body.home_unit):
        raise InvalidInput.field("home_unit", f"unknown ward or commune {body.home_unit!r}")
    for category in body.push:
        if category not in templates.category_names():
            known = ", ".join(templates.category_names())
            raise InvalidInput.field(f"push.{category}", f"unknown category; known: {known}")
    quiet = body.quiet_hours
    async with conn.transaction():
        await store.put_preferences(conn, resident_id, dict(body.push), quiet.start if quiet else None,
                                    quiet.end if quiet else None, body.home_unit)
    return await get_preferences(conn, resident_id)


def quiet_until(now: dt.datetime, start: dt.time | None, end: dt.time | None) -> dt.datetime | None:
    """If `now` falls in the quiet hours (local time, possibly across midnight), when they end (UTC)."""
    if start is None or end is None:
        return None
    local = now.astimezone(LOCAL_TZ)
    clock = local.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    end_day = local.date() if clock < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(end_day, end, LOCAL_TZ).astimezone(dt.UTC)


# ---- the worker: expand the outbox, send what is due ------------------------------------------------------------


async def expand_outbox(conn: asyncpg.Connection, redis, *, limit: int = 1000) -> int:
    """Turn outbox rows into deliveries and tell connected apps; returns how many were expanded."""
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        rows = await store.take_outbox(conn, limit)
        pushable, when = [], []
        for row in rows:
            emergency = row["urgency"] == "emergency"
            if not row["push_on"] and not emergency:
                continue  # inbox only: the resident turned this category's pushes off
            later = None if emergency else quiet_until(now, row["quiet_start"], row["quiet_end"])
            pushable.append(row["id"])
            when.append(later or now)
        if pushable:
            await store.insert_deliveries(conn, pushable, when)
    for row in rows:  # after commit: the live stream must not announce what could still roll back
        await publish_inbox_item(redis, row)
    return len(rows)


def inbox_channel(redis, resident_id: str) -> str:
    return redis.key("inbox", resident_id)


async def publish_inbox_item(redis, row) -> None:
    event = {
        "id": row["id"], "category": row["category"], "urgency": row["urgency"], "deep_link": row["deep_link"],
        "data": row["data"], "created_at": row["created_at"].isoformat(),
        "title": {"vi": row["title_vi"], "en": row["title_en"]}, "body": {"vi": row["body_vi"], "en": row["body_en"]},
    }
    await redis.client.publish(inbox_channel(redis, str(row["resident_id"])), json.dumps(event, ensure_ascii=False))


def broadcasts_channel(redis) -> str:
    return redis.key("broadcasts")


async def publish_broadcast(redis, broadcast) -> None:
    event = {
        "broadcast_id": broadcast["id"], "target_unit": broadcast["target_unit"], "urgency": broadcast["urgency"],
        "category": "city", "deep_link": broadcast["deep_link"], "created_at": broadcast["created_at"].isoformat(),
        "title": {"vi": broadcast["title_vi"], "en": broadcast["title_en"]},
        "body": {"vi": broadcast["body_vi"], "en": broadcast["body_en"]},
    }
    await redis.client.publish(broadcasts_channel(redis), json.dumps(event, ensure_ascii=False))


async def home_unit(conn: asyncpg.Connection, resident_id: uuid.UUID) -> str | None:
    _, setting = await store.get_preferences(conn, resident_id)
    return setting["home_unit"] if setting else None


def broadcast_reaches(units, target_unit: str, home: str | None) -> bool:
    """A city-wide broadcast reaches everyone; another, residents whose home ward lies in its area."""
    return target_unit == CITY or (home is not None and units.contains(target_unit, home))


def _message(row) -> PushMessage:
    english = row["locale"] == "en"
    data = {"notification_id": str(row["notification_id"]), "category": row["category"]}
    if row["deep_link"]:
        data["deep_link"] = row["deep_link"]
    return PushMessage(
        token=row["fcm_token"],
        title=row["title_en"] if english else row["title_vi"],
        body=row["body_en"] if english else row["body_vi"],
        data=data, urgency=row["urgency"],
        collapse_key=f"n{row['notification_id']}",
    )


def _backoff(attempts: int) -> float:
    return min(2.0 ** attempts, 300.0) * (0.8 + 0.4 * random.random())


def outcome(row, result: PushResult) -> tuple[tuple, str | None]:
    """What a sender's answer means for the delivery: (update row, reason to deactivate the device)."""
    key = (row["notification_id"], row["device_id"])
    if result.ok:
        return (*key, "sent", result.message_id, None, 0.0), None
    code = result.error_code or "UNKNOWN"
    if code in DEAD_TOKEN:
        return (*key, "failed", None, code, 0.0), code
    if code == "QUOTA_EXCEEDED":
        return (*key, "pending", None, code, max(QUOTA_BACKOFF_MIN, result.retry_after or 0.0)), None
    if code in RETRYABLE and row["attempts"] < MAX_ATTEMPTS:
        return (*key, "pending", None, code, _backoff(row["attempts"])), None
    return (*key, "failed", None, code, 0.0), None


# Set the pause (a UNIX time, expiring with it) unless one that ends later is set already: another loop or worker
# may have been given a longer Retry-After.
_EXTEND_PAUSE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then return redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) end
return 0
"""


async def send_due(pool, redis, sender: PushSender, *, batches: int = 20, stopping=None,
                   lease_seconds: int = LEASE_SECONDS, loops: int = SEND_LOOPS) -> int:
    """Send up to `batches` batches of due deliveries; returns how many answers came back.

    `loops` send loops run at once, each claiming, sending and recording one batch at a time, so that one loop's
    database round trips (claim, record) overlap another's sending; they share the sender and its window of
    requests in flight. A loop stops (and so do the others, each after the batch it has in hand) when nothing is
    due, when FCM asked to slow down, or when the worker is asked to stop: every claimed batch is sent and recorded
    before send_due returns, so a worker stopped with SIGTERM leaves nothing half-recorded.
    """
    pause_key = redis.key("fcm", "paused-until")
    state = {"left": batches, "handled": 0, "halt": False}

    async def one_loop() -> None:
        while state["left"] > 0 and not state["halt"]:
            if stopping is not None and stopping.is_set():
                return
            state["left"] -= 1
            paused = await redis.client.get(pause_key)
            if paused and float(paused) > dt.datetime.now(dt.UTC).timestamp():
                state["halt"] = True  # FCM asked every sender of this project to slow down
                return
            async with pool.acquire() as conn:
                rows = await store.claim_due(conn, BATCH, lease_seconds)
            if not rows:
                state["halt"] = True
                return
            quota_wait = await _send_batch(pool, sender, rows)
            state["handled"] += len(rows)
            if quota_wait:
                state["halt"] = True
                until = dt.datetime.now(dt.UTC).timestamp() + quota_wait
                await redis.client.eval(_EXTEND_PAUSE, 1, pause_key, str(until), int(quota_wait * 1000))
                log.warning("FCM quota exceeded: pausing sends", extra={"seconds": quota_wait})
                return

    async def guarded() -> None:
        try:
            await one_loop()
        except BaseException:
            state["halt"] = True  # the other loops send and record the batch they have in hand, then stop
            raise

    # Not a bare gather: a failing loop must not leave another running on after send_due has returned (a worker
    # closing its pool then would cut that loop off between sending a batch and recording it).
    ended = await asyncio.gather(*(guarded() for _ in range(max(1, loops))), return_exceptions=True)
    for error in ended:
        if isinstance(error, BaseException):
            raise error
    return state["handled"]


async def _send_batch(pool, sender: PushSender, rows) -> float:
    """Send one claimed batch and record every answer; returns the quota pause it asks for (0: none)."""
    results = await sender.send([_message(r) for r in rows])
    updates, dead_devices, dead_reasons = [], [], []
    quota_wait = 0.0
    for row, result in zip(rows, results, strict=True):
        update, dead = outcome(row, result)
        updates.append(update)
        if dead:
            dead_devices.append(row["device_id"])
            dead_reasons.append(f"FCM {dead}")
        if result.error_code == "QUOTA_EXCEEDED":
            quota_wait = max(quota_wait, update[-1])
    async with pool.acquire() as conn, conn.transaction():
        await store.record_results(conn, updates)
        if dead_devices:
            await store.deactivate_devices(conn, dead_devices, dead_reasons)
    return quota_wait


# ---- city broadcasts -------------------------------------------------------------------------------------------

CITY = "hanoi"
FAN_OUT_BATCH = 5000


def _broadcast_view(row, deliveries: dict[str, int]) -> Broadcast:
    return Broadcast(
        id=row["id"], target_unit=row["target_unit"], urgency=row["urgency"],
        title={"vi": row["title_vi"], "en": row["title_en"]}, status=row["status"], scheduled_at=row["scheduled_at"],
        needs_approval=row["target_unit"] == CITY, approved_by=str(row["approved_by"]) if row["approved_by"] else None,
        recipients=row["recipients"], deliveries=deliveries, created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], cancelled_at=row["cancelled_at"],
    )


def may_broadcast(identity, principal, target_unit: str) -> bool:
    """Whole city: admins only (and a second admin approves). A unit's area: its staff, or admins."""
    if target_unit == CITY:
        return principal.has_role("admin")
    return principal.has_role("admin") or covers_unit(identity, principal, "staff", target_unit)


async def create_broadcast(conn: asyncpg.Connection, identity, principal, body: BroadcastCreate,
                           idempotency_key: str) -> tuple[Broadcast, bool]:
    unit = identity.units.get(body.target_unit)
    if unit is None:
        raise InvalidInput.field("target_unit", f"unknown unit {body.target_unit!r}")
    if not may_broadcast(identity, principal, body.target_unit):
        raise Forbidden(f"you may not broadcast to {body.target_unit}")
    if body.deep_link is not None and not body.deep_link.startswith("ihanoi://"):
        raise InvalidInput.field("deep_link", "deep links start with ihanoi://")
    now = dt.datetime.now(dt.UTC)
    scheduled = body.scheduled_at or now
    if scheduled.tzinfo is None:
        raise InvalidInput.field("scheduled_at", "give a time zone, e.g. 2026-12-01T08:00:00+07:00")
    if scheduled < now - dt.timedelta(minutes=5):
        raise InvalidInput.field("scheduled_at", "is in the past")
    import unicodedata

    texts = {k: unicodedata.normalize("NFC", getattr(body, k)) for k in ("title_vi", "body_vi", "title_en", "body_en")}
    status = "awaiting_approval" if body.target_unit == CITY else "scheduled"
    row, created = await store.insert_broadcast(
        conn, created_by=uuid.UUID(principal.sub), idempotency_key=idempotency_key, target_unit=body.target_unit,
        urgency=body.urgency, texts=texts, deep_link=body.deep_link, status=status,
        scheduled_at=scheduled.astimezone(dt.UTC),
    )
    log.info("broadcast created", extra={"broadcast": row["id"], "target": body.target_unit, "status": status})
    return _broadcast_view(row, {}), created


async def _visible_broadcast(conn, identity, principal, broadcast_id: int, *, lock: bool = False):
    row = await store.get_broadcast(conn, broadcast_id, lock=lock)
    if row is None or not (str(row["created_by"]) == principal.sub or may_broadcast(identity, principal,
                                                                                        row["target_unit"])):
        raise NotFound("no such broadcast")
    return row


async def get_broadcast(conn, identity, principal, broadcast_id: int) -> Broadcast:
    row = await _visible_broadcast(conn, identity, principal, broadcast_id)
    return _broadcast_view(row, await store.broadcast_delivery_counts(conn, broadcast_id))


async def list_broadcasts(conn, principal) -> list[Broadcast]:
    return [_broadcast_view(r, {}) for r in await store.list_broadcasts(conn, uuid.UUID(principal.sub))]


async def approve_broadcast(conn, identity, principal, broadcast_id: int) -> Broadcast:
    """A city-wide broadcast needs a second admin: anyone but its author."""
    if not principal.has_role("admin"):
        raise Forbidden("only an admin approves a city-wide broadcast")
    async with conn.transaction():
        row = await _visible_broadcast(conn, identity, principal, broadcast_id, lock=True)
        if str(row["created_by"]) == principal.sub:
            raise Forbidden("a second admin must approve: not the one who wrote it")
        if row["status"] != "awaiting_approval":
            raise Conflict(f"the broadcast is {row['status']}, not awaiting approval")
        await store.set_broadcast_status(conn, broadcast_id, "scheduled", approved_by=uuid.UUID(principal.sub),
                                         approved_at=dt.datetime.now(dt.UTC))
    return await get_broadcast(conn, identity, principal, broadcast_id)


async def cancel_broadcast(conn, identity, principal, broadcast_id: int) -> Broadcast:
    async with conn.transaction():
        row = await _visible_broadcast(conn, identity, principal, broadcast_id, lock=True)
        if row["status"] == "cancelled":
            raise Conflict("the broadcast is already cancelled")
        # 'done' means every inbox row is written; pushes may still be waiting (quiet hours, back-off)
        skipped = await store.skip_pending_deliveries(conn, broadcast_id)
        if row["status"] == "done" and skipped == 0:
            raise Conflict("the broadcast has already been delivered")
        await store.set_broadcast_status(conn, broadcast_id, "cancelled", cancelled_at=dt.datetime.now(dt.UTC))
    log.info("broadcast cancelled", extra={"broadcast": broadcast_id, "skipped": skipped})
    return await get_broadcast(conn, identity, principal, broadcast_id)


async def fan_out(pool, units, *, batch: int = FAN_OUT_BATCH, max_batches: int = 20, stopping=None,
                  redis=None) -> int:
    """Worker: expand due broadcasts into inbox rows and deliveries, one committed batch at a time."""
    handled_total = 0
    for _ in range(max_batches):
        if stopping is not None and stopping.is_set():
            break
        async with pool.acquire() as conn, conn.transaction():
            broadcast = await store.take_due_broadcast(conn)
            if broadcast is None:
                return handled_total
            now = dt.datetime.now(dt.UTC)
            if broadcast["status"] == "scheduled":
                await store.set_broadcast_status(conn, broadcast["id"], "running", started_at=now)
            area = None
            if broadcast["target_unit"] != CITY:
                area = [u.code for u in units if units.contains(broadcast["target_unit"], u.code)]
            handled, _ = await store.fan_out_batch(conn, broadcast, units=area, limit=batch, now=now)
            if handled < batch:
                await store.set_broadcast_status(conn, broadcast["id"], "done", finished_at=now)
            handled_total += handled
        if broadcast["status"] == "scheduled" and redis is not None:
            # after the first batch commits: one event for every connected app, not one per resident
            await publish_broadcast(redis, broadcast)
    return handled_total
