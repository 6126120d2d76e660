"""City broadcasts: staff announce to their unit's area, admins to the whole city once a second admin approves.

The API creates, approves and cancels them and shows their progress; `ihanoi worker` fans each due broadcast out
into inbox rows and deliveries, one committed batch of residents at a time (a restarted worker goes on where the
last one stopped), and tells connected apps once, on the shared broadcasts channel, when its first batch commits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import unicodedata
import uuid

import asyncpg

from app.errors import Conflict, Forbidden, InvalidInput, NotFound, UnknownReference
from app.identity import IdentityRuntime, Principal, UnitDirectory, covers_unit
from app.redisdb import Redis
from notifications import live, store
from notifications.models import Broadcast, BroadcastCreate

log = logging.getLogger("ihanoi.notifications")

CITY = "hanoi"
FAN_OUT_BATCH = 5000


def _broadcast_view(row: asyncpg.Record, deliveries: dict[str, int]) -> Broadcast:
    return Broadcast(
        id=row["id"], target_unit=row["target_unit"], urgency=row["urgency"],
        title={"vi": row["title_vi"], "en": row["title_en"]}, status=row["status"], scheduled_at=row["scheduled_at"],
        needs_approval=row["target_unit"] == CITY, approved_by=str(row["approved_by"]) if row["approved_by"] else None,
        recipients=row["recipients"], deliveries=deliveries, created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], cancelled_at=row["cancelled_at"],
    )


def may_broadcast(identity: IdentityRuntime, principal: Principal, target_unit: str) -> bool:
    """Whole city: admins only (and a second admin approves). A unit's area: its staff, or admins."""
    if target_unit == CITY:
        return principal.has_role("admin")
    return principal.has_role("admin") or covers_unit(identity, principal, "staff", target_unit)


def broadcast_reaches(units: UnitDirectory, target_unit: str, home: str | None) -> bool:
    """A city-wide broadcast reaches everyone; another, residents whose home ward lies in its area."""
    return target_unit == CITY or (home is not None and units.contains(target_unit, home))


# ---- the API's side -------------------------------------------------------------------------------------------


async def create_broadcast(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                           body: BroadcastCreate, idempotency_key: str) -> tuple[Broadcast, bool]:
    """The broadcast, and whether it was created now (False: the same key was used before, its first answer)."""
    unit = identity.units.get(body.target_unit)
    if unit is None:
        raise UnknownReference.field("target_unit", f"unknown unit {body.target_unit!r}")
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
    texts = {k: unicodedata.normalize("NFC", getattr(body, k)) for k in ("title_vi", "body_vi", "title_en", "body_en")}
    status = "awaiting_approval" if body.target_unit == CITY else "scheduled"
    row, created = await store.insert_broadcast(
        conn, created_by=uuid.UUID(principal.sub), idempotency_key=idempotency_key, target_unit=body.target_unit,
        urgency=body.urgency, texts=texts, deep_link=body.deep_link, status=status,
        scheduled_at=scheduled.astimezone(dt.UTC),
    )
    log.info("broadcast created", extra={"broadcast": row["id"], "target": body.target_unit, "status": status})
    return _broadcast_view(row, {}), created


async def _visible_broadcast(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                             broadcast_id: int, *, lock: bool = False) -> asyncpg.Record:
    row = await store.get_broadcast(conn, broadcast_id, lock=lock)
    if row is None or not (str(row["created_by"]) == principal.sub or may_broadcast(identity, principal,
                                                                                        row["target_unit"])):
        raise NotFound("no such broadcast")
    return row


async def get_broadcast(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                        broadcast_id: int) -> Broadcast:
    row = await _visible_broadcast(conn, identity, principal, broadcast_id)
    return _broadcast_view(row, await store.broadcast_delivery_counts(conn, broadcast_id))


async def list_broadcasts(conn: asyncpg.Connection, principal: Principal) -> list[Broadcast]:
    return [_broadcast_view(r, {}) for r in await store.list_broadcasts(conn, uuid.UUID(principal.sub))]


async def awaiting_approval(conn: asyncpg.Connection, principal: Principal) -> list[Broadcast]:
    """City-wide broadcasts waiting for a second admin, for admins (others see none)."""
    if not principal.has_role("admin"):
        return []
    return [_broadcast_view(r, {}) for r in await store.broadcasts_awaiting_approval(conn)]


async def texts_of(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                   broadcast_id: int) -> dict[str, str]:
    """The broadcast's words in both languages, for whoever may see it (an approver reads before approving)."""
    row = await _visible_broadcast(conn, identity, principal, broadcast_id)
    return {k: row[k] for k in ("title_vi", "body_vi", "title_en", "body_en")}


async def approve_broadcast(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                            broadcast_id: int) -> Broadcast:
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


async def cancel_broadcast(conn: asyncpg.Connection, identity: IdentityRuntime, principal: Principal,
                           broadcast_id: int) -> Broadcast:
    async with conn.transaction():
        row = await _visible_broadcast(conn, identity, principal, broadcast_id, lock=True)
        if row["status"] == "cancelled":
            raise Conflict("the broadcast is already cancelled")
        # 'done' means every inbox row is written; pushes may still be waiting (quiet hours, back-off)
        skipped = await store.skip_pending_deliveries(conn, broadcast_id,
                                                      row["started_at"] or dt.datetime.now(dt.UTC))
        if row["status"] == "done" and skipped == 0:
            raise Conflict("the broadcast has already been delivered")
        await store.set_broadcast_status(conn, broadcast_id, "cancelled", cancelled_at=dt.datetime.now(dt.UTC))
    log.info("broadcast cancelled", extra={"broadcast": broadcast_id, "skipped": skipped})
    return await get_broadcast(conn, identity, principal, broadcast_id)


# ---- the worker's side: fan-out -------------------------------------------------------------------------------


async def fan_out(pool: asyncpg.Pool, units: UnitDirectory, *, batch: int = FAN_OUT_BATCH, max_batches: int = 20,
                  stopping: asyncio.Event | None = None, redis: Redis | None = None) -> int:
    """Expand due broadcasts into inbox rows and deliveries, a committed batch at a time; returns residents handled."""
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
            await live.publish_broadcast(redis, broadcast)
    return handled_total
