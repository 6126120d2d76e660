"""The operator pages other modules declare (`Module(console=[ConsolePage(...)])`), served inside the console."""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine

from app import web as kernel
from app.errors import DomainError
from console import session
from console.web import TEMPLATES, language, module_pages, posted, problem_text, render, sign_in_first, translator
from modules import ConsolePage, ConsoleView

_ENGINES: dict[tuple[str, str], JinjaTemplateEngine] = {}


def _find(request: Request, staff: session.Staff, module: str, slug: str) -> ConsolePage | None:
    href = f"/console/m/{module}/{slug}"
    return next((page for path, _, page in module_pages(request, staff) if path == href), None)


def _view(request: Request, conn, staff: session.Staff, module: str, page: ConsolePage) -> ConsoleView:
    engine = _ENGINES.get((module, page.slug))
    if engine is None:
        engine = JinjaTemplateEngine(directory=[d for d in (page.templates, TEMPLATES) if d is not None])
        _ENGINES[(module, page.slug)] = engine
    lang = language(request)
    view = ConsoleView(conn=conn, principal=staff.principal, language=lang,
                       query=dict(request.query_params.items()), state=request.app.state, csrf_token=staff.csrf,
                       render=lambda name, **values: "")
    view.render = lambda name, **values: engine.get_template(name).render(
        t=translator(lang), csrf_field=view.csrf_field, action=request.url.path, **values)
    return view


def _refused(request: Request, staff: session.Staff) -> Response:
    t = translator(language(request))
    return render(request, "message.html", staff=staff, status=403, message_kind="error", title=t("Trang", "Page"),
                  message=t("Bạn không có vai trò để mở trang này.", "You hold no role that opens this page."))


async def _show(request: Request, conn, staff: session.Staff, module: str, page: ConsolePage, *, status: int = 200,
                message: str | None = None) -> Response:
    t = translator(language(request))
    try:
        body = await page.render(_view(request, conn, staff, module, page))
    except DomainError as exc:
        status, text = problem_text(request, exc)
        body, message = "", text
    return render(request, "module_page.html", staff=staff, status=status, message=message,
                  message_kind="error" if status >= 400 else "info", title=t(page.title.vi, page.title.en),
                  body=body)


@get("/m/{module:str}/{slug:str}", include_in_schema=False)
async def show(request: Request, conn: kernel.Conn, module: FromPath[str], slug: FromPath[str]) -> Response:
    staff = await session.load(request, conn)
    if staff is None:
        return sign_in_first(request)
    page = _find(request, staff, module, slug)
    if page is None:
        return _refused(request, staff)
    return await _show(request, conn, staff, module, page)


@post("/m/{module:str}/{slug:str}", include_in_schema=False, status_code=200)
async def act(request: Request, conn: kernel.Conn, module: FromPath[str], slug: FromPath[str]) -> Response:
    staff, form, refusal = await posted(request, conn)
    if refusal is not None:
        return refusal
    page = _find(request, staff, module, slug)
    if page is None or page.act is None:
        return _refused(request, staff)
    view = _view(request, conn, staff, module, page)
    try:
        async with conn.transaction():
            outcome = await page.act(view, {k: v for k, v in form.items() if k != "csrf"})
    except DomainError as exc:
        status, text = problem_text(request, exc)
        return await _show(request, conn, staff, module, page, status=status, message=text)
    return await _show(request, conn, staff, module, page, message=outcome)


HANDLERS = [show, act]
