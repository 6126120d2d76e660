"""Signing in and out of the console: the app's own VNeID flow, in the browser, then the session cookie."""

from __future__ import annotations

import uuid

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, FromQuery

from app import web as kernel
from app.errors import DomainError
from app.identity import service as identity
from app.identity.models import LoginStart
from console import session
from console.session import COOKIE, LANG_COOKIE, LOGIN_COOKIE
from console.web import console_roles, language, problem_text, render, safe_next, translator

LOGIN_PATH = "/console/login"


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@get("/", include_in_schema=False)
async def home() -> Response:
    return Response(b"", status_code=303, headers={"Location": "/console/feedback"})


@get("/login", include_in_schema=False)
async def login_page(request: Request, next: FromQuery[str | None] = None) -> Response:
    t = translator(language(request))
    return render(request, "login.html", staff=None, next=safe_next(next), title=t("Đăng nhập", "Sign in"))


@get("/login/start", include_in_schema=False)
async def login_start(request: Request, next: FromQuery[str | None] = None) -> Response:
    """Start the VNeID sign-in; the login cookie ties its answer to this browser (no login CSRF)."""
    state = request.app.state
    rt = state.identity
    try:
        started = await identity.start_login(
            rt, state.redis, LoginStart(device_name="Bảng điều khiển cán bộ", platform="web",
                                        redirect_uri=rt.settings.base_url() + LOGIN_PATH + "/callback"),
            client_ip=_ip(request))
    except DomainError as exc:
        status, text = problem_text(request, exc)
        return render(request, "login.html", staff=None, status=status, message=text, message_kind="error",
                      next=safe_next(next))
    await state.redis.client.set(state.redis.key("console", "login", started.state), safe_next(next),
                                 ex=started.expires_in)
    return Response(b"", status_code=302, headers={"Location": started.authorization_url}, cookies=[
        Cookie(key=LOGIN_COOKIE, value=started.state, path=LOGIN_PATH, httponly=True, samesite="lax",
               secure=session.secure_cookies(state), max_age=started.expires_in)])


@get("/login/callback", include_in_schema=False)
async def login_callback(request: Request, conn: kernel.Conn) -> Response:
    app_state = request.app.state
    code, state = request.query_params.get("code", ""), request.query_params.get("state", "")
    t = translator(language(request))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not state or state != expected:
        return render(request, "login.html", staff=None, status=400, message_kind="error", next="/console/feedback",
                      message=t("Lượt đăng nhập này không bắt đầu từ trình duyệt này. Hãy đăng nhập lại.",
                                "This sign-in did not start in this browser. Please sign in again."))
    next_page = await app_state.redis.client.getdel(app_state.redis.key("console", "login", state))
    try:
        pair = await identity.complete_login(app_state.identity, conn, app_state.redis, state=state, code=code,
                                             client_ip=_ip(request))
        principal = await session._verify(app_state, pair.access_token)
    except DomainError as exc:
        status, text = problem_text(request, exc)
        return render(request, "login.html", staff=None, status=status, message=text, message_kind="error",
                      next="/console/feedback")
    if not any(principal.has_role(role) for role in console_roles(request)):
        # a resident without a staff role: the session they just opened is ended at once
        await identity.end_session(app_state.identity, conn, principal)
        return render(request, "login.html", staff=None, status=403, message_kind="error", next="/console/feedback",
                      message=t("Tài khoản này không có vai trò cán bộ nên không dùng được bảng điều khiển.",
                                "This account holds no staff role, so it cannot use the console."))
    previous = await session.load(request, conn)
    if previous is not None:  # signing in again (a step-up): the earlier session ends
        await session.end(request, conn, previous)
    names = await identity.names_of(conn, [uuid.UUID(principal.sub)])
    cookie = await session.create(app_state, pair, principal, names.get(uuid.UUID(principal.sub)) or "")
    target = safe_next(next_page.decode() if next_page else None)
    response = Response(b"", status_code=303, headers={"Location": target}, cookies=[
        Cookie(key=COOKIE, value=cookie, path="/console", httponly=True, samesite="lax",
               secure=session.secure_cookies(app_state))])
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@post("/logout", include_in_schema=False, status_code=303)
async def logout(request: Request, conn: kernel.Conn) -> Response:
    from console.web import posted

    staff, _, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    await session.end(request, conn, staff)
    t = translator(language(request))
    response = render(request, "login.html", staff=None, next="/console/feedback", message_kind="info",
                      message=t("Đã đăng xuất.", "Signed out."), title=t("Đăng nhập", "Sign in"))
    response.delete_cookie(COOKIE, path="/console")
    return response


@get("/language/{lang:str}", include_in_schema=False)
async def choose_language(request: Request, lang: FromPath[str], next: FromQuery[str | None] = None) -> Response:
    """Vietnamese first; English on request, remembered in a cookie."""
    chosen = "en" if lang == "en" else "vi"
    return Response(b"", status_code=303, headers={"Location": safe_next(next)}, cookies=[
        Cookie(key=LANG_COOKIE, value=chosen, path="/console", httponly=True, samesite="lax",
               secure=session.secure_cookies(request.app.state), max_age=365 * 24 * 3600)])


HANDLERS = [home, login_page, login_start, login_callback, logout, choose_language]
