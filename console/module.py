"""The console as the kernel sees it: one router under /console, its settings, no tables of its own."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.static_files import create_static_files_router

from console import admin_pages, broadcast_pages, feedback_pages, module_pages, signin
from console.config import SETTINGS
from console.web import HeadersMiddleware
from modules import Module, Title

STATIC = Path(__file__).parent / "static"

router = Router(
    path="/console",
    route_handlers=[
        *signin.HANDLERS, *feedback_pages.HANDLERS, *broadcast_pages.HANDLERS, *admin_pages.HANDLERS,
        *module_pages.HANDLERS,
        create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False),
    ],
    middleware=[HeadersMiddleware],
    include_in_schema=False,
)

module = Module(
    name="console",
    title=Title(vi="Bảng điều khiển cán bộ", en="Staff console"),
    icon="desktop",
    routers=[router],
    settings=SETTINGS,
    home_screen=False,  # staff work here in a browser; it is no tile on the residents' home screen
)
