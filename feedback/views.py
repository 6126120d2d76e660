"""What each caller sees of feedback: categories, photos, a report and its timeline, the lists (public map and
list, a unit's queue, my reports) and the per-unit figures.

Who sees what: a private report exists only for its reporter and the staff of its unit (or a unit above it),
for everyone else it is 'not found'; the reporter's name is shown to them only when hidden; private photos,
internal notes, assignments and escalations are for staff. Overdue is the database's judgement
(feedback_report_is_overdue), at the moment of the request.
"""

from __future__ import annotations

import datetime as dt
import math
import string
import uuid
from typing import Any

import asyncpg
import msgspec

from app.errors import Forbidden, InvalidInput, NotFound
from app.identity import Principal
from app.web import decode_cursor, encode_cursor, local
from feedback import store
from feedback.context import Ctx, is_staff_for, nfc, parse_uuid, resident_id, utcnow
from feedback.models import (
    Answer,
    AnswerTemplate,
    Category,
    Event,
    Named,
    Photo,
    Rating,
    Report,
    ReportPage,
    ReportSummary,
    Timeline,
    UnitStats,
    UnitStatsList,
)
from feedback.workflow import EVENT_LABELS, REOPEN_DAYS, STATUS_LABELS, STATUSES

STATS_CACHE_SECONDS = 60
# A map box with at least this many public reports is listed newest first with the box as a filter; a smaller
# one through its spatial index (see public_reports).
DENSE_BOX = 5000
API_PHOTOS = "/v1/feedback/photos"


# ---- categories and templates ------------------------------------------------------------------------------


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


def template_variables(body: str) -> list[str]:
    return sorted({name for _, name, _, _ in string.Formatter().parse(body) if name})


async def list_templates(conn: asyncpg.Connection, ctx: Ctx, principal: Principal,
                         unit_code: str) -> list[AnswerTemplate]:
    if not is_staff_for(ctx, principal, unit_code):
        raise Forbidden(f"this needs the staff role for {unit_code}")
    rows = await store.answer_templates(conn, [unit_code])
    return [AnswerTemplate(code=r["code"], kind=r["kind"], title=r["title"], body=r["body"],
                           variables=template_variables(r["body"]))
            for r in rows]


# ---- photos ------------------------------------------------------------------------------------------------


def photo(row: asyncpg.Record) -> Photo:
    url = f"{API_PHOTOS}/{row['id']}"
    return Photo(id=str(row["id"]), url=url, thumbnail_url=f"{url}/thumbnail",
                 content_type=row["content_type"], width=row["width"], height=row["height"],
                 byte_size=row["byte_size"], public=row["public"])


async def photo_content(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, photo_id: uuid.UUID, *,
                        thumbnail: bool) -> tuple[bytes, str, str]:
    """The photo's bytes, type and hash, if the caller may see it (else 404: its existence is private too)."""
    row = await store.photo_content(conn, photo_id, thumbnail=thumbnail)
    if row is None:
        raise NotFound("no such photo")
    me = resident_id(principal)
    allowed = (
        (row["report_id"] is not None and row["public"] and row["visibility"] == "public")
        or (me is not None and me in (row["owner_id"], row["reporter_id"]))
        or (row["report_id"] is not None and is_staff_for(ctx, principal, row["unit_code"]))
    )
    if not allowed:
        raise NotFound("no such photo")
    return bytes(row["content"]), "image/jpeg" if thumbnail else row["content_type"], row["sha256"]


# ---- a report ----------------------------------------------------------------------------------------------


def _category_name(row: asyncpg.Record, ctx: Ctx) -> Named:
    return Named(row["category_code"], row["category_en" if ctx.language == "en" else "category_vi"])


def summary(row: asyncpg.Record, ctx: Ctx) -> ReportSummary:
    thumb = row["thumbnail_id"]
    return ReportSummary(
        id=row["id"], category=_category_name(row, ctx),
        status=row["status"], status_label=ctx.pick(STATUS_LABELS[row["status"]]), urgency=row["urgency"],
        description=row["description"], latitude=row["latitude"], longitude=row["longitude"], address=row["address"],
        ward=ctx.unit(row["ward_code"]), unit=ctx.unit(row["unit_code"]), submitted_at=local(row["submitted_at"]),
        answer_due_at=local(row["answer_due_at"]), overdue=row["overdue"], follower_count=row["follower_count"],
        thumbnail_url=f"{API_PHOTOS}/{thumb}/thumbnail" if thumb else None)


def is_visible(ctx: Ctx, principal: Principal | None, row: asyncpg.Record) -> bool:
    """A private report is seen by its reporter and its unit's staff only."""
    return (row["visibility"] == "public" or resident_id(principal) == row["reporter_id"]
            or is_staff_for(ctx, principal, row["unit_code"]))


async def visible_report(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int,
                         now: dt.datetime) -> asyncpg.Record:
    """The report if the caller may see it; a private report of someone else is 'not found', not 'forbidden'."""
    row = await store.get_report(conn, report_id, now)
    if row is None or not is_visible(ctx, principal, row):
        raise NotFound(f"no report {report_id}")
    return row


async def _report_view(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, row: asyncpg.Record,
                       now: dt.datetime) -> Report:
    me = resident_id(principal)
    staff = is_staff_for(ctx, principal, row["unit_code"])
    mine = me is not None and me == row["reporter_id"]
    photo_rows = await store.photos_of(conn, [row["id"]])
    visible = [p for p in photo_rows if p["public"] or mine or staff]
    report_photos = [photo(p) for p in visible if p["event_id"] is None]
    answer = None
    if row["answered_at"] is not None and row["answer_text"] is not None:
        answer_photos = [photo(p) for p in visible if p["event_id"] is not None]
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
        overdue=row["overdue"], photos=report_photos, follower_count=row["follower_count"], mine=mine,
        following=following, answer=answer, rating=rating,
        closed_at=local(row["closed_at"]) if row["closed_at"] else None, close_reason=row["close_reason"],
        duplicate_of=row["duplicate_of"], reopen_count=row["reopen_count"], can_reopen_until=reopen_until,
        assignee_id=str(row["assignee_id"]) if staff and row["assignee_id"] else None,
        escalation_level=row["escalation_level"] if staff else None, source=row["source"] if staff else None)


async def get_report(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int) -> Report:
    now = utcnow()
    row = await visible_report(conn, ctx, principal, report_id, now)
    return await _report_view(conn, ctx, principal, row, now)


async def timeline(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, report_id: int) -> Timeline:
    row = await visible_report(conn, ctx, principal, report_id, utcnow())
    staff = is_staff_for(ctx, principal, row["unit_code"])
    mine = resident_id(principal) == row["reporter_id"]
    photo_rows = [p for p in await store.photos_of(conn, [report_id]) if p["event_id"] is not None]
    events = []
    for e in await store.events(conn, report_id, row["submitted_at"], public_only=not staff):
        photos = [photo(p) for p in photo_rows if p["event_id"] == e["id"] and (p["public"] or mine or staff)]
        events.append(Event(
            id=e["id"], at=local(e["at"]), kind=e["kind"], label=ctx.pick(EVENT_LABELS[e["kind"]]),
            actor=e["actor_role"], public=e["public"],
            actor_unit=ctx.unit(e["actor_unit"]) if e["actor_unit"] else None, from_status=e["from_status"],
            to_status=e["to_status"], message=e["message"], photos=photos,
            data=dict(e["data"]) if (staff and e["data"]) else None,
            actor_id=str(e["actor_id"]) if staff and e["actor_id"] else None))
    return Timeline(report_id=report_id, events=events)


# ---- lists -------------------------------------------------------------------------------------------------


# a list's cursor: the sort key of the last row shown (the time it sorts by and its id); api.ReportCursor
CURSOR = (dt.datetime, int)


def parse_bbox(value: str) -> tuple[float, float, float, float]:
    """'min_lng,min_lat,max_lng,max_lat' (GeoJSON order): two opposite corners, in either order, each held to the
    world's edges (a zoomed-out map view reaches beyond them)."""
    try:
        lng1, lat1, lng2, lat2 = (float(x) for x in value.split(","))
    except ValueError:
        raise InvalidInput.field("bbox", "min_lng,min_lat,max_lng,max_lat in degrees", source="query") from None
    if not all(math.isfinite(x) for x in (lng1, lat1, lng2, lat2)):
        raise InvalidInput.field("bbox", "min_lng,min_lat,max_lng,max_lat in degrees", source="query")
    lngs = sorted(min(max(x, -180.0), 180.0) for x in (lng1, lng2))
    lats = sorted(min(max(x, -90.0), 90.0) for x in (lat1, lat2))
    return lngs[0], lats[0], lngs[1], lats[1]


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
    unknown = [s for s in values if s not in STATUSES]
    if unknown:
        raise InvalidInput.field("status", f"unknown status {unknown[0]!r}; one or more of "
                                 f"{', '.join(STATUSES)}", source="query")
    return values


async def _page(conn: asyncpg.Connection, ctx: Ctx, query: store.ReportQuery, *, order: str, cursor: str | None,
                limit: int) -> ReportPage:
    after = decode_cursor(cursor, CURSOR) if cursor else None
    rows = await store.list_reports(conn, query, order=order, after=after, limit=limit + 1, now=utcnow())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(last["submitted_at"] if order == "newest" else last["answer_due_at"], last["id"])
    return ReportPage(items=[summary(r, ctx) for r in rows], next_cursor=next_cursor)


async def public_reports(conn: asyncpg.Connection, ctx: Ctx, *, bbox: str | None, category: str | None,
                         status: str | None, ward: str | None, q: str | None, cursor: str | None,
                         limit: int) -> ReportPage:
    box, dense = None, False
    if bbox:
        min_lng, min_lat, max_lng, max_lat = parse_bbox(bbox)
        box = (min_lat, min_lng, max_lat, max_lng)
        # PostgreSQL estimates every box alike, so a box holding much of the city would still be read through its
        # spatial index and sorted. Newest first with the box as plain latitude and longitude ranges (the same
        # box: the projection is linear in each; estimated from column statistics) finds a page after about
        # limit / share rows instead.
        dense = await store.box_holds_at_least(conn, box, DENSE_BOX)
    query = store.ReportQuery(public=True, box=box, box_as_ranges=dense, category=category,
                              statuses=_statuses(status), ward=ward, text=_text(q))
    return await _page(conn, ctx, query, order="newest", cursor=cursor, limit=limit)


async def unit_queue(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, unit_code: str, *,
                     status: str | None, category: str | None, overdue: bool | None, ward: str | None,
                     q: str | None, assignee: str | None, order: str, cursor: str | None, limit: int) -> ReportPage:
    """A unit's reports for its staff: the open ones unless `status` names others."""
    if ctx.units.get(unit_code) is None:
        raise NotFound(f"no unit {unit_code!r}")
    if not is_staff_for(ctx, principal, unit_code):
        raise Forbidden(f"this needs the staff role for {unit_code}")
    clerk = None
    if assignee == "me":
        clerk = resident_id(principal)
    elif assignee and assignee != "none":
        clerk = parse_uuid(assignee, "assignee")
    statuses = _statuses(status)
    query = store.ReportQuery(unit=unit_code, assignee=clerk, unassigned=assignee == "none", category=category,
                              statuses=statuses, open=statuses is None, ward=ward, text=_text(q), overdue=overdue)
    return await _page(conn, ctx, query, order=order, cursor=cursor, limit=limit)


async def my_reports(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, *, following: bool,
                     status: str | None, cursor: str | None, limit: int) -> ReportPage:
    """Reports I sent (private ones included), or the public ones I follow."""
    me = resident_id(principal)
    query = store.ReportQuery(followed_by=me if following else None, reporter=None if following else me,
                              statuses=_statuses(status))
    return await _page(conn, ctx, query, order="newest", cursor=cursor, limit=limit)


# ---- transparency ------------------------------------------------------------------------------------------


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


# ---- the staff console -------------------------------------------------------------------------------------


async def possible_duplicates(conn: asyncpg.Connection, ctx: Ctx, principal: Principal,
                              report_id: int) -> list[ReportSummary]:
    """Open reports of the same category near this one, sent in the days before it: what a clerk may merge it
    into (the same rule that offers them to a resident before sending)."""
    from feedback.service import DUPLICATE_DAYS, DUPLICATE_RADIUS_M

    now = utcnow()
    row = await visible_report(conn, ctx, principal, report_id, now)
    if not is_staff_for(ctx, principal, row["unit_code"]):
        raise Forbidden(f"this needs the staff role for {row['unit_code']}")
    nearby = await store.nearby_open(
        conn, category=row["category_code"], latitude=row["latitude"], longitude=row["longitude"],
        radius_m=DUPLICATE_RADIUS_M, since=row["submitted_at"] - dt.timedelta(days=DUPLICATE_DAYS), limit=6, now=now)
    return [summary(r, ctx) for r in nearby if r["id"] != report_id][:5]


async def weekly_figures(conn: asyncpg.Connection, ctx: Ctx, principal: Principal, unit_code: str, *,
                         weeks: int) -> list[dict[str, Any]]:
    """The unit's figures per week over the last `weeks` (empty weeks included), for its staff."""
    if ctx.units.get(unit_code) is None:
        raise NotFound(f"no unit {unit_code!r}")
    if not is_staff_for(ctx, principal, unit_code):
        raise Forbidden(f"this needs the staff role for {unit_code}")
    today = local(utcnow()).date()
    first = today - dt.timedelta(days=today.weekday() + 7 * (weeks - 1))
    since = dt.datetime.combine(first, dt.time(), tzinfo=local(utcnow()).tzinfo)
    rows = {r["week"]: r for r in await store.weekly_unit_figures(conn, unit=unit_code, since=since)}
    figures = []
    for i in range(weeks):
        week = first + dt.timedelta(days=7 * i)
        r = rows.get(week)
        figures.append({"week": week, "received": r["received"] if r else 0, "answered": r["answered"] if r else 0,
                        "answered_on_time": r["answered_on_time"] if r else 0})
    return figures
