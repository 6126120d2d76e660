"""The rules of feedback (phản ánh hiện trường): who may do what to a report, when, and who hears of it.

A report is routed on submission to its category's unit (or the ward it is in) with two deadlines in
working hours: receipt and answer. Staff of that unit (or a unit above it) receive, assign, answer,
reject, transfer or merge it; the reporter may close it, rate the answer and reopen it within 7 days.
Every step is an event on the report's timeline; public steps notify the reporter and followers
through notifications, in the same transaction. A worker job escalates overdue reports to the unit's
heads and the parent unit's staff, and closes answers nobody reopened within 7 days.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import string
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from app.errors import Conflict, Forbidden, InvalidInput, InvalidTransition, NotFound
from app.identity import service as identity
from app.identity.models import Principal
from app.identity.units import UnitDirectory
from feedback import photos as photo_files
from feedback import store
from feedback.calendar import WorkingCalendar
from feedback.models import (
    Answer,
    AnswerCreate,
    AnswerTemplate,
    Category,
    Event,
    Following,
    Named,
    Photo,
    PhotoRef,
    Rate,
    Rating,
    Reject,
    Report,
    ReportCreate,
    ReportPage,
    ReportSummary,
    Timeline,
    Transfer,
    UnitStats,
    UnitStatsList,
)
from notifications import templates
from notifications.service import notify

log = logging.getLogger("ihanoi.feedback")

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
# Hanoi's administrative extent with a small margin (Ba Vì in the west to Gia Lâm in the east).
HANOI_LAT = (20.53, 21.42)
HANOI_LNG = (105.28, 106.03)
DUPLICATE_RADIUS_M = 100.0
DUPLICATE_DAYS = 7
REOPEN_DAYS = 7
MAX_PHOTOS = 5
PHOTO_MAX_BYTES = 10 * 1024 * 1024
UNATTACHED_PHOTO_TTL = dt.timedelta(hours=24)
STATS_CACHE_SECONDS = 60
# A map box with at least this many public reports is listed newest first with the box as a filter; a smaller
# one through its spatial index (see public_reports).
DENSE_BOX = 5000
API_PHOTOS = "/v1/feedback/photos"

STATUS_LABELS = {
    "submitted": ("Chờ tiếp nhận", "Waiting to be received"),
    "received": ("Đã tiếp nhận", "Received"),
    "in_progress": ("Đang xử lý", "In progress"),
    "answered": ("Đã trả lời", "Answered"),
    "closed": ("Đã đóng", "Closed"),
    "rejected": ("Từ chối tiếp nhận", "Rejected"),
}
EVENT_LABELS = {
    "submitted": ("Gửi phản ánh", "Report sent"),
    "received": ("Đơn vị đã tiếp nhận", "Received by the unit"),
    "assigned": ("Giao cán bộ xử lý", "Assigned to a clerk"),
    "started": ("Bắt đầu xử lý", "Handling started"),
    "answered": ("Đã trả lời", "Answered"),
    "closed": ("Đã đóng", "Closed"),
    "rejected": ("Từ chối tiếp nhận", "Rejected"),
    "transferred": ("Chuyển đơn vị xử lý", "Transferred to another unit"),
    "reopened": ("Người phản ánh mở lại", "Reopened by the reporter"),
    "rated": ("Người phản ánh đánh giá", "Rated by the reporter"),
    "escalated": ("Quá hạn, đã báo cấp trên", "Overdue, escalated"),
    "merged": ("Gộp vào phản ánh trùng", "Merged into a duplicate report"),
    "note": ("Ghi chú nội bộ", "Internal note"),
    "urgency_changed": ("Đổi mức độ", "Urgency changed"),
}

templates.register(
    templates.Template(
        "feedback.status", "Phản ánh #{id}: {status_vi}", "{message_vi}",
        "Report #{id}: {status_en}", "{message_en}"),
    templates.Template(
        "feedback.escalated", "Phản ánh #{id} quá hạn {deadline_vi}",
        "Phản ánh “{category_vi}” tại {unit_vi} đã quá hạn {deadline_vi} lúc {due_local}.",
        "Report #{id} is past its {deadline_en} deadline",
        "The “{category_en}” report at {unit_en} passed its {deadline_en} deadline at {due_local}."),
)


@lru_cache(maxsize=2)
def calendar() -> WorkingCalendar:
    return WorkingCalendar.load()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def local(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(LOCAL_TZ)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


@dataclass(frozen=True)
class Ctx:
    """What every call needs besides the connection: the unit directory and the caller's language."""

    units: UnitDirectory
    language: str = "vi"

    def pick(self, pair: tuple[str, str]) -> str:
        return pair[1] if self.language == "en" else pair[0]

    def unit(self, code: str) -> Named:
        unit = self.units.get(code)
        if unit is None:
            return Named(code=code, name=code)
        return Named(code=code, name=unit.name_en if self.language == "en" else unit.name_vi)


def _resident_id(principal: Principal | None) -> uuid.UUID | None:
    if principal is None or principal.kind != "resident":
        return None
    return uuid.UUID(principal.sub)


def is_staff_for(ctx: Ctx, principal: Principal | None, unit_code: str) -> bool:
    """Staff or the head of the unit, or of a unit above it."""
    if principal is None:
        return False
    return any(ctx.units.contains(scope, unit_code)
               for role in ("staff", "unit_head") for scope in principal.scopes_of(role))


def _parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError):
        raise InvalidInput.field(field, "must be a UUID") from None


# ---- categories ------------------------------------------------------------------------------------------


def _category(row: asyncpg.Record, ctx: Ctx) -> Category:
    en = ctx.language == "en"
    return Category(code=row["code"], name=row["name_en"] if en else row["name_vi"],
                    description=row["description_en"] if en else row["description_vi"], keywords=row["keywords"],
                    urgency=row["urgency"], default_unit=row["default_unit"], receive_hours=row["receive_hours"],
                    answer_hours=row["answer_hours"])


async def list_categories(conn: asyncpg.Connection, ctx: Ctx) -> list[Category]:
    return [_category(row, ctx) for row in await store.categories(conn)]


async def get_category(conn: asyncpg.Connection, ctx: Ctx, code: str) -> Category:
    row = await store.category(conn, code)
    if row is None or not row["active"]:
        raise NotFound(f"no category {code!r}")
    return _category(row, ctx)


# ---- photos ------------------------------------------------------------------------------------------------


def _photo(row: asyncpg.Record) -> Photo:
    url = f"{API_PHOTOS}/{row['id']}"
    return Photo(id=str(row["id"]), url=url, thumbnail_url=f"{url}/thumbnail",
                 content_type=row["content_type"], width=row["width"], height=row["height"],
                 byte_size=row["byte_size"], public=row["public"])


async def upload_photo(conn: asyncpg.Connection, principal: Principal, raw: bytes) -> Photo:
    """Check a photo by its content, strip its metadata, make a thumbnail; it waits to be attached."""
    processed = await asyncio.to_thread(photo_files.process_photo, raw, max_bytes=PHOTO_MAX_BYTES, field="body")
    row = await store.insert_photo(
        conn, photo_id=uuid.uuid4(), owner_id=_resident_id(principal), content_type=processed.content_type,
        width=processed.width, height=processed.height, sha256=processed.sha256, data=processed.data,
        thumbnail=processed.thumbnail)
    return _photo(row)


async def photo_content(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, photo_id: str, *,
                        thumbnail: bool) -> tuple[bytes, str, str]:
    """The photo's bytes, type and hash, if the caller may see it (else 404: its existence is private too)."""
    try:
        parsed = uuid.UUID(photo_id)
    except ValueError:
        raise NotFound("no such photo") from None
    row = await store.photo_content(conn, parsed, thumbnail=thumbnail)
    if row is None:
        raise NotFound("no such photo")
    me = _resident_id(principal)
    allowed = (
        (row["report_id"] is not None and row["public"] and row["visibility"] == "public")
        or (me is not None and me in (row["owner_id"], row["reporter_id"]))
        or (row["report_id"] is not None and is_staff_for(ctx, principal, row["unit_code"]))
    )
    if not allowed:
        raise NotFound("no such photo")
    return bytes(row["content"]), "image/jpeg" if thumbnail else row["content_type"], row["sha256"]


async def _attach(conn: asyncpg.Connection, owner: uuid.UUID, refs: Sequence[PhotoRef], report_id: int,
                  event_id: int | None) -> None:
    if len(refs) > MAX_PHOTOS:
        raise InvalidInput.field("photos", f"at most {MAX_PHOTOS} photos")
    ids = [_parse_uuid(ref.id, "photos") for ref in refs]
    if len(set(ids)) != len(ids):
        raise InvalidInput.field("photos", "the same photo is listed twice")
    pairs = [(i, r.public) for i, r in zip(ids, refs, strict=True)]
    attached = await store.attach_photos(conn, owner_id=owner, photos=pairs, report_id=report_id, event_id=event_id)
    if attached != len(ids):
        raise InvalidInput.field("photos", "upload each photo first (POST /v1/feedback/photos); a photo can be "
                                           "attached once, by the person who uploaded it")


# ---- views -------------------------------------------------------------------------------------------------


def _overdue(row: asyncpg.Record, now: dt.datetime) -> bool:
    if row["status"] not in store.OPEN:
        return False
    return row["answer_due_at"] < now or (row["status"] == "submitted" and row["receive_due_at"] < now)


def _category_name(row: asyncpg.Record, ctx: Ctx) -> Named:
    return Named(row["category_code"], row["category_en" if ctx.language == "en" else "category_vi"])


def _summary(row: asyncpg.Record, ctx: Ctx, now: dt.datetime) -> ReportSummary:
    thumb = row["thumbnail_id"]
    return ReportSummary(
        id=row["id"], category=_category_name(row, ctx),
        status=row["status"], status_label=ctx.pick(STATUS_LABELS[row["status"]]), urgency=row["urgency"],
        description=row["description"], latitude=row["latitude"], longitude=row["longitude"], address=row["address"],
        ward=ctx.unit(row["ward_code"]), unit=ctx.unit(row["unit_code"]), submitted_at=local(row["submitted_at"]),
        answer_due_at=local(row["answer_due_at"]), overdue=_overdue(row, now), follower_count=row["follower_count"],
        thumbnail_url=f"{API_PHOTOS}/{thumb}/thumbnail" if thumb else None)


async def _report_view(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, row: asyncpg.Record,
                       now: dt.datetime) -> Report:
    me = _resident_id(principal)
    staff = is_staff_for(ctx, principal, row["unit_code"])
    mine = me is not None and me == row["reporter_id"]
    photo_rows = await store.photos_of(conn, [row["id"]])
    visible = [p for p in photo_rows if p["public"] or mine or staff]
    report_photos = [_photo(p) for p in visible if p["event_id"] is None]
    answer = None
    if row["answered_at"] is not None and row["answer_text"] is not None:
        answer_photos = [_photo(p) for p in visible if p["event_id"] is not None]
        answer = Answer(text=row["answer_text"], at=local(row["answered_at"]), on_time=row["answered_on_time"],
                        unit=ctx.unit(row["unit_code"]), photos=answer_photos)
    rating = None
    if row["rating"] is not None:
        rating = Rating(stars=row["rating"], comment=row["rating_comment"], at=local(row["rated_at"]))
    following = me is not None and not mine and await store.is_following(conn, row["id"], me)
    reopen_until = None
    if mine and row["status"] in ("answered", "closed") and row["answered_at"] and row["duplicate_of"] is None:
        until = row["answered_at"] + dt.timedelta(days=REOPEN_DAYS)
        reopen_until = local(until) if until > now else None
    return Report(
        id=row["id"], category=_category_name(row, ctx),
        status=row["status"], status_label=ctx.pick(STATUS_LABELS[row["status"]]), urgency=row["urgency"],
        description=row["description"], latitude=row["latitude"], longitude=row["longitude"], address=row["address"],
        ward=ctx.unit(row["ward_code"]), unit=ctx.unit(row["unit_code"]), visibility=row["visibility"],
        reporter_name=row["reporter_name"] if (staff or mine or not row["hide_name"]) else None,
        name_hidden=row["hide_name"], submitted_at=local(row["submitted_at"]), updated_at=local(row["updated_at"]),
        receive_due_at=local(row["receive_due_at"]), answer_due_at=local(row["answer_due_at"]),
        overdue=_overdue(row, now), photos=report_photos, follower_count=row["follower_count"], mine=mine,
        following=following, answer=answer, rating=rating,
        closed_at=local(row["closed_at"]) if row["closed_at"] else None, close_reason=row["close_reason"],
        duplicate_of=row["duplicate_of"], reopen_count=row["reopen_count"], can_reopen_until=reopen_until,
        assignee_id=str(row["assignee_id"]) if staff and row["assignee_id"] else None,
        escalation_level=row["escalation_level"] if staff else None, source=row["source"] if staff else None)


async def _visible_report(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int, *,
                          for_update: bool = False) -> asyncpg.Record:
    """The report if the caller may see it; a private report of someone else is 'not found', not 'forbidden'."""
    row = await store.get_report(conn, report_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no report {report_id}")
    if row["visibility"] != "public" and _resident_id(principal) != row["reporter_id"] \
            and not is_staff_for(ctx, principal, row["unit_code"]):
        raise NotFound(f"no report {report_id}")
    return row


async def get_report(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int) -> Report:
    row = await _visible_report(conn, ctx, principal, report_id)
    return await _report_view(conn, ctx, principal, row, utcnow())


async def timeline(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int) -> Timeline:
    row = await _visible_report(conn, ctx, principal, report_id)
    staff = is_staff_for(ctx, principal, row["unit_code"])
    mine = _resident_id(principal) == row["reporter_id"]
    photo_rows = [p for p in await store.photos_of(conn, [report_id]) if p["event_id"] is not None]
    events = []
    for e in await store.events(conn, report_id, public_only=not staff):
        photos = [_photo(p) for p in photo_rows if p["event_id"] == e["id"] and (p["public"] or mine or staff)]
        events.append(Event(
            id=e["id"], at=local(e["at"]), kind=e["kind"], label=ctx.pick(EVENT_LABELS[e["kind"]]),
            actor=e["actor_role"], public=e["public"],
            actor_unit=ctx.unit(e["actor_unit"]) if e["actor_unit"] else None, from_status=e["from_status"],
            to_status=e["to_status"], message=e["message"], photos=photos,
            data=dict(e["data"]) if (staff and e["data"]) else None,
            actor_id=str(e["actor_id"]) if staff and e["actor_id"] else None))
    return Timeline(report_id=report_id, events=events)


# ---- submit ------------------------------------------------------------------------------------------------


def route(category: asyncpg.Record, ward_code: str) -> str:
    """The responsible unit: the category's, or the ward's own when the category says 'ward'."""
    return ward_code if category["default_unit"] == "ward" else category["default_unit"]


def deadlines(start: dt.datetime, receive_hours: int, answer_hours: int) -> tuple[dt.datetime, dt.datetime]:
    cal = calendar()
    return cal.add_working_hours(start, receive_hours), cal.add_working_hours(start, answer_hours)


async def submit(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, body: ReportCreate, *,
                 idempotency_key: str, source: str = "app", now: dt.datetime | None = None) -> Report:
    """Create a report; raises PossibleDuplicates first unless the resident has seen the nearby ones."""
    now = now or utcnow()
    reporter = _resident_id(principal)
    if reporter is None:
        raise Forbidden("reports are sent by residents, signed in with VNeID")
    existing = await store.report_by_key(conn, reporter, idempotency_key)
    if existing is not None:  # a retried submission (e.g. an Open311 client's) answers the first report
        return await get_report(conn, ctx, principal, existing)
    category = await store.category(conn, body.category)
    if category is None or not category["active"]:
        raise InvalidInput.field("category", f"unknown category {body.category!r}; see GET /v1/feedback/categories")
    if not (HANOI_LAT[0] <= body.latitude <= HANOI_LAT[1] and HANOI_LNG[0] <= body.longitude <= HANOI_LNG[1]):
        field = "latitude" if not HANOI_LAT[0] <= body.latitude <= HANOI_LAT[1] else "longitude"
        raise InvalidInput.field(field, "the place must be inside Hanoi")
    ward = ctx.units.get(body.ward)
    if ward is None or ward.kind not in ("ward", "commune"):
        raise InvalidInput.field("ward", f"unknown ward or commune {body.ward!r}; see GET /v1/units")
    description = nfc(body.description)
    if len(description) < 10:
        raise InvalidInput.field("description", "describe the problem in at least 10 characters")
    if not body.duplicates_checked:
        nearby = await store.nearby_open(
            conn, category=category["code"], latitude=body.latitude, longitude=body.longitude,
            radius_m=DUPLICATE_RADIUS_M, since=now - dt.timedelta(days=DUPLICATE_DAYS), limit=5)
        if nearby:
            raise PossibleDuplicates(
                f"{len(nearby)} open report(s) of this category within {int(DUPLICATE_RADIUS_M)} m from the last "
                f"{DUPLICATE_DAYS} days: follow one of them, or send again with duplicates_checked=true",
                candidates=[_summary(r, ctx, now) for r in nearby])
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
        return await get_report(conn, ctx, principal, await store.report_by_key(conn, reporter, idempotency_key))
    await _attach(conn, reporter, body.photos, report_id, None)
    await _event(conn, ctx, report_id, now, "submitted", actor=principal, role="reporter", to_status="submitted",
                 unit=unit_code, notify_reporter=reporter, report_status="submitted")
    return await get_report(conn, ctx, principal, report_id)


class PossibleDuplicates(Conflict):
    slug = "possible-duplicates"


# ---- the timeline and who hears of it ---------------------------------------------------------------------


async def _event(conn: asyncpg.Connection, ctx: Ctx, report_id: int, at: dt.datetime, kind: str, *,
                 actor: Principal | None, role: str, public: bool = True, from_status: str | None = None,
                 to_status: str | None = None, unit: str | None = None, message: str | None = None,
                 data: dict[str, Any] | None = None, notify_reporter: uuid.UUID | None = None,
                 report_status: str | None = None) -> int:
    """Record a step; a public one is pushed to the reporter and every follower (inbox + push)."""
    event_id = await store.insert_event(
        conn, report_id=report_id, at=at, kind=kind, public=public, actor_id=_resident_id(actor), actor_role=role,
        actor_unit=unit, from_status=from_status, to_status=to_status, message=message, data=data)
    if public and notify_reporter is not None:
        status = report_status or to_status or ""
        label_vi, label_en = STATUS_LABELS.get(status, EVENT_LABELS[kind])
        event_vi, event_en = EVENT_LABELS[kind]
        recipients = {notify_reporter, *await store.followers(conn, report_id)}
        if actor is not None:
            recipients.discard(_resident_id(actor))  # no push about what you just did yourself
        if recipients:
            await notify(
                conn, sorted(recipients, key=str), "feedback.status",
                {"id": report_id, "status_vi": label_vi, "status_en": label_en,
                 "message_vi": f"{event_vi}." + (f" {message}" if message else ""),
                 "message_en": f"{event_en}." + (f" {message}" if message else "")},
                category="feedback", idempotency_key=f"feedback:{report_id}:{event_id}",
                deep_link=f"ihanoi://feedback/{report_id}")
    return event_id


# ---- staff ---------------------------------------------------------------------------------------------------


async def _for_staff(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> asyncpg.Record:
    row = await store.get_report(conn, report_id, for_update=True)
    if row is None:
        raise NotFound(f"no report {report_id}")
    if not is_staff_for(ctx, principal, row["unit_code"]):
        # a clerk may know a public report exists, but not act on another unit's
        if row["visibility"] != "public" and _resident_id(principal) != row["reporter_id"]:
            raise NotFound(f"no report {report_id}")
        raise Forbidden(f"report {report_id} belongs to {row['unit_code']}; only its staff may act on it")
    return row


def _require(row: asyncpg.Record, allowed: Sequence[str], action: str) -> None:
    if row["status"] not in allowed:
        raise InvalidTransition(f"cannot {action} a report that is {row['status']} "
                                f"(only when {' or '.join(allowed)})", status=row["status"])


async def receive(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                  urgency: str | None) -> Report:
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, ("submitted",), "receive")
    changes: dict[str, Any] = {"status": "received", "received_at": now}
    if urgency is not None and urgency != row["urgency"]:
        hours = await store.deadline_hours(conn, urgency)
        changes["urgency"] = urgency
        changes["answer_due_at"] = calendar().add_working_hours(row["routed_at"], hours["answer_hours"])
        await _event(conn, ctx, report_id, now, "urgency_changed", actor=principal, role="staff",
                     unit=row["unit_code"], data={"from": row["urgency"], "to": urgency}, public=False)
    await store.update_report(conn, report_id, now, **changes)
    await _event(conn, ctx, report_id, now, "received", actor=principal, role="staff", from_status="submitted",
                 to_status="received", unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def assign(rt: Any, conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                 assignee: str) -> Report:
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, store.OPEN, "assign")
    clerk = _parse_uuid(assignee, "assignee_id")
    if not await identity.holds_role_for(rt, conn, clerk, "staff", row["unit_code"]):
        raise InvalidInput.field("assignee_id", f"the assignee must be staff of {row['unit_code']}")
    await store.update_report(conn, report_id, now, assignee_id=clerk)
    await _event(conn, ctx, report_id, now, "assigned", actor=principal, role="staff", unit=row["unit_code"],
                 public=False, data={"assignee_id": str(clerk)})
    return await get_report(conn, ctx, principal, report_id)


async def start(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> Report:
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, ("received",), "start handling")
    await store.update_report(conn, report_id, now, status="in_progress")
    await _event(conn, ctx, report_id, now, "started", actor=principal, role="staff", from_status="received",
                 to_status="in_progress", unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


def _fill(template: asyncpg.Record, values: dict[str, str], defaults: dict[str, str]) -> str:
    wanted = {name for _, name, _, _ in string.Formatter().parse(template["body"]) if name}
    merged = defaults | {k: nfc(v) for k, v in values.items()}
    missing = sorted(wanted - set(merged))
    if missing:
        raise InvalidInput.field("values", f"template {template['code']} needs {', '.join(missing)}")
    return template["body"].format(**{name: merged[name] for name in wanted})


async def _template_text(conn: asyncpg.Connection, ctx: Ctx, kind: str, code: str | None, text: str,
                         values: dict[str, str], unit_code: str, now: dt.datetime, field: str) -> str:
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
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, ("received", "in_progress"), "answer")
    text = await _template_text(conn, ctx, "answer", body.template, body.text, body.values, row["unit_code"], now,
                                "text")
    if len(text) < 10:
        raise InvalidInput.field("text", "write an answer of at least 10 characters (or pick a template)")
    on_time = now <= row["answer_due_at"]
    await store.update_report(conn, report_id, now, status="answered", answered_at=now, answered_on_time=on_time,
                              answer_text=text, rating=None, rating_comment=None, rated_at=None)
    event_id = await _event(conn, ctx, report_id, now, "answered", actor=principal, role="staff",
                            from_status=row["status"], to_status="answered", unit=row["unit_code"], message=text,
                            data={"on_time": on_time}, notify_reporter=row["reporter_id"])
    await _attach(conn, _resident_id(principal), body.photos, report_id, event_id)
    return await get_report(conn, ctx, principal, report_id)


async def reject(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, body: Reject) -> Report:
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, store.OPEN, "reject")
    reason = await _template_text(conn, ctx, "reject", body.template, body.reason, body.values, row["unit_code"],
                                  now, "reason")
    if len(reason) < 5:
        raise InvalidInput.field("reason", "say why the report is rejected (at least 5 characters) or pick a template")
    await store.update_report(conn, report_id, now, status="rejected", closed_at=now, close_reason="rejected")
    await _event(conn, ctx, report_id, now, "rejected", actor=principal, role="staff", from_status=row["status"],
                 to_status="rejected", unit=row["unit_code"], message=reason, notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def transfer(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                   body: Transfer) -> Report:
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, store.OPEN, "transfer")
    target = ctx.units.get(body.unit)
    if target is None or target.kind == "city":
        raise InvalidInput.field("unit", f"unknown unit {body.unit!r}; transfer to a department, ward or commune")
    if target.code == row["unit_code"]:
        raise InvalidInput.field("unit", "the report is already with this unit")
    hours = await store.deadline_hours(conn, row["urgency"])
    receive_due, answer_due = deadlines(now, hours["receive_hours"], hours["answer_hours"])
    await store.update_report(conn, report_id, now, status="submitted", unit_code=target.code, routed_at=now,
                              received_at=None, receive_due_at=receive_due, answer_due_at=answer_due,
                              assignee_id=None, escalation_level=0)
    await _event(conn, ctx, report_id, now, "transferred", actor=principal, role="staff", from_status=row["status"],
                 to_status="submitted", unit=row["unit_code"], message=nfc(body.reason),
                 data={"from_unit": row["unit_code"], "to_unit": target.code}, notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def add_note(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, text: str) -> Timeline:
    row = await _for_staff(conn, ctx, principal, report_id)
    await _event(conn, ctx, report_id, utcnow(), "note", actor=principal, role="staff", public=False,
                 unit=row["unit_code"], message=nfc(text))
    return await timeline(conn, ctx, principal, report_id)


async def merge(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, into: int) -> Report:
    """Close a report as a duplicate of another: its reporter and followers follow the original."""
    now = utcnow()
    row = await _for_staff(conn, ctx, principal, report_id)
    _require(row, store.OPEN, "merge")
    if into == report_id:
        raise InvalidInput.field("into", "a report cannot duplicate itself")
    original = await store.get_report(conn, into, for_update=True)
    if original is None or not is_staff_for(ctx, principal, original["unit_code"]):
        raise InvalidInput.field("into", f"report {into} is not one your unit handles")
    if original["duplicate_of"] is not None:
        raise InvalidInput.field("into", f"report {into} is itself a duplicate of {original['duplicate_of']}")
    await store.update_report(conn, report_id, now, status="closed", duplicate_of=into, closed_at=now,
                              close_reason="duplicate")
    also = [row["reporter_id"]] if row["reporter_id"] != original["reporter_id"] else []
    await store.move_followers(conn, report_id, into, also)
    await _event(conn, ctx, report_id, now, "merged", actor=principal, role="staff", from_status=row["status"],
                 to_status="closed", unit=row["unit_code"], data={"into": into},
                 message=f"Trùng với phản ánh #{into}", notify_reporter=row["reporter_id"])
    await _event(conn, ctx, into, now, "merged", actor=principal, role="staff", unit=row["unit_code"],
                 data={"duplicate": report_id}, public=False)
    return await get_report(conn, ctx, principal, report_id)


async def list_templates(conn: asyncpg.Connection, ctx: Ctx, principal: Principal,
                         unit_code: str) -> list[AnswerTemplate]:
    if not is_staff_for(ctx, principal, unit_code):
        raise Forbidden(f"this needs the staff role for {unit_code}")
    rows = await store.answer_templates(conn, [unit_code])
    return [AnswerTemplate(code=r["code"], kind=r["kind"], title=r["title"], body=r["body"],
                           variables=sorted({n for _, n, _, _ in string.Formatter().parse(r["body"]) if n}))
            for r in rows]


# ---- the reporter and other residents -----------------------------------------------------------------------


async def _own(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> asyncpg.Record:
    row = await _visible_report(conn, ctx, principal, report_id, for_update=True)
    if row["reporter_id"] != _resident_id(principal):
        raise Forbidden("only the resident who sent the report may do this")
    return row


async def close(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int) -> Report:
    """The reporter accepts the answer."""
    now = utcnow()
    row = await _own(conn, ctx, principal, report_id)
    _require(row, ("answered",), "close")
    await store.update_report(conn, report_id, now, status="closed", closed_at=now, close_reason="accepted")
    await _event(conn, ctx, report_id, now, "closed", actor=principal, role="reporter", from_status="answered",
                 to_status="closed", unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def rate(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, body: Rate) -> Report:
    now = utcnow()
    row = await _own(conn, ctx, principal, report_id)
    _require(row, ("answered", "closed"), "rate")
    if row["answered_at"] is None or row["duplicate_of"] is not None:
        raise InvalidTransition("only an answer can be rated")
    if row["rated_at"] is not None and row["rated_at"] >= row["answered_at"]:
        raise InvalidTransition("this answer is rated already")
    comment = nfc(body.comment) if body.comment else None
    changes: dict[str, Any] = {"rating": body.stars, "rating_comment": comment, "rated_at": now}
    if row["status"] == "answered":
        changes |= {"status": "closed", "closed_at": now, "close_reason": "rated"}
    await store.update_report(conn, report_id, now, **changes)
    await _event(conn, ctx, report_id, now, "rated", actor=principal, role="reporter", from_status=row["status"],
                 to_status=changes.get("status", row["status"]), unit=row["unit_code"], message=comment,
                 data={"stars": body.stars}, notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def reopen(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int, reason: str) -> Report:
    now = utcnow()
    row = await _own(conn, ctx, principal, report_id)
    _require(row, ("answered", "closed"), "reopen")
    if row["answered_at"] is None or row["duplicate_of"] is not None:
        raise InvalidTransition("only an answered report can be reopened")
    if now > row["answered_at"] + dt.timedelta(days=REOPEN_DAYS):
        raise InvalidTransition(f"an answer can be reopened within {REOPEN_DAYS} days; send a new report instead")
    hours = await store.deadline_hours(conn, row["urgency"])
    _, answer_due = deadlines(now, hours["receive_hours"], hours["answer_hours"])
    await store.update_report(conn, report_id, now, status="in_progress", closed_at=None, close_reason=None,
                              answer_due_at=answer_due, reopen_count=row["reopen_count"] + 1, escalation_level=1)
    await _event(conn, ctx, report_id, now, "reopened", actor=principal, role="reporter", from_status=row["status"],
                 to_status="in_progress", unit=row["unit_code"], message=nfc(reason),
                 notify_reporter=row["reporter_id"])
    return await get_report(conn, ctx, principal, report_id)


async def set_following(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, report_id: int,
                        follow: bool) -> Following:
    me = _resident_id(principal)
    row = await _visible_report(conn, ctx, principal, report_id)
    if row["reporter_id"] == me:
        raise InvalidInput.field("report_id", "you hear of your own report already")
    if row["visibility"] != "public":
        raise NotFound(f"no report {report_id}")
    count = await (store.follow if follow else store.unfollow)(conn, report_id, me)
    return Following(report_id=report_id, following=follow, follower_count=count)


# ---- lists -------------------------------------------------------------------------------------------------


def encode_cursor(moment: dt.datetime, report_id: int) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{report_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[dt.datetime, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, report_id = raw.partition("|")
        parsed = dt.datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed, int(report_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput.field("cursor", "not a cursor this API gave", source="query") from None


def parse_bbox(value: str) -> tuple[float, float, float, float]:
    """'min_lng,min_lat,max_lng,max_lat' (GeoJSON order), inside Hanoi's extent."""
    try:
        min_lng, min_lat, max_lng, max_lat = (float(x) for x in value.split(","))
    except ValueError:
        raise InvalidInput.field("bbox", "min_lng,min_lat,max_lng,max_lat in degrees", source="query") from None
    if not (min_lng < max_lng and min_lat < max_lat and -180 <= min_lng and max_lng <= 180 and -90 <= min_lat
            and max_lat <= 90):
        raise InvalidInput.field("bbox", "min_lng,min_lat,max_lng,max_lat with min < max", source="query")
    return min_lng, min_lat, max_lng, max_lat


def _text(q: str | None) -> str | None:
    if q is None or not q.strip():
        return None
    q = nfc(q)
    if len(q) > 200:
        raise InvalidInput.field("q", "at most 200 characters", source="query")
    return q


def _statuses(status: str | None) -> list[str] | None:
    if not status:
        return None
    values = [s.strip() for s in status.split(",") if s.strip()]
    unknown = [s for s in values if s not in STATUS_LABELS]
    if unknown:
        raise InvalidInput.field("status", f"unknown status {unknown[0]!r}; one or more of "
                                 f"{', '.join(STATUS_LABELS)}", source="query")
    return values


async def _page(conn: asyncpg.Connection, ctx: Ctx, filters: store.Filters, *, order: str, cursor: str | None,
                limit: int, now: dt.datetime) -> ReportPage:
    rows = await store.list_reports(conn, filters, order=order, after=decode_cursor(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(last["submitted_at"] if order == "newest" else last["answer_due_at"], last["id"])
    return ReportPage(items=[_summary(r, ctx, now) for r in rows], next_cursor=next_cursor)


async def public_reports(conn: asyncpg.Connection, ctx: Ctx, *, bbox: str | None, category: str | None,
                         status: str | None, ward: str | None, q: str | None, cursor: str | None,
                         limit: int) -> ReportPage:
    now = utcnow()
    filters = store.Filters()
    filters.add("r.visibility = 'public'")
    if bbox:
        min_lng, min_lat, max_lng, max_lat = parse_bbox(bbox)
        corners = (min_lat, min_lng, max_lat, max_lng)
        if await store.box_holds_at_least(conn, corners, DENSE_BOX):
            # PostgreSQL estimates every box alike, so a box holding much of the city would still be read
            # through its spatial index and sorted. Newest first with the box as plain latitude and longitude
            # ranges (the same box: the projection is linear in each; estimated from column statistics) finds a
            # page after about limit / share rows instead.
            filters.add("r.latitude BETWEEN ? AND ? AND r.longitude BETWEEN ? AND ?",
                        min_lat, max_lat, min_lng, max_lng)
        else:
            filters.add("r.location <@ box(feedback_metres(?, ?), feedback_metres(?, ?))", *corners)
    store.apply_common(filters, category=category, status=_statuses(status), ward=ward, text=_text(q), overdue=None,
                       now=now)
    return await _page(conn, ctx, filters, order="newest", cursor=cursor, limit=limit, now=now)


async def unit_queue(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, unit_code: str, *,
                     status: str | None, category: str | None, overdue: bool | None, ward: str | None,
                     q: str | None, assignee: str | None, order: str, cursor: str | None, limit: int) -> ReportPage:
    if ctx.units.get(unit_code) is None:
        raise NotFound(f"no unit {unit_code!r}")
    if not is_staff_for(ctx, principal, unit_code):
        raise Forbidden(f"this needs the staff role for {unit_code}")
    now = utcnow()
    filters = store.Filters()
    filters.add("r.unit_code = ?", unit_code)
    if assignee == "me":
        filters.add("r.assignee_id = ?", _resident_id(principal))
    elif assignee == "none":
        filters.add("r.assignee_id IS NULL")
    elif assignee:
        filters.add("r.assignee_id = ?", _parse_uuid(assignee, "assignee"))
    store.apply_common(filters, category=category, status=_statuses(status) or list(store.OPEN), ward=ward,
                       text=_text(q), overdue=overdue, now=now)
    return await _page(conn, ctx, filters, order=order, cursor=cursor, limit=limit, now=now)


async def my_reports(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, *, following: bool,
                     status: str | None, cursor: str | None, limit: int) -> ReportPage:
    now = utcnow()
    filters = store.Filters()
    me = _resident_id(principal)
    if following:
        filters.add("r.id IN (SELECT report_id FROM report_follower WHERE resident_id = ?) "
                    "AND r.visibility = 'public'", me)
    else:
        filters.add("r.reporter_id = ?", me)
    store.apply_common(filters, category=None, status=_statuses(status), ward=None, text=None, overdue=None, now=now)
    return await _page(conn, ctx, filters, order="newest", cursor=cursor, limit=limit, now=now)


async def stats(conn: asyncpg.Connection, ctx: Ctx, *, days: int, unit: str | None, redis: Any = None) -> UnitStatsList:
    """Per-unit figures over the last `days`; public and unauthenticated, so the aggregate is cached for a
    minute in Redis (shared by every API process) rather than run for every visitor."""
    now = utcnow()
    if unit is not None and ctx.units.get(unit) is None:
        raise NotFound(f"no unit {unit!r}")
    cache = redis.key("feedback", "stats", days, unit or "*") if redis is not None else None
    cached = await redis.client.get(cache) if cache else None
    if cached:
        since_text, rows = msgspec.json.decode(cached)
        since = dt.datetime.fromisoformat(since_text)
    else:
        since = now - dt.timedelta(days=days)
        rows = [dict(r) for r in await store.unit_stats(conn, since=since, now=now, unit=unit)]
        if cache:
            await redis.client.set(cache, msgspec.json.encode([since.isoformat(), rows]), ex=STATS_CACHE_SECONDS)
    return UnitStatsList(since=local(since), units=[UnitStats(
        unit=ctx.unit(r["unit_code"]), received=r["received"], answered=r["answered"],
        answered_on_time=r["answered_on_time"],
        on_time_rate=round(r["answered_on_time"] / r["answered"], 4) if r["answered"] else None,
        open=r["open"], overdue=r["overdue"], ratings=r["ratings"],
        average_rating=round(r["average_rating"], 2) if r["average_rating"] is not None else None) for r in rows])


# ---- the worker ----------------------------------------------------------------------------------------------


async def escalate_overdue(conn: asyncpg.Connection, units: UnitDirectory, *, now: dt.datetime | None = None,
                           limit: int = 200) -> int:
    """Tell the unit's heads and the parent unit's staff about reports past a deadline, once per deadline."""
    now = now or utcnow()
    ctx = Ctx(units=units)
    done = 0
    async with conn.transaction():
        for row in await store.overdue_unescalated(conn, now, limit):
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
            event_id = await _event(conn, ctx, row["id"], now, "escalated", actor=None, role="system", public=False,
                                    unit=row["unit_code"],
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
            await store.update_report(conn, row["id"], now, status="closed", closed_at=now, close_reason="expired")
            await _event(conn, ctx, row["id"], now, "closed", actor=None, role="system", from_status="answered",
                         to_status="closed", unit=row["unit_code"], notify_reporter=row["reporter_id"])
    return len(rows)


async def purge_photos(conn: asyncpg.Connection) -> int:
    return await store.purge_unattached_photos(conn, UNATTACHED_PHOTO_TTL)
