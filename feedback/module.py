"""The feedback module as the kernel sees it, and its background jobs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from feedback import api, demo, open311, service
from modules import Job, JobContext, Module, Title


@lru_cache(maxsize=2)
def _units(path: str | None):
    from app.identity.units import load_units

    return load_units(Path(path) if path else None)


async def escalate(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await service.escalate_overdue(conn, _units(ctx.settings.units_file)) > 0:
            if ctx.stopping is not None and ctx.stopping.is_set():
                return


async def close_expired(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await service.close_expired_answers(conn, _units(ctx.settings.units_file)) > 0:
            if ctx.stopping is not None and ctx.stopping.is_set():
                return


async def purge(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        await service.purge_photos(conn)


module = Module(
    name="feedback",
    title=Title(vi="Phản ánh hiện trường", en="Report a problem"),
    icon="megaphone",
    routers=[*api.ROUTERS, *open311.ROUTERS],
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="feedback.escalate", run=escalate, every_seconds=60),
          Job(name="feedback.close-expired", run=close_expired, every_seconds=300),
          Job(name="feedback.purge-photos", run=purge, every_seconds=3600)],
    seed=demo.seed,
)
