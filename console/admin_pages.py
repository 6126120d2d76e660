"""Administration: look a resident up (by personal ID number, never in a URL), grant and revoke roles, the audit."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app import web as kernel
from app.errors import DomainError, Forbidden, InvalidInput, StepUpRequired
from app.identity import service as identity
from app.identity.models import GrantRequest
from app.logs import current_request_id
from console import session
from console.web import language, posted, problem_text, render, sign_in_first, step_up, translator

MAX_AUTH_AGE = 900  # as the API's admin routes: level 2, signed in within 15 minutes


def _check(staff: session.Staff) -> None:
    if not staff.principal.has_role("admin"):
        raise Forbidden("this needs the admin role")
    identity.require_level(staff.principal, 2, MAX_AUTH_AGE)


async def _page(request: Request, conn, staff: session.Staff, *, resident: dict | None = None, status: int = 200,
                message: str | None = None) -> Response:
    t = translator(language(request))
    grants = []
    if resident is not None:
        grants = await identity.list_grants(conn, uuid.UUID(resident["id"]))
    audit = await identity.role_audit(conn, limit=50)
    return render(request, "admin.html", staff=staff, status=status, message=message,
                  message_kind="error" if status >= 400 else "info", title=t("Quản trị vai trò", "Roles"),
                  resident=resident, grants=grants, audit=audit)


async def _guarded(request: Request, conn, staff: session.Staff, work) -> Response:
    try:
        _check(staff)
        return await work()
    except StepUpRequired as exc:
        return step_up(request, staff, exc)
    except DomainError as exc:
        code, text = problem_text(request, exc)
        if code == 403:
            return render(request, "message.html", staff=staff, status=code, message=text, message_kind="error",
                          title=translator(language(request))("Quản trị", "Administration"))
        return await _page(request, conn, staff, status=code, message=text)


@get("/admin", include_in_schema=False)
async def admin_page(request: Request, conn: kernel.Conn) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    return await _guarded(request, conn, staff, lambda: _page(request, conn, staff))


@get("/admin/residents/{resident_id:str}", include_in_schema=False)
async def resident_page(request: Request, conn: kernel.Conn, resident_id: FromPath[str],
                        done: FromQuery[str | None] = None) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    t = translator(language(request))

    async def work() -> Response:
        try:
            rid = uuid.UUID(resident_id)
        except ValueError:
            raise InvalidInput.field("resident_id", "must be a UUID", source="path") from None
        names = await identity.names_of(conn, [rid])
        message = {"grant": t("Đã cấp vai trò.", "Role granted."),
                   "revoke": t("Đã thu hồi vai trò.", "Role revoked.")}.get(done or "")
        return await _page(request, conn, staff, resident={"id": str(rid), "name": names.get(rid) or ""},
                           message=message)

    return await _guarded(request, conn, staff, work)


@post("/admin/lookup", include_in_schema=False, status_code=200)
async def lookup(request: Request, conn: kernel.Conn) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal

    async def work() -> Response:
        found = await identity.lookup_resident(request.app.state.identity, conn, form.get("personal_id", "").strip())
        return await _page(request, conn, staff, resident={"id": found.resident_id, "name": found.full_name or "",
                                                           "masked": found.personal_id})

    return await _guarded(request, conn, staff, work)


@post("/admin/grant", include_in_schema=False, status_code=303)
async def grant(request: Request, conn: kernel.Conn) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal

    async def work() -> Response:
        try:
            rid = uuid.UUID(form.get("resident_id", ""))
            body = msgspec.convert({"resident_id": str(rid), "role": form.get("role", ""),
                                    "scope": form.get("scope", "").strip()}, GrantRequest)
        except (ValueError, msgspec.ValidationError) as exc:
            raise InvalidInput.field("role", str(exc)) from None
        await identity.grant_role(request.app.state.identity, conn, actor=identity.actor_of(staff.principal),
                                  resident_id=rid, request=body, request_id=current_request_id())
        return Response(b"", status_code=303, headers={"Location": f"/console/admin/residents/{rid}?done=grant"})

    return await _guarded(request, conn, staff, work)


@post("/admin/revoke", include_in_schema=False, status_code=303)
async def revoke(request: Request, conn: kernel.Conn) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal

    async def work() -> Response:
        try:
            grant_id, rid = int(form.get("grant_id", "")), uuid.UUID(form.get("resident_id", ""))
        except ValueError:
            raise InvalidInput.field("grant_id", "reload the page") from None
        await identity.revoke_role(conn, actor=identity.actor_of(staff.principal), grant_id=grant_id,
                                   request_id=current_request_id())
        return Response(b"", status_code=303, headers={"Location": f"/console/admin/residents/{rid}?done=revoke"})

    return await _guarded(request, conn, staff, work)


HANDLERS = [admin_page, resident_page, lookup, grant, revoke]
