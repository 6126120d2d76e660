"""What every console page shares: rendering with the layout, the signed-in person, CSRF, messages, headers."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from markupsafe import Markup

from app.errors import DomainError, StepUpRequired, language_of
from app.web import CITY_TZ
from console import session
from console.config import console_settings
from console.session import LANG_COOKIE, Staff
from modules.registry import REGISTRY

TEMPLATES = Path(__file__).parent / "templates"
ENGINE = JinjaTemplateEngine(directory=TEMPLATES)
# Roles that open the console: the city's own; a module's console page adds its roles (see `console_roles`).
CITY_ROLES = ("staff", "unit_head", "admin")


def language(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    return chosen if chosen in ("vi", "en") else language_of(request)


def translator(lang: str):
    def t(vi: str, en: str) -> str:
        return en if lang == "en" else vi

    return t


URGENCY_LABELS = {"normal": ("Thông thường", "Normal"), "complex": ("Phức tạp", "Complex"),
                  "urgent": ("Khẩn", "Urgent")}


def when(moment: dt.datetime | None) -> str:
    """A time as the city reads it."""
    return moment.astimezone(CITY_TZ).strftime("%d/%m/%Y %H:%M") if moment else ""


ENGINE.engine.filters["when"] = when


def safe_next(value: str | None) -> str:
    """Only a console page of this site: never an open redirect."""
    if not value or not value.startswith("/console") or value.startswith("//") or urlsplit(value).netloc:
        return "/console/feedback"
    return value


def module_pages(request: Request, staff: Staff | None) -> list[tuple[str, str, Any]]:
    """The module pages the person may open: (href, title, page)."""
    pages = []
    if staff is None:
        return pages
    for module in request.app.state.modules:
        if module.name in request.app.state.settings.modules_disabled:
            continue
        for page in module.console:
            if any(staff.principal.has_role(role) for role in page.roles):
                pages.append((f"/console/m/{module.name}/{page.slug}", page.title, page))
    return pages


def console_roles(request: Request) -> set[str]:
    roles = set(CITY_ROLES)
    for module in request.app.state.modules:
        for page in module.console:
            roles.update(page.roles)
    return roles


def render(request: Request, template: str, *, staff: Staff | None, status: int = 200, message: str | None = None,
           message_kind: str = "info", title: str = "", **values: Any) -> Response:
    lang = language(request)
    t = translator(lang)
    context = {
        "lang": lang, "t": t, "urgency_label": lambda code: t(*URGENCY_LABELS.get(code, (code, code))),
        "staff": staff, "title": title, "message": message, "message_kind": message_kind,
        "csrf_field": Markup('<input type="hidden" name="csrf" value="{}">').format(staff.csrf) if staff else "",
        "path": request.url.path, "here": _here(request), "module_pages": module_pages(request, staff),
        "is_admin": bool(staff and staff.principal.has_role("admin")),
        "roles": REGISTRY.roles, **values,
    }
    html = ENGINE.get_template(template).render(**context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def sign_in_first(request: Request) -> Response:
    """A page needs a signed-in person: to the sign-in page, coming back here afterwards."""
    return Response(b"", status_code=303, headers={"Location": "/console/login?next=" + quote(_here(request))})


def ended(request: Request) -> Response:
    """A form posted without a live session (logged out, idle, or never signed in): nothing was done."""
    t = translator(language(request))
    return render(request, "login.html", staff=None, status=401, message_kind="error", next="/console/feedback",
                  title=t("Đăng nhập", "Sign in"),
                  message=t("Phiên làm việc đã kết thúc (đã đăng xuất hoặc để lâu không dùng). Chưa có gì được thay "
                            "đổi. Vui lòng đăng nhập lại.",
                            "Your session has ended (signed out, or idle too long). Nothing was changed. "
                            "Please sign in again."))


def bad_csrf(request: Request, staff: Staff) -> Response:
    t = translator(language(request))
    return render(request, "message.html", staff=staff, status=403, message_kind="error",
                  title=t("Biểu mẫu không hợp lệ", "Form refused"),
                  message=t("Biểu mẫu này không thuộc phiên làm việc hiện tại (thiếu hoặc sai mã bảo vệ). Chưa có "
                            "gì được thay đổi. Hãy tải lại trang rồi thử lại.",
                            "This form does not belong to your current session (its security token is missing or "
                            "wrong). Nothing was changed. Reload the page and try again."))


def step_up(request: Request, staff: Staff, exc: StepUpRequired) -> Response:
    t = translator(language(request))
    return render(request, "stepup.html", staff=staff, status=403, message_kind="error",
                  title=t("Cần đăng nhập lại", "Sign in again"), back=_referer_or_here(request),
                  message=t("Thao tác này cần định danh mức 2 và đăng nhập gần đây. Chưa có gì được thay đổi.",
                            "This action needs identity level 2 and a recent sign-in. Nothing was changed.")
                  + f" ({exc.detail})")


def _referer_or_here(request: Request) -> str:
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))
    return safe_next(_here(request))


def problem_text(request: Request, exc: DomainError) -> tuple[int, str]:
    """A domain's refusal as a message on the page: its title, its detail and the fields it names."""
    lang = language(request)
    known = REGISTRY.problems.get(exc.slug) or REGISTRY.problems["bad-request"]
    title = known.title.en if lang == "en" else known.title.vi
    text = title + (f": {exc.detail}" if exc.detail else "")
    if exc.errors:
        text += " (" + "; ".join(f"{e.field}: {e.message}" for e in exc.errors) + ")"
    return known.status, text


async def posted(request: Request, conn) -> tuple[Staff | None, dict[str, str], Response | None]:
    """A form post: the person, its fields, or the refusal to show (no session, no or another CSRF token)."""
    staff = await session.load(request, conn)
    if staff is None:
        return None, {}, ended(request)
    form = await request.form()
    fields = {k: (v if isinstance(v, str) else "") for k, v in form.items()}
    if not staff.csrf_ok(fields.get("csrf")):
        return staff, fields, bad_csrf(request, staff)
    return staff, fields, None


def new_key() -> str:
    """A form's own idempotency key: submitting the same rendered form twice makes one thing."""
    return secrets.token_urlsafe(16)


# ---- headers -------------------------------------------------------------------------------------------


def content_security_policy(settings) -> str:
    images = "'self' data:"
    tiles = console_settings(settings).tiles_url
    if tiles:
        parts = urlsplit(tiles)
        images += f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src " + images + "; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class HeadersMiddleware:
    """Every console answer, errors included: a CSP without inline scripts, no framing, and no caching of pages
    with personal data (everything but the static files)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.policy: str | None = None

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.policy is None:
            self.policy = content_security_policy(scope["litestar_app"].state.settings)
        static = scope["path"].startswith("/console/static/")

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += [
                    (b"content-security-policy", self.policy.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"public, max-age=3600" if static else b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
