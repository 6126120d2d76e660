"""The feedback module as the kernel sees it, and its background jobs."""

from __future__ import annotations

from pathlib import Path

from app.identity.units import units_file_directory
from feedback import api, demo, open311, service
from modules import Job, JobContext, Module, NotificationCategory, ProblemType, Title


async def escalate(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await service.escalate_overdue(conn, units_file_directory(ctx.settings.units_file)) > 0:
            if ctx.stopping is not None and ctx.stopping.is_set():
                return


async def close_expired(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await service.close_expired_answers(conn, units_file_directory(ctx.settings.units_file)) > 0:
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
    problems=[ProblemType("possible-duplicates", 409, Title("Đã có phản ánh tương tự gần đây",
                                                            "Similar reports were sent nearby"))],
    notification_categories=[NotificationCategory("feedback", Title("Phản ánh hiện trường", "Reports"))],
)
