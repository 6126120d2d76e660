"""Composition of the application: the kernel plus every module of the catalog."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Router
from litestar.config.response_cache import ResponseCacheConfig
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.routes import HTTPRoute

from app import db, idempotency, inputs, openapi, redisdb, web
from app.docs import OfflineDocsPlugin
from app.errors import exception_handlers
from app.identity import api as identity_api
from app.identity import stand_in
from app.identity.guards import AuthMiddleware
from app.identity.runtime import identity_runtime
from app.identity.service import require_level
from app.kernel_api import KernelController, module_list_handler
from app.observe import ObserveMiddleware, sample_pool_gauges
from app.settings import Settings, load_settings
from modules import Module
from modules import catalog as module_catalog

log = logging.getLogger("ihanoi.app")

KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"


def migration_sources(modules: Sequence[Module]) -> list[tuple[str, Path | None]]:
    """The kernel first, then each module in catalog order (a module may build on the kernel)."""
    return [("app", KERNEL_MIGRATIONS), *((m.name, m.migrations) for m in modules)]


def resolve_modules(settings: Settings, modules: Sequence[Module] | None = None) -> list[Module]:
    """The modules to run, in home-screen order, with their declarations installed and settings checked."""
    if modules is None:
        loaded = module_catalog.load((*module_catalog.CATALOG, *settings.extra_modules))
    else:
        loaded = list(modules)
    module_catalog.install(loaded)
    for module in loaded:
        if module.settings is not None:
            settings.of(module.name)  # a bad value stops start-up, naming the variable
    return module_catalog.arrange(loaded, settings.modules)


async def before_request(request: Request) -> None:
    """Every route: refuse what no handler could store (app/inputs.py), then make room for an idempotent answer
    (only on the routes that declare Idempotency-Key: `_check_idempotent_routes` marks them)."""
    await inputs.check_request(request)
    if request.route_handler.opt.get(idempotency.MARK):
        idempotency.start_request(request)
    else:
        idempotency.no_request()


def identity_level_guard(module: Module):
    """A level-2 module's routes refuse a level-1 resident, unless a route says `identity_level=1`.

    Anonymous callers pass: a route that needs a caller says so with its own guard.
    """

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if principal is None or principal.kind != "resident":
            return
        require_level(principal, handler.opt.get("identity_level", module.min_identity_level), None)

    return guard


def _check_idempotent_routes(app: Litestar) -> None:
    """A route that declares Idempotency-Key must take `tx`, or its writes would not be covered."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            provider = handler.resolve_dependencies().get("tx")
            if provider is not None and provider.dependency in idempotency.PROVIDERS:
                if "tx" not in handler.parsed_fn_signature.parameters:
                    raise RuntimeError(f"{handler.handler_name} declares Idempotency-Key but takes no `tx`")
                handler.opt[idempotency.MARK] = True


_EXCEPTION_HANDLERS = "ihanoi.exception_handlers"
_GUARDS = "ihanoi.guards"
_STREAMLINED: dict[type, type] = {}


def _streamlined(kind: type) -> type:
    """A subclass of a route handler class (same slots, so an instance can take it on) that reads what
    `_streamline` worked out once from the handler's opt."""
    if kind not in _STREAMLINED:

        async def authorize_connection(self, connection: ASGIConnection) -> None:
            for guard in self.opt[_GUARDS]:
                await guard(connection, self)

        _STREAMLINED[kind] = type(kind.__name__, (kind,), {
            "__slots__": (), "__module__": kind.__module__, "__qualname__": kind.__qualname__,
            "resolve_exception_handlers": lambda self: self.opt[_EXCEPTION_HANDLERS],
            "authorize_connection": authorize_connection,
        })
    return _STREAMLINED[kind]


def _streamline(app: Litestar) -> None:
    """Work Litestar redoes on every request for every route, done once here (every route, present and future).

    - A handler's exception handlers are merged from its layers (handler, controller, router, app) on each
      request (`resolve_exception_handlers` is not memoized in Litestar 2): the merged map is kept.
    - Each guard is given a fresh `copy()` of the handler, so that a guard cannot change it: a shallow copy of
      an object of some 60 attributes, per guard per request. The kernel's and the modules' guards only read
      the handler (`handler.opt`), so they are given the handler itself.
    """
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if type(handler) in _STREAMLINED.values():
                continue
            handler.opt[_EXCEPTION_HANDLERS] = handler.resolve_exception_handlers()
            handler.opt[_GUARDS] = tuple(handler.resolve_guards())
            handler.__class__ = _streamlined(type(handler))


def _allow_every_method(app: Litestar) -> None:
    """OPTIONS lists every method of its path. Litestar makes the OPTIONS answer of each router's part of a path
    and keeps the first one when it merges the routers' routes: `Allow` then named only that router's methods
    (GET /v1/broadcasts and POST /v1/broadcasts come from two routers)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            fn = getattr(handler.fn, "__wrapped__", handler.fn)
            if getattr(fn, "__name__", "") != "options_handler" or not fn.__closure__:
                continue
            for cell in fn.__closure__:
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route


def create_app(
    settings: Settings | None = None,
    *,
    modules: Sequence[Module] | None = None,
    pool: Any = None,
    redis: redisdb.Redis | None = None,
    idp_transport: Any = None,
    read_pool: Any = None,
) -> Litestar:
    """Build the app. `pool`, `read_pool` and `redis` may be given (tests share theirs); else the lifespan owns
    them. The read pool is the replica's (`DATABASE_REPLICA_URL`), for `web.ReadConn`; without one those reads
    go to `pool`."""
    settings = settings or load_settings()
    modules = resolve_modules(settings, modules)
    disabled = set(settings.modules_disabled)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_pool = own_read_pool = own_redis = False
        state = app.state
        try:
            if state.get("pool") is None:
                if not settings.database_url:
                    raise RuntimeError("DATABASE_URL is not set (use `ihanoi dev` for the embedded default)")
                state.pool = await db.create_pool(
                    settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                    timeout=settings.db_timeout,
                )
                own_pool = True
            if state.get("read_pool") is None and settings.database_replica_url:
                # min_size=0: a replica down at start-up must not stop the API (its reads go to the primary)
                state.read_pool = await db.create_pool(
                    settings.database_replica_url, min_size=0, max_size=settings.db_pool_max,
                    timeout=settings.db_timeout, name="ihanoi-replica",
                )
                own_read_pool = True
            if state.get("redis") is None:
                if not settings.redis_url:
                    raise RuntimeError("REDIS_URL is not set (use `ihanoi dev` for the embedded default)")
                state.redis = redisdb.connect(settings.redis_url, prefix=settings.redis_prefix,
                                              cluster=settings.redis_cluster)
                own_redis = True
            log.info("started", extra={"modules": [m.name for m in modules], "env": settings.env})
            sampler = asyncio.create_task(sample_pool_gauges(lambda: state.get("pool")))
            try:
                async with identity_runtime(state, settings, transport=idp_transport) as identity:
                    identity.extra["session_end_hooks"] = [
                        m.on_session_end for m in modules if m.on_session_end and m.name not in disabled
                    ]
                    yield
            finally:
                sampler.cancel()
        finally:
            if own_redis:
                await state.redis.close()
                state.redis = None
            if own_read_pool:
                await state.read_pool.close()
                state.read_pool = None
            if own_pool:
                await state.pool.close()
                state.pool = None
            log.info("stopped")

    module_routers = [
        Router(path="/", route_handlers=[*m.routers, *(m.dev_routers if settings.stand_in_enabled else ())],
               tags=[m.name], guards=[identity_level_guard(m)] if m.min_identity_level > 1 else [])
        for m in modules
        if m.name not in disabled
    ]
    app = Litestar(
        route_handlers=[
            KernelController, module_list_handler(modules, disabled), *identity_api.route_handlers,
            *([stand_in.router] if settings.stand_in_enabled else []), *module_routers,
        ],
        middleware=[AuthMiddleware],
        lifespan=[lifespan],
        dependencies={
            "conn": Provide(db.provide_connection),
            "tx": Provide(db.provide_transaction),
            "read_conn": Provide(db.provide_read_connection),
            **identity_api.dependencies,
            **web.dependencies(),
        },
        before_request=before_request,
        after_request=idempotency.store_response,
        exception_handlers=exception_handlers,
        openapi_config=OpenAPIConfig(
            title="iHaNoi API",
            version=VERSION,
            description="Công dân Thủ đô số: one national-ID login for feedback, transit, health, parking "
            "and notifications.",
            path="/schema",
            render_plugins=[OfflineDocsPlugin()],
            components=openapi.components(),
        ),
        response_cache_config=ResponseCacheConfig(default_expiration=None),
        state=None,
        debug=False,
        logging_config=None,
    )
    _check_idempotent_routes(app)
    _allow_every_method(app)
    _streamline(app)
    openapi.document(app)
    app.state.settings = settings
    app.state.pool = pool
    app.state.read_pool = read_pool
    app.state.redis = redis
    app.state.modules = modules
    app.state.migration_sources = migration_sources(modules)
    app.state.migrations_applied = False
    # Outermost layer, around routing too, so 404/405 answers are logged, counted and carry an id.
    app.asgi_handler = ObserveMiddleware(
        app.asgi_handler,
        quiet_paths=frozenset({"/healthz", "/readyz", "/metrics"}),
    )
    return app


def freeze_startup_objects(app: Litestar) -> None:
    """Take what start-up built out of the cyclic garbage collector's reach, for the life of the process.

    Some 100,000 objects (modules, functions, routes, schemas, settings) live as long as the process; left
    in the oldest generation, every full collection walks them all with the event loop stopped: 60 ms of
    CPU, 100-235 ms on a busy machine, which every request in flight waits out (issue 15). Frozen, a full
    collection walks only what was made since. Reference counting still frees them; only cycles among them
    would stay.
    """
    gc.collect()
    gc.freeze()


def create_app_from_env() -> Litestar:
    """Factory for `uvicorn --factory` worker processes: settings from the environment only."""
    from app.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Once per serving process, after the lifespan has built everything; not in create_app, which tests
    # call many times in one process.
    app.on_startup.append(freeze_startup_objects)
    return app
