"""Authentication of every request and the guards that routes declare.

`AuthMiddleware` turns a bearer token into a `Principal` on `request.user` (or None without a
token; a bad token is a 401), unless the route's opt says `bearer="deferred"`: it then calls `authenticate`
itself once its own checks are done; `bearer="foreign"` (the dev stand-ins of outside services, such as FCM's,
whose clients send bearer tokens of their own) skips it. Guards then say what a route needs: any signed-in
caller, a resident, a role (optionally for the unit named in the path), an identity level with a maximum auth age.
Ownership of a particular object is the service's job, checked in SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.errors import Forbidden, NotAuthenticated
from app.identity import service
from app.identity.models import Principal
from app.identity.tokens import verify_access_token

Guard = Callable[[ASGIConnection, BaseRouteHandler], Any]


async def _bearer(scope: dict) -> Principal | None:
    """The caller of the request's bearer token; None without one; a bad token is a 401."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() != "bearer":  # other schemes (Basic at the stand-in) are not ours
                return None
            token = token.strip()
            if not token:
                raise NotAuthenticated("the bearer token is empty")
            state = scope["litestar_app"].state
            rt = state.identity
            return await verify_access_token(token, keys=rt.keys, pool=state.pool, issuer=rt.token_issuer,
                                             revoked=rt.revoked)
    return None


class AuthMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        scope["user"] = None
        scope["auth"] = None
        # /metrics takes its own scrape token (app/kernel_api.py), not an identity token; a route whose opt says
        # `bearer="deferred"` checks its own input first and then calls `authenticate` itself.
        handler = scope.get("route_handler")
        own_check = handler is not None and handler.opt.get("bearer") in ("deferred", "foreign")
        if scope["type"] in ("http", "websocket") and scope.get("path") != "/metrics" and not own_check:
            scope["user"] = await _bearer(scope)
        await self.app(scope, receive, send)


async def authenticate(connection: ASGIConnection) -> Principal | None:
    """For a route with `opt={"bearer": "deferred"}`: the caller of the bearer token, verified now (401 for a
    bad one, None without one), so the route can answer what it checks first (Open311: api key, fields). Such a
    route declares no caller guard: guards run before the handler and would see no caller."""
    principal = await _bearer(connection.scope)
    connection.scope["user"] = principal
    return principal


def principal_of(connection: ASGIConnection) -> Principal:
    principal = connection.scope.get("user")
    if principal is None:
        raise NotAuthenticated("sign in first", headers={"WWW-Authenticate": 'Bearer realm="ihanoi"'})
    return principal


# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop per request.
# Each is marked `needs_caller`, so the OpenAPI document shows the bearer scheme on the routes it guards.


def _needs_caller(guard: Guard) -> Guard:
    guard.needs_caller = True  # type: ignore[attr-defined]
    return guard


@_needs_caller
async def authenticated(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    principal_of(connection)


@_needs_caller
async def resident(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if principal_of(connection).kind != "resident":
        raise Forbidden("this is for residents")


def role(name: str, *, unit_param: str | None = None) -> Guard:
    """The caller holds `name`; with `unit_param`, for the unit in that path parameter (or a parent)."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if unit_param is None:
            if not principal.has_role(name):
                raise Forbidden(f"this needs the {name} role")
            return
        unit = connection.path_params.get(unit_param, "")
        if not service.covers_unit(connection.app.state.identity, principal, name, unit):
            raise Forbidden(f"this needs the {name} role for {unit}")

    return _needs_caller(guard)


def level(required: int = 2, *, max_auth_age: int | None = None) -> Guard:
    """Step-up: identity level `required`, signed in at most `max_auth_age` seconds ago."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        service.require_level(principal_of(connection), required, max_auth_age)

    return _needs_caller(guard)


def provide_principal(request: Request) -> Principal:
    return principal_of(request)
