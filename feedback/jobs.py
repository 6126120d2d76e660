"""The feedback worker's jobs: escalate overdue reports, close answers nobody reopened, purge unattached photos.

Each scan locks the rows it takes (SKIP LOCKED), so several workers share the work; each step is checked
against workflow.py's table like a person's.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from app import identity
from app.identity import UnitDirectory, units_file_directory
from app.web import local
from feedback import store, workflow
from feedback.context import Ctx, utcnow
from feedback.service import add_event
from feedback.workflow import REOPEN_DAYS, SYSTEM
from modules import Job, JobContext
from notifications.service import notify

UNATTACHED_PHOTO_TTL = dt.timedelta(hours=24)


async def escalate_overdue(conn: asyncpg.Connection, units: UnitDirectory, *, now: dt.datetime | None = None,
                           limit: int = 200) -> int:
    """Tell the unit's heads and the parent unit's staff about reports past a deadline, once per deadline."""
    now = now or utcnow()
    ctx = Ctx(units=units)
    done = 0
    async with conn.transaction():
        for row in await store.overdue_unescalated(conn, now, limit):
            workflow.check(row, "escalate", {SYSTEM})
            answer_late = row["answer_due_at"] < now
            level = 2 if answer_late else 1
            due = row["answer_due_at"] if answer_late else row["receive_due_at"]
            unit = units.get(row["unit_code"])
            parent = unit.parent_code if unit else None
            recipients = set(await identity.holders_of(conn, "unit_head", [row["unit_code"]]))
            if parent:
                recipients |= set(await identity.holders_of(conn, "staff", [parent]))
                recipients |= set(await identity.holders_of(conn, "unit_head", [parent]))
            await store.update_report(conn, row["id"], now, escalation_level=level)
            deadline = ("trả lời", "answer") if answer_late else ("tiếp nhận", "receipt")
            event_id = await add_event(conn, ctx, row["id"], now, "escalated", actor=None, role="system",
                                       public=False, unit=row["unit_code"],
                                       data={"deadline": deadline[1], "due_at": due.isoformat(),
                                             "notified": len(recipients), "parent_unit": parent})
            if recipients:
                await notify(
                    conn, sorted(recipients, key=str), "feedback.escalated",
                    {"id": row["id"], "deadline_vi": deadline[0], "deadline_en": deadline[1],
                     "category_vi": row["category_vi"], "category_en": row["category_en"],
                     "unit_vi": unit.name_vi if unit else row["unit_code"],
                     "unit_en": unit.name_en if unit else row["unit_code"],
                     "due_local": local(due).strftime("%H:%M %d/%m/%Y")},
                    category="feedback", idempotency_key=f"feedback:{row['id']}:{event_id}",
                    deep_link=f"ihanoi://feedback/{row['id']}")
            done += 1
    return done


async def close_expired_answers(conn: asyncpg.Connection, units: UnitDirectory, *, now: dt.datetime | None = None,
                                limit: int = 500) -> int:
    """An answer nobody reopened or rated within 7 days is final."""
    now = now or utcnow()
    ctx = Ctx(units=units)
    async with conn.transaction():
        rows = await store.answered_before(conn, now - dt.timedelta(days=REOPEN_DAYS), limit)
        for row in rows:
            step = workflow.check(row, "expire", {SYSTEM})
            await store.update_report(conn, row["id"], now, status=step.to_status, closed_at=now,
                                      close_reason="expired")
            await add_event(conn, ctx, row["id"], now, "closed", actor=None, role="system",
                            from_status=row["status"], to_status=step.to_status, unit=row["unit_code"],
                            notify_reporter=row["reporter_id"])
    return len(rows)


async def purge_photos(conn: asyncpg.Connection) -> int:
    return await store.purge_unattached_photos(conn, UNATTACHED_PHOTO_TTL)


# ---- as the kernel's worker runs them ------------------------------------------------------------------------


async def _escalate(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await escalate_overdue(conn, units_file_directory(ctx.settings.units_file)) > 0:
            if ctx.stopping is not None and ctx.stopping.is_set():
                return


async def _close_expired(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await close_expired_answers(conn, units_file_directory(ctx.settings.units_file)) > 0:
            if ctx.stopping is not None and ctx.stopping.is_set():
                return


async def _purge(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        await purge_photos(conn)


JOBS = [Job(name="feedback.escalate", run=_escalate, every_seconds=60),
        Job(name="feedback.close-expired", run=_close_expired, every_seconds=300),
        Job(name="feedback.purge-photos", run=_purge, every_seconds=3600)]
