"""The kernel's own endpoints: liveness, readiness, the home-screen module list and metrics."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from typing import Literal

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.datastructures import CacheControlHeader, State
from litestar.openapi.datastructures import ResponseSpec

from app import migrate
from app.errors import NotFound
from app.observe import render_metrics, update_pool_gauges

log = logging.getLogger("ihanoi.health")


class Alive(msgspec.Struct):
    status: Literal["alive"] = "alive"


class Readiness(msgspec.Struct):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class ModuleTitle(msgspec.Struct):
    vi: str
    en: str


class ModuleEntry(msgspec.Struct):
    name: str
    title: ModuleTitle
    icon: str
    min_identity_level: int
    enabled: bool


class ModuleList(msgspec.Struct):
    modules: list[ModuleEntry]


async def _check_postgres(state: State) -> None:
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn:
        await conn.fetchval("SELECT 1")


async def _check_redis(state: State) -> None:
    await state.redis.ping()


async def _check_migrations(state: State) -> None:
    if state.migrations_applied:  # once applied they stay applied for this process's code
        return
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn:
        todo = await migrate.pending(conn, state.migration_sources)
    if todo:
        raise RuntimeError(f"{len(todo)} pending, first {todo[0].label}")
    state.migrations_applied = True


async def _run_check(name: str, check, state: State, timeout: float) -> tuple[str, str]:
    try:
        result = await asyncio.wait_for(check(state), timeout)
    except Exception as exc:  # a readiness probe reports, it never raises
        reason = f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__
        return name, f"failing: {reason}"
    return name, "ok" if result is not False else "failing"


def _may_scrape(request: Request, settings) -> bool:
    if settings.env in ("dev", "test"):
        return True
    if request.client is not None and ipaddress.ip_address(request.client.host).is_loopback:
        return True
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return bool(settings.metrics_token) and hmac.compare_digest(given.encode(), settings.metrics_token.encode())


class KernelController(Controller):
    tags = ["Kernel"]

    @get("/healthz", operation_id="Alive", summary="Liveness: the process answers", cache=False)
    async def healthz(self) -> Alive:
        return Alive()

    @get("/readyz", operation_id="Ready", summary="Readiness: PostgreSQL, Redis and migrations", cache=False,
         responses={503: ResponseSpec(data_container=Readiness, description="Not ready: a check is failing")})
    async def readyz(self, state: State) -> Response[Readiness]:
        checks = {"postgres": _check_postgres, "redis": _check_redis, "migrations": _check_migrations}
        for module in state.modules:
            for name, check in module.readiness_checks.items():
                checks[f"{module.name}.{name}"] = check
        timeout = min(state.settings.db_timeout, 3.0)
        results = dict(await asyncio.gather(*(_run_check(n, c, state, timeout) for n, c in checks.items())))
        ready = all(v == "ok" for v in results.values())
        if not ready:
            log.warning("not ready", extra={"checks": results})
        return Response(
            Readiness(status="ready" if ready else "unavailable", checks=results),
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    @get("/metrics", operation_id="Metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self, state: State, request: Request) -> Response[bytes]:
        if not _may_scrape(request, state.settings):
            raise NotFound("no such page")  # outside dev, /metrics is not advertised to the public
        update_pool_gauges(state.pool)
        body, content_type = render_metrics()
        # Litestar adds the charset itself
        return Response(body, media_type=content_type.replace("; charset=utf-8", ""))


def module_list_handler(modules, disabled):
    """GET /v1/modules with its body encoded once: the list only changes with a deployment."""
    body = msgspec.json.encode(build_module_list(modules, disabled))

    @get("/v1/modules", operation_id="ListModules", summary="Modules for the app's home screen, in order",
         tags=["Kernel"], cache_control=CacheControlHeader(max_age=60, public=True))
    async def list_modules() -> Response[ModuleList]:
        return Response(body, media_type=MediaType.JSON)

    return list_modules


def build_module_list(modules, disabled) -> ModuleList:
    return ModuleList(
        modules=[
            ModuleEntry(
                name=m.name,
                title=ModuleTitle(vi=m.title.vi, en=m.title.en),
                icon=m.icon,
                min_identity_level=m.min_identity_level,
                enabled=m.name not in disabled,
            )
            for m in modules
            if m.home_screen
        ]
    )
