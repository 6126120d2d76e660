"""Broadcast pages: compose (with a preview), approve as a second admin, follow the delivery counts live."""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app import web as kernel
from app.errors import DomainError, InvalidInput, StepUpRequired
from app.identity import service as identity
from console import session
from console.web import language, new_key, posted, problem_text, render, sign_in_first, step_up, translator
from notifications import broadcasts
from notifications.models import BroadcastCreate

# writing to thousands of phones: as the API, level 2 and signed in within 15 minutes
MAX_AUTH_AGE = 900
TEXT_FIELDS = ("title_vi", "body_vi", "title_en", "body_en")


def targets(request: Request, staff: session.Staff) -> list:
    """The areas the person may write to: the city (admins) and the units they are staff of, with those inside."""
    units = request.app.state.identity.units
    p = staff.principal
    return [u for u in units if broadcasts.may_broadcast(request.app.state.identity, p, u.code)]


async def _list_page(request: Request, conn, staff: session.Staff, *, status: int = 200, message: str | None = None,
                     form: dict[str, str] | None = None) -> Response:
    t = translator(language(request))
    mine = await broadcasts.list_broadcasts(conn, staff.principal)
    waiting = await broadcasts.awaiting_approval(conn, staff.principal)
    return render(request, "broadcasts.html", staff=staff, status=status, message=message,
                  message_kind="error" if status >= 400 else "info", title=t("Thông báo chung", "Broadcasts"),
                  mine=mine, waiting=waiting, targets=targets(request, staff), form=form or {}, key=new_key())


@get("/broadcasts", include_in_schema=False)
async def broadcasts_page(request: Request, conn: kernel.Conn) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    return await _list_page(request, conn, staff)


def _body(form: dict[str, str]) -> BroadcastCreate:
    scheduled = None
    if form.get("scheduled_at"):
        try:  # the form's local time is the city's
            scheduled = dt.datetime.fromisoformat(form["scheduled_at"]).replace(tzinfo=kernel.CITY_TZ)
        except ValueError:
            raise InvalidInput.field("scheduled_at", "a date and time, e.g. 2026-12-01T08:00") from None
    raw = {k: form.get(k, "").strip() for k in TEXT_FIELDS}
    return msgspec.convert({"target_unit": form.get("target_unit", ""), "urgency": form.get("urgency") or "normal",
                            **raw, "scheduled_at": scheduled}, BroadcastCreate)


@post("/broadcasts/preview", include_in_schema=False, status_code=200)
async def preview(request: Request, conn: kernel.Conn) -> Response:
    """The message as phones will show it, in both languages (an htmx fragment; nothing is stored)."""
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    return render(request, "broadcast_preview.html", staff=staff, form=form)


@post("/broadcasts", include_in_schema=False, status_code=303)
async def create(request: Request, conn: kernel.Conn) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    t = translator(language(request))
    try:
        identity.require_level(staff.principal, 2, MAX_AUTH_AGE)
        body = _body(form)
        key = form.get("key", "")
        if not 8 <= len(key) <= 64:
            raise InvalidInput.field("key", "reload the form")
        async with conn.transaction():
            made, _ = await broadcasts.create_broadcast(conn, request.app.state.identity, staff.principal, body,
                                                        "console:" + key)
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    except msgspec.ValidationError as exc:
        return await _list_page(request, conn, staff, status=400, form=form,
                                message=t("Dữ liệu không hợp lệ: ", "Invalid input: ") + str(exc))
    except DomainError as exc:
        code, text = problem_text(request, exc)
        return await _list_page(request, conn, staff, status=code, message=text, form=form)
    return Response(b"", status_code=303, headers={"Location": f"/console/broadcasts/{made.id}"})


async def _detail(request: Request, conn, staff: session.Staff, broadcast_id: int, *, status: int = 200,
                  message: str | None = None) -> Response:
    t = translator(language(request))
    rt = request.app.state.identity
    try:
        broadcast = await broadcasts.get_broadcast(conn, rt, staff.principal, broadcast_id)
        texts = await broadcasts.texts_of(conn, rt, staff.principal, broadcast_id)
    except DomainError as exc:
        code, text = problem_text(request, exc)
        return render(request, "message.html", staff=staff, status=code, message=text, message_kind="error",
                      title=t("Thông báo chung", "Broadcast"))
    template = "broadcast_counts.html" if request.headers.get("hx-request") == "true" else "broadcast.html"
    # the approve button is for another admin than the author (who would only be refused)
    authored = any(b.id == broadcast_id for b in await broadcasts.list_broadcasts(conn, staff.principal))
    return render(request, template, staff=staff, status=status, message=message,
                  message_kind="error" if status >= 400 else "info", title=t("Thông báo chung", "Broadcast")
                  + f" #{broadcast.id}", b=broadcast, texts=texts,
                  may_approve=(broadcast.status == "awaiting_approval" and staff.principal.has_role("admin")
                               and not authored))


@get("/broadcasts/{broadcast_id:int}", include_in_schema=False)
async def detail(request: Request, conn: kernel.Conn, broadcast_id: FromPath[int],
                 done: FromQuery[str | None] = None) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    t = translator(language(request))
    message = {"approve": t("Đã phê duyệt.", "Approved."), "cancel": t("Đã huỷ.", "Cancelled.")}.get(done or "")
    return await _detail(request, conn, staff, broadcast_id, message=message)


@post("/broadcasts/{broadcast_id:int}/{action:str}", include_in_schema=False, status_code=303)
async def act(request: Request, conn: kernel.Conn, broadcast_id: FromPath[int], action: FromPath[str]) -> Response:
    staff, _, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    if action not in ("approve", "cancel"):
        return Response(b"", status_code=404)
    rt = request.app.state.identity
    try:
        identity.require_level(staff.principal, 2, MAX_AUTH_AGE)
        async with conn.transaction():
            if action == "approve":
                await broadcasts.approve_broadcast(conn, rt, staff.principal, broadcast_id)
            else:
                await broadcasts.cancel_broadcast(conn, rt, staff.principal, broadcast_id)
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    except DomainError as exc:
        code, text = problem_text(request, exc)
        return await _detail(request, conn, staff, broadcast_id, status=code, message=text)
    return Response(b"", status_code=303, headers={"Location": f"/console/broadcasts/{broadcast_id}?done={action}"})


HANDLERS = [broadcasts_page, preview, create, detail, act]
