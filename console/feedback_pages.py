"""The feedback pages: a unit's queue, a report with every step its staff may take, the unit's figures."""

from __future__ import annotations

import math
import uuid
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app import web as kernel
from app.errors import DomainError, Forbidden, InvalidInput, StepUpRequired
from app.identity import service as identity
from console import session
from console.chart import weekly_chart
from console.config import console_settings
from console.web import language, posted, problem_text, render, sign_in_first, step_up, translator
from feedback import service, views, workflow
from feedback.context import Ctx, is_staff_for
from feedback.models import AnswerCreate, Reject, Transfer

STAFF_ACTIONS = ("receive", "assign", "start", "answer", "reject", "transfer", "merge", "note")
FILTERS = ("unit", "status", "category", "overdue", "ward", "q", "assignee", "order", "cursor")


def units_of(staff: session.Staff) -> list[str]:
    """The units whose queues the person works: those of their staff and unit-head roles."""
    p = staff.principal
    return sorted({*p.scopes_of("staff"), *p.scopes_of("unit_head")} - {""})


def _ctx(request: Request) -> Ctx:
    return Ctx(units=request.app.state.identity.units, language=language(request))


def allowed_actions(status: str) -> list[str]:
    """What staff may do to a report in this status: the workflow's table, nothing else."""
    return [a for a in STAFF_ACTIONS if any(s.from_status == status and s.action == a and s.actor == workflow.STAFF
                                            for s in workflow.TRANSITIONS)]


@get("/feedback", include_in_schema=False)
async def queue(request: Request, conn: kernel.Conn) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    t = translator(language(request))
    try:
        identity.require_level(staff.principal, 2, None)  # as the API: staff work needs a level-2 sign-in
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    units = units_of(staff)
    if not units:
        return render(request, "message.html", staff=staff, status=403, message_kind="error",
                      title=t("Phản ánh", "Feedback"),
                      message=t("Bạn không là cán bộ của đơn vị nào.", "You are not staff of any unit."))
    query = {k: request.query_params.get(k, "") for k in FILTERS}
    unit = query["unit"] or units[0]
    ctx = _ctx(request)
    status_code, error, page, figures = 200, None, None, None
    try:
        page = await views.unit_queue(
            conn, ctx, staff.principal, unit, status=query["status"] or None, category=query["category"] or None,
            overdue={"true": True, "false": False}.get(query["overdue"]), ward=query["ward"] or None,
            q=query["q"] or None, assignee=query["assignee"] or None,
            order=query["order"] if query["order"] in ("deadline", "newest") else "deadline",
            cursor=query["cursor"] or None, limit=50)
        stats = await views.stats(conn, ctx, days=90, unit=unit, redis=request.app.state.redis)
        figures = stats.units[0] if stats.units else None
    except DomainError as exc:
        status_code, error = problem_text(request, exc)
    categories = await views.list_categories(conn, ctx)
    next_query = None
    if page and page.next_cursor:
        next_query = urlencode({k: v for k, v in {**query, "unit": unit, "cursor": page.next_cursor}.items() if v})
    return render(request, "queue.html", staff=staff, status=status_code, message=error, message_kind="error",
                  title=t("Hàng đợi phản ánh", "Feedback queue"), units=[ctx.unit(u) for u in units], unit=unit,
                  query=query, page=page, figures=figures, categories=categories, statuses=workflow.STATUS_LABELS,
                  next_query=next_query, partial=request.headers.get("hx-request") == "true")


async def _report_page(request: Request, conn, staff: session.Staff, report_id: int, *, status: int = 200,
                       message: str | None = None, message_kind: str = "info") -> Response:
    t = translator(language(request))
    ctx = _ctx(request)
    try:
        identity.require_level(staff.principal, 2, None)
        report = await views.get_report(conn, ctx, staff.principal, report_id)
        if not is_staff_for(ctx, staff.principal, report.unit.code):
            raise Forbidden(f"report {report_id} belongs to {report.unit.name}; only its staff may open it here")
        timeline = await views.timeline(conn, ctx, staff.principal, report_id)
        duplicates = await views.possible_duplicates(conn, ctx, staff.principal, report_id)
        templates = await views.list_templates(conn, ctx, staff.principal, report.unit.code)
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    except DomainError as exc:
        code, text = problem_text(request, exc)
        return render(request, "message.html", staff=staff, status=code, message=text, message_kind="error",
                      title=t("Không mở được phản ánh", "Cannot open this report"))
    clerks = await identity.holders_of(conn, "staff", [report.unit.code])
    names = await identity.names_of(conn, clerks) if clerks else {}
    rt = request.app.state.identity
    transfer_units = [u for u in rt.units if u.kind != "city" and u.code != report.unit.code]
    return render(
        request, "report.html", staff=staff, status=status, message=message, message_kind=message_kind,
        title=t("Phản ánh", "Report") + f" #{report.id}", report=report, timeline=timeline, duplicates=duplicates,
        templates=templates, clerks=[(str(c), names.get(c) or str(c)) for c in clerks],
        transfer_units=transfer_units, actions=allowed_actions(report.status),
        version=service.version_of(report.status, report.updated_at), map=map_tile(request, report),
        statuses=workflow.STATUS_LABELS)


@get("/feedback/reports/{report_id:int}", include_in_schema=False)
async def report_page(request: Request, conn: kernel.Conn, report_id: FromPath[int],
                      done: FromQuery[str | None] = None) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    t = translator(language(request))
    message = None
    if done in STAFF_ACTIONS:
        message = t("Đã thực hiện: ", "Done: ") + {
            "receive": t("tiếp nhận", "received"), "assign": t("giao cán bộ", "assigned"),
            "start": t("bắt đầu xử lý", "handling started"), "answer": t("đã trả lời người dân", "answered"),
            "reject": t("từ chối tiếp nhận", "rejected"), "transfer": t("chuyển đơn vị", "transferred"),
            "merge": t("gộp vào phản ánh trùng", "merged"), "note": t("thêm ghi chú nội bộ", "note added")}[done]
    return await _report_page(request, conn, staff, report_id, message=message)


class StaleForm(Exception):
    pass


@post("/feedback/reports/{report_id:int}/{action:str}", include_in_schema=False)
async def act(request: Request, conn: kernel.Conn, report_id: FromPath[int], action: FromPath[str]) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    t = translator(language(request))
    if action not in STAFF_ACTIONS:
        return render(request, "message.html", staff=staff, status=404, message_kind="error",
                      title=t("Không có thao tác này", "No such action"), message=action)
    ctx = _ctx(request)
    p = staff.principal
    try:
        identity.require_level(p, 2, None)
        async with conn.transaction():  # a refusal anywhere rolls every write of the step back
            if await service.lock_version(conn, ctx, p, report_id) != form.get("version"):
                raise StaleForm
            await _step(request, conn, ctx, p, report_id, action, form)
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    except StaleForm:
        return await _report_page(
            request, conn, staff, report_id, status=409, message_kind="error",
            message=t("Phản ánh đã thay đổi kể từ khi bạn mở trang này (có người khác vừa xử lý). Chưa có gì được "
                      "thay đổi; hãy xem lại trạng thái hiện tại bên dưới.",
                      "This report changed since you opened this page (someone else acted on it). Nothing was "
                      "changed; check its current state below."))
    except msgspec.ValidationError as exc:
        return await _report_page(request, conn, staff, report_id, status=400, message_kind="error",
                                  message=t("Dữ liệu không hợp lệ: ", "Invalid input: ") + str(exc))
    except DomainError as exc:
        code, text = problem_text(request, exc)
        if code == 404 or (code == 403 and "belongs to" in (exc.detail or "")):
            return render(request, "message.html", staff=staff, status=code, message=text, message_kind="error",
                          title=t("Không mở được phản ánh", "Cannot open this report"))
        return await _report_page(request, conn, staff, report_id, status=code, message=text, message_kind="error")
    return Response(b"", status_code=303, headers={"Location": f"/console/feedback/reports/{report_id}?done={action}"})


async def _step(request: Request, conn, ctx: Ctx, p, report_id: int, action: str, form: dict[str, str]) -> None:
    values = {"details": form["details"]} if form.get("details") else {}
    if action == "receive":
        urgency = form.get("urgency") or None
        if urgency not in (None, "normal", "complex", "urgent"):
            raise InvalidInput.field("urgency", "normal, complex or urgent")
        await service.receive(conn, ctx, p, report_id, urgency)
    elif action == "assign":
        await service.assign(request.app.state.identity, conn, ctx, p, report_id, form.get("assignee_id", ""))
    elif action == "start":
        await service.start(conn, ctx, p, report_id)
    elif action == "answer":
        body = msgspec.convert({"text": form.get("text", ""), "template": form.get("template") or None,
                                "values": values}, AnswerCreate)
        await service.answer(conn, ctx, p, report_id, body)
    elif action == "reject":
        body = msgspec.convert({"reason": form.get("reason", ""), "template": form.get("template") or None,
                                "values": values}, Reject)
        await service.reject(conn, ctx, p, report_id, body)
    elif action == "transfer":
        await service.transfer(conn, ctx, p, report_id,
                               msgspec.convert({"unit": form.get("unit", ""), "reason": form.get("reason", "")},
                                               Transfer))
    elif action == "merge":
        try:
            into = int(form.get("into", ""))
        except ValueError:
            raise InvalidInput.field("into", "the number of the report this one duplicates") from None
        await service.merge(conn, ctx, p, report_id, into)
    elif action == "note":
        text = form.get("text", "").strip()
        if not text:
            raise InvalidInput.field("text", "write the note")
        await service.add_note(conn, ctx, p, report_id, text[:4000])


@get("/feedback/photos/{photo_id:str}", include_in_schema=False)
async def photo(request: Request, conn: kernel.Conn, photo_id: FromPath[str],
                size: FromQuery[str] = "full") -> Response:
    """A report's photo for its staff (the API's photos need a bearer token, which the browser never holds)."""
    staff = await session.load(request, conn)
    if staff is None:
        return Response(b"", status_code=401)
    try:
        content, media_type, _ = await views.photo_content(conn, _ctx(request), staff.principal, uuid.UUID(photo_id),
                                                           thumbnail=size == "thumbnail")
    except (ValueError, DomainError):
        return Response(b"", status_code=404)
    return Response(content, media_type=media_type)


@get("/feedback/figures", include_in_schema=False)
async def figures(request: Request, conn: kernel.Conn, unit: FromQuery[str | None] = None,
                  weeks: FromQuery[int] = 12) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    t = translator(language(request))
    units = units_of(staff)
    if not units:
        return render(request, "message.html", staff=staff, status=403, message_kind="error",
                      title=t("Số liệu", "Figures"),
                      message=t("Bạn không là cán bộ của đơn vị nào.", "You are not staff of any unit."))
    unit = unit or units[0]
    weeks = min(max(weeks, 4), 52)
    ctx = _ctx(request)
    try:
        rows = await views.weekly_figures(conn, ctx, staff.principal, unit, weeks=weeks)
    except DomainError as exc:
        code, text = problem_text(request, exc)
        return render(request, "message.html", staff=staff, status=code, message=text, message_kind="error",
                      title=t("Số liệu", "Figures"))
    return render(request, "figures.html", staff=staff, title=t("Số liệu theo tuần", "Weekly figures"),
                  units=[ctx.unit(u) for u in units], unit=unit, weeks=weeks, rows=rows,
                  chart=weekly_chart(rows, t))


def map_tile(request: Request, report) -> dict | None:
    """The map tile holding the report's place (zoom 16) and where on it the place is, if tiles are configured."""
    url = console_settings(request.app.state.settings).tiles_url
    if not url:
        return None
    zoom = 16
    n = 2 ** zoom
    x = (report.longitude + 180.0) / 360.0 * n
    lat = math.radians(report.latitude)
    y = (1.0 - math.asinh(math.tan(lat)) / math.pi) / 2.0 * n
    return {"src": url.format(z=zoom, x=int(x), y=int(y)), "px": round((x - int(x)) * 256),
            "py": round((y - int(y)) * 256)}


HANDLERS = [queue, report_page, act, photo, figures]
