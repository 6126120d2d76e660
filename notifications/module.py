"""The notifications module as the kernel sees it, and its background jobs."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from app.identity import units_file_directory
from app.settings import Settings
from modules import Job, JobContext, LiveChannel, Module, TimePartitions, Title
from notifications import api, broadcasts, config, delivery, fcm_stand_in, service, store, templates
from notifications.sender import FirebaseSender

log = logging.getLogger("ihanoi.notifications")


@lru_cache(maxsize=4)
def _sender(project: str, endpoint: str | None, concurrency: int) -> FirebaseSender:
    return FirebaseSender(project_id=project, endpoint=endpoint, max_in_flight=concurrency)


def sender_for(settings: Settings) -> FirebaseSender:
    own = config.push_settings(settings)
    return _sender(own.fcm_project, config.fcm_endpoint_url(settings), own.fcm_concurrency)


async def expand(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        while await delivery.expand_outbox(conn, ctx.redis) > 0:
            pass


async def fan_out(ctx: JobContext) -> None:
    await broadcasts.fan_out(ctx.pool, units_file_directory(ctx.settings.units_file), stopping=ctx.stopping,
                             redis=ctx.redis)


async def expire(ctx: JobContext) -> None:
    """Pushes still unsent past store.DELIVERY_WINDOW_DAYS fail as EXPIRED: the worker's claim reads no older month."""
    async with ctx.pool.acquire() as conn:
        expired = await store.expire_deliveries(conn)
    if expired:
        log.warning("pushes expired unsent", extra={"deliveries": expired})


async def send(ctx: JobContext) -> None:
    await delivery.send_due(ctx.pool, ctx.redis, sender_for(ctx.settings), stopping=ctx.stopping,
                            lease_seconds=config.push_settings(ctx.settings).push_lease_seconds)


module = Module(
    name="notifications",
    title=Title(vi="Thông báo", en="Notifications"),
    icon="bell",
    routers=[api.NotificationsController, api.BroadcastsController],
    # the local FCM stand-in that dev and test deliver to (IHANOI_FCM_ENDPOINT defaults to it there)
    dev_routers=[fcm_stand_in.create_router(path="/stand-in/fcm")],
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="notifications.expand", run=expand, every_seconds=0.1),
          Job(name="notifications.broadcast", run=fan_out, every_seconds=0.5),
          Job(name="notifications.send", run=send, every_seconds=0.25),
          Job(name="notifications.expire", run=expire, every_seconds=3600)],
    on_session_end=service.on_session_end,
    # a delivery for every push to every device: monthly partitions on the notification's time; past the retention
    # (default none) a month is dropped
    partitions=[TimePartitions("notification_delivery", "created_at", ahead=3,
                               retention_setting="delivery_retention_months", expire="drop")],
    notification_categories=templates.CATEGORIES,
    settings=config.SETTINGS,
    live=[LiveChannel("inbox", "new items of one resident's inbox", keyed=True),
          LiveChannel("broadcasts", "city broadcasts as they start, filtered by each stream's home ward")],
)
