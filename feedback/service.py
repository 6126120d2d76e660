"""The rules of feedback (phản ánh hiện trường): sending a report, and every step on it.

A report is routed on submission to its category's unit (or the ward it is in) with two deadlines in
working hours: receipt and answer. Staff of that unit (or a unit above it) receive, assign, answer,
reject, transfer or merge it; the reporter may close it, rate the answer and reopen it within 7 days.
Which step is allowed from which status, and to whom, is workflow.py's table; each step here checks
itself against it (`_begin`) before its own rules. Every step is an event on the report's timeline;
public steps notify the reporter and followers through notifications, in the same transaction
(`add_event`). What a caller sees afterwards is views.py's; the worker's jobs are jobs.py's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import asyncpg

from app import identity, ratelimit
from app import images as photo_files
from app.errors import Conflict, Forbidden, InvalidInput, InvalidTransition, NotFound, UnknownReference
from app.identity import Principal
from app.web import local
from feedback import places, store, views, workflow
from feedback.calendar import WorkingCalendar
from feedback.context import Ctx, is_staff_for, nfc, parse_uuid, resident_id, utcnow
from feedback.models import (
    AnswerCreate,
    Following,
    Photo,
    PhotoRef,
    Rate,
    Reject,
    Report,
    ReportCreate,
    Timeline,
    Transfer,
)
from feedback.workflow import EVENT_LABELS, REOPEN_DAYS, REPORTER, STAFF, STATUS_LABELS
from notifications.service import notify

DUPLICATE_RADIUS_M = 100.0
DUPLICATE_DAYS = 7
MAX_PHOTOS = 5
DESCRIPTION_MIN = 10  # characters, after NFC and trimming
PHOTO_MAX_BYTES = 10 * 1024 * 1024


@lru_cache(maxsize=2)
def calendar() -> WorkingCalendar:
    return WorkingCalendar.load()


# ---- photos ------------------------------------------------------------------------------------------------


async def count_photo_upload(redis, principal: Principal, per_hour: int) -> None:
    """Each upload attempt counts against the resident's hourly quota, before any work on the bytes: photos
    are the heaviest thing a resident can make us store and process. Over it: 429 with Retry-After."""
    await ratelimit.hit(redis, "feedback-photos", principal.sub, f"{per_hour}/3600")


async def upload_photo(conn: asyncpg.Connection, principal: Principal, raw: bytes) -> Photo:
    """Check a photo by its content, strip its metadata, make a thumbnail; it waits to be attached."""
    processed = await asyncio.to_thread(photo_files.process_photo, raw, max_bytes=PHOTO_MAX_BYTES, field="body")
    row = await store.insert_photo(
        conn, photo_id=uuid.uuid4(), owner_id=resident_id(principal), content_type=processed.content_type,
        width=processed.width, height=processed.height, sha256=processed.sha256, data=processed.data,
        thumbnail=processed.thumbnail)
    return views.photo(row)


async def _attach(conn: asyncpg.Connection, owner: uuid.UUID, refs: Sequence[PhotoRef], report_id: int,
                  event_id: int | None) -> None:
    if len(refs) > MAX_PHOTOS:
        raise InvalidInput.field("photos", f"at most {MAX_PHOTOS} photos")
    ids = [parse_uuid(ref.id, "photos") for ref in refs]
    if len(set(ids)) != len(ids):
        raise InvalidInput.field("photos", "the same photo is listed twice")
    pairs = [(i, r.public) for i, r in zip(ids, refs, strict=True)]
    attached = await store.attach_photos(conn, owner_id=owner, photos=pairs, report_id=report_id, event_id=event_id)
    if attached != len(ids):
        raise InvalidInput.field("photos", "upload each photo first (POST /v1/feedback/photos); a photo can be "
                                           "attached once, by the person who uploaded it")


# ---- submit ------------------------------------------------------------------------------------------------


def route(category: asyncpg.Record, ward_code: str) -> str:
    """The responsible unit: the category's, or the ward's own when the category says 'ward'."""
    return ward_code if category["default_unit"] == "ward" else category["default_unit"]


def deadlines(start: dt.datetime, receive_hours: int, answer_hours: int) -> tuple[dt.datetime, dt.datetime]:
    cal = calendar()
    return cal.add_working_hours(start, receive_hours), cal.add_working_hours(start, answer_hours)


class PossibleDuplicates(Conflict):
    slug = "possible-duplicates"


async def submit(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, body: ReportCreate, *,
                 idempotency_key: str, source: str = "app", now: dt.datetime | None = None) -> Report:
    """Create a report; raises PossibleDuplicates first unless the resident has seen the nearby ones."""
    now = now or utcnow()
    reporter = resident_id(principal)
    if reporter is None:
        raise Forbidden("reports are sent by residents, signed in with VNeID")
    # The report keeps its own key for ever (UNIQUE (reporter_id, idempotency_key)), besides the kernel's
    # Idempotency-Key record (app/idempotency.py), which replays the exact answer but is purged after 24 h: a
    # phone that queued a report offline may send it again days later and must not make a second one; Open311
    # POSTs, whose answers (XML or JSON in Open311's shape) the kernel does not replay, rely on this key alone;
    # and the demo seed is idempotent through it. A retry finds the first report and answers it.
    existing = await store.report_by_key(conn, reporter, idempotency_key)
    if existing is not None:
        return await views.get_report(conn, ctx, principal, existing)
    category = await store.category(conn, body.category)
    if category is None or not category["active"]:
        raise UnknownReference.field("category", f"unknown category {body.category!r}; see GET /v1/feedback/categories")
    outside = places.outside_hanoi(body.latitude, body.longitude)
    if outside is not None:
        raise InvalidInput.field(outside, "the place must be inside Hanoi")
    ward = ctx.units.get(body.ward)
    if ward is None or ward.kind not in ("ward", "commune"):
        raise UnknownReference.field("ward", f"unknown ward or commune {body.ward!r}; see GET /v1/units")
    description = nfc(body.description)
    if len(description) < DESCRIPTION_MIN:
        raise InvalidInput.field("description", f"describe the problem in at least {DESCRIPTION_MIN} characters")
    if not body.duplicates_checked:
        nearby = await store.nearby_open(
            conn, category=category["code"], latitude=body.latitude, longitude=body.longitude,
            radius_m=DUPLICATE_RADIUS_M, since=now - dt.timedelta(days=DUPLICATE_DAYS), limit=5, now=now)
        if nearby:
            raise PossibleDuplicates(
                f"{len(nearby)} open report(s) of this category within {int(DUPLICATE_RADIUS_M)} m from the last "
                f"{DUPLICATE_DAYS} days: follow one of them, or send again with duplicates_checked=true",
                candidates=[views.summary(r, ctx) for r in nearby])
    unit_code = route(category, ward.code)
    receive_due, answer_due = deadlines(now, category["receive_hours"], category["answer_hours"])
    names = await identity.names_of(conn, [reporter])
    report_id = await store.insert_report(
        conn, reporter_id=reporter, idempotency_key=idempotency_key, reporter_name=names.get(reporter),
        hide_name=body.hide_name, visibility=body.visibility, source=source, category_code=category["code"],
        urgency=category["urgency"], description=description, latitude=body.latitude, longitude=body.longitude,
        address=nfc(body.address), ward_code=ward.code, unit_code=unit_code, submitted_at=now, routed_at=now,
        receive_due_at=receive_due, answer_due_at=answer_due, updated_at=now)
    if report_id is None:  # the same key raced in from another request and won
        return await views.get_report(conn, ctx, principal, await store.report_by_key(conn, reporter, idempotency_key))
    await _attach(conn, reporter, body.photos, report_id, None)
    await add_event(conn, ctx, report_id, now, "submitted", actor=principal, role="reporter", to_status="submitted",
                    unit=unit_code, notify_reporter=reporter, report_status="submitted")
    return await views.get_report(conn, ctx, principal, report_id)


# ---- the timeline and who hears of it ---------------------------------------------------------------------


async def add_event(conn: asyncpg.Connection, ctx: Ctx, report_id: int, at: dt.datetime, kind: str, *,
                    actor: Principal | None, role: str, public: bool = True, from_status: str | None = None,
                    to_status: str | None = None, unit: str | None = None, message: str | None = None,
                    data: dict[str, Any] | None = None, notify_reporter: uuid.UUID | None = None,
                    report_status: str | None = None) -> int:
    """Record a step; a public one is pushed to the reporter and every follower (inbox + push)."""
    event_id = await store.insert_event(
        conn, report_id=report_id, at=at, kind=kind, public=public, actor_id=resident_id(actor), actor_role=role,
        actor_unit=unit, from_status=from_status, to_status=to_status, message=message, data=data)
    if public and notify_reporter is not None:
        status = report_status or to_status or ""
        label_vi, label_en = STATUS_LABELS.get(status, EVENT_LABELS[kind])
        event_vi, event_en = EVENT_LABELS[kind]
        recipients = {notify_reporter, *await store.followers(conn, report_id)}
        if actor is not None:
            recipients.discard(resident_id(actor))  # no push about what you just did yourself
        if recipients:
            await notify(
                conn, sorted(recipients, key=str), "feedback.status",
                {"id": report_id, "status_vi": label_vi, "status_en": label_en,
                 "message_vi": f"{event_vi}." + (f" {message}" if message else ""),
                 "message_en": f"{event_en}." + (f" {message}" if message else "")},
                category="feedback", idempotency_key=f"feedback:{report_id}:{event_id}",
                deep_link=f"ihanoi://feedback/{report_id}")
    return event_id


# ---- steps -------------------------------------------------------------------------------------------------


async def _begin(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, action: str,
                 now: dt.datetime) -> tuple[asyncpg.Record, workflow.Step]:
    """Lock the report and check the step against the workflow: who the caller is to it, then its status.

    A report the caller may not see is 'not found'; a clerk may know a public report of another unit exists,
    but not act on it (403)."""
    row = await store.get_report(conn, report_id, now, for_update=True)
    if row is None or not views.is_visible(ctx, principal, row):
        raise NotFound(f"no report {report_id}")
    standing = set()
    if is_staff_for(ctx, principal, row["unit_code"]):
        standing.add(STAFF)
    if resident_id(principal) == row["reporter_id"]:
        standing.add(REPORTER)
    return row, workflow.check(row, action, standing)


async def lock_version(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> str:
    """Lock a report the caller may see for the rest of the transaction and give its version (status and last
    change): a page shown before someone else acted compares it and does not act on a report that changed."""
    row = await store.get_report(conn, report_id, utcnow(), for_update=True)
    if row is None or not views.is_visible(ctx, principal, row):
        raise NotFound(f"no report {report_id}")
    return version_of(row["status"], row["updated_at"])


def version_of(status: str, updated_at: dt.datetime) -> str:
    return f"{status}@{updated_at.astimezone(dt.UTC).isoformat()}"


async def receive(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                  urgency: str | None) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "receive", now)
    changes: dict[str, Any] = {"status": step.to_status, "received_at": now}
    if urgency is not None and urgency != row["urgency"]:
        hours = await store.deadline_hours(conn, urgency)
        changes["urgency"] = urgency
        changes["answer_due_at"] = calendar().add_working_hours(row["routed_at"], hours["answer_hours"])
        await add_event(conn, ctx, report_id, now, "urgency_changed", actor=principal, role="staff",
                        unit=row["unit_code"], data={"from": row["urgency"], "to": urgency}, public=False)
    await store.update_report(conn, report_id, now, **changes)
    await add_event(conn, ctx, report_id, now, "received", actor=principal, role="staff", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def assign(rt: Any, conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                 assignee: str) -> Report:
    now = utcnow()
    row, _ = await _begin(conn, ctx, principal, report_id, "assign", now)
    clerk = parse_uuid(assignee, "assignee_id")
    if not await identity.holds_role_for(rt, conn, clerk, "staff", row["unit_code"]):
        raise InvalidInput.field("assignee_id", f"the assignee must be staff of {row['unit_code']}")
    await store.update_report(conn, report_id, now, assignee_id=clerk)
    await add_event(conn, ctx, report_id, now, "assigned", actor=principal, role="staff", unit=row["unit_code"],
                    public=False, data={"assignee_id": str(clerk)})
    return await views.get_report(conn, ctx, principal, report_id)


async def start(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "start", now)
    await store.update_report(conn, report_id, now, status=step.to_status)
    await add_event(conn, ctx, report_id, now, "started", actor=principal, role="staff", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


def _fill(template: asyncpg.Record, values: dict[str, str], defaults: dict[str, str]) -> str:
    wanted = set(views.template_variables(template["body"]))
    merged = defaults | {k: nfc(v) for k, v in values.items()}
    missing = sorted(wanted - set(merged))
    if missing:
        raise InvalidInput.field("values", f"template {template['code']} needs {', '.join(missing)}")
    return template["body"].format(**{name: merged[name] for name in wanted})


async def _template_text(conn: asyncpg.Connection, ctx: Ctx, kind: str, code: str | None, text: str,
                         values: dict[str, str], unit_code: str, now: dt.datetime) -> str:
    if code is None:
        return nfc(text)
    template = await store.answer_template(conn, code)
    if template is None or template["kind"] != kind or template["unit_code"] not in (None, unit_code):
        raise InvalidInput.field("template", f"no {kind} template {code!r} for this unit")
    defaults = {"unit": ctx.units.get(unit_code).name_vi if ctx.units.get(unit_code) else unit_code,
                "date": local(now).strftime("%d/%m/%Y"), "details": ""}
    filled = _fill(template, values, defaults)
    return nfc(f"{filled} {nfc(text)}" if text.strip() else filled)


async def answer(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                 body: AnswerCreate) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "answer", now)
    text = await _template_text(conn, ctx, "answer", body.template, body.text, body.values, row["unit_code"], now)
    if len(text) < 10:
        raise InvalidInput.field("text", "write an answer of at least 10 characters (or pick a template)")
    on_time = now <= row["answer_due_at"]
    await store.update_report(conn, report_id, now, status=step.to_status, answered_at=now, answered_on_time=on_time,
                              answer_text=text, rating=None, rating_comment=None, rated_at=None)
    event_id = await add_event(conn, ctx, report_id, now, "answered", actor=principal, role="staff",
                               from_status=row["status"], to_status=step.to_status, unit=row["unit_code"],
                               message=text, data={"on_time": on_time}, notify_reporter=row["reporter_id"])
    await _attach(conn, resident_id(principal), body.photos, report_id, event_id)
    return await views.get_report(conn, ctx, principal, report_id)


async def reject(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, body: Reject) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "reject", now)
    reason = await _template_text(conn, ctx, "reject", body.template, body.reason, body.values, row["unit_code"],
                                  now)
    if len(reason) < 5:
        raise InvalidInput.field("reason", "say why the report is rejected (at least 5 characters) or pick a template")
    await store.update_report(conn, report_id, now, status=step.to_status, closed_at=now, close_reason="rejected")
    await add_event(conn, ctx, report_id, now, "rejected", actor=principal, role="staff", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], message=reason,
                    notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def transfer(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                   body: Transfer) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "transfer", now)
    target = ctx.units.get(body.unit)
    if target is None or target.kind == "city":
        raise UnknownReference.field("unit", f"unknown unit {body.unit!r}; transfer to a department, ward or commune")
    if target.code == row["unit_code"]:
        raise InvalidInput.field("unit", "the report is already with this unit")
    hours = await store.deadline_hours(conn, row["urgency"])
    receive_due, answer_due = deadlines(now, hours["receive_hours"], hours["answer_hours"])
    await store.update_report(conn, report_id, now, status=step.to_status, unit_code=target.code, routed_at=now,
                              received_at=None, receive_due_at=receive_due, answer_due_at=answer_due,
                              assignee_id=None, escalation_level=0)
    await add_event(conn, ctx, report_id, now, "transferred", actor=principal, role="staff",
                    from_status=row["status"], to_status=step.to_status, unit=row["unit_code"],
                    message=nfc(body.reason), data={"from_unit": row["unit_code"], "to_unit": target.code},
                    notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def add_note(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, text: str) -> Timeline:
    now = utcnow()
    row, _ = await _begin(conn, ctx, principal, report_id, "note", now)
    await add_event(conn, ctx, report_id, now, "note", actor=principal, role="staff", public=False,
                    unit=row["unit_code"], message=nfc(text))
    return await views.timeline(conn, ctx, principal, report_id)


async def merge(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, into: int) -> Report:
    """Close a report as a duplicate of another: its reporter and followers follow the original."""
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "merge", now)
    if into == report_id:
        raise InvalidInput.field("into", "a report cannot duplicate itself")
    original = await store.get_report(conn, into, now, for_update=True)
    if original is None or not is_staff_for(ctx, principal, original["unit_code"]):
        raise InvalidInput.field("into", f"report {into} is not one your unit handles")
    if original["duplicate_of"] is not None:
        raise InvalidInput.field("into", f"report {into} is itself a duplicate of {original['duplicate_of']}")
    await store.update_report(conn, report_id, now, status=step.to_status, duplicate_of=into, closed_at=now,
                              close_reason="duplicate")
    also = [row["reporter_id"]] if row["reporter_id"] != original["reporter_id"] else []
    await store.move_followers(conn, report_id, into, also)
    await add_event(conn, ctx, report_id, now, "merged", actor=principal, role="staff", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], data={"into": into},
                    message=f"Trùng với phản ánh #{into}", notify_reporter=row["reporter_id"])
    await add_event(conn, ctx, into, now, "merged", actor=principal, role="staff", unit=row["unit_code"],
                    data={"duplicate": report_id}, public=False)
    return await views.get_report(conn, ctx, principal, report_id)


async def close(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> Report:
    """The reporter accepts the answer."""
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "close", now)
    await store.update_report(conn, report_id, now, status=step.to_status, closed_at=now, close_reason="accepted")
    await add_event(conn, ctx, report_id, now, "closed", actor=principal, role="reporter", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def rate(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, body: Rate) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "rate", now)
    if row["answered_at"] is None or row["duplicate_of"] is not None:
        raise InvalidTransition("only an answer can be rated")
    if row["rated_at"] is not None and row["rated_at"] >= row["answered_at"]:
        raise InvalidTransition("this answer is rated already")
    comment = nfc(body.comment) if body.comment else None
    changes: dict[str, Any] = {"rating": body.stars, "rating_comment": comment, "rated_at": now}
    if step.to_status != row["status"]:  # rating an answer closes it
        changes |= {"status": step.to_status, "closed_at": now, "close_reason": "rated"}
    await store.update_report(conn, report_id, now, **changes)
    await add_event(conn, ctx, report_id, now, "rated", actor=principal, role="reporter", from_status=row["status"],
                    to_status=step.to_status, unit=row["unit_code"], message=comment, data={"stars": body.stars},
                    notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def reopen(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, reason: str) -> Report:
    now = utcnow()
    row, step = await _begin(conn, ctx, principal, report_id, "reopen", now)
    if row["answered_at"] is None or row["duplicate_of"] is not None:
        raise InvalidTransition("only an answered report can be reopened")
    if now > row["answered_at"] + dt.timedelta(days=REOPEN_DAYS):
        raise InvalidTransition(f"an answer can be reopened within {REOPEN_DAYS} days; send a new report instead")
    hours = await store.deadline_hours(conn, row["urgency"])
    _, answer_due = deadlines(now, hours["receive_hours"], hours["answer_hours"])
    await store.update_report(conn, report_id, now, status=step.to_status, closed_at=None, close_reason=None,
                              answer_due_at=answer_due, reopen_count=row["reopen_count"] + 1, escalation_level=1)
    await add_event(conn, ctx, report_id, now, "reopened", actor=principal, role="reporter",
                    from_status=row["status"], to_status=step.to_status, unit=row["unit_code"], message=nfc(reason),
                    notify_reporter=row["reporter_id"])
    return await views.get_report(conn, ctx, principal, report_id)


async def set_following(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                        follow: bool) -> Following:
    me = resident_id(principal)
    row = await views.visible_report(conn, ctx, principal, report_id, utcnow())
    if row["reporter_id"] == me:
        raise InvalidInput.field("report_id", "you hear of your own report already")
    if row["visibility"] != "public":
        raise NotFound(f"no report {report_id}")
    count = await (store.follow if follow else store.unfollow)(conn, report_id, me)
    return Following(report_id=report_id, following=follow, follower_count=count)
