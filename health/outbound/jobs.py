"""The outbound worker job (run by `ihanoi worker`, one worker at a time): deliver the due outbox rows."""

from __future__ import annotations

import logging

import httpx

from health import config
from health.crypto import cipher_of
from health.outbound import service, stand_in
from modules import Job, JobContext

log = logging.getLogger("ihanoi.health.outbound")


def endpoint_of(settings) -> str | None:
    """The social-insurance endpoint: the setting, else the local stand-in in dev and test; None in production
    without one (rows wait, pending, until it is set)."""
    own = config.of(settings).social_insurance_url
    if own:
        return own
    return settings.base_url() + stand_in.PREFIX if settings.stand_in_enabled else None


def policy_of(settings) -> service.Policy:
    own = config.of(settings)
    return service.Policy(max_attempts=own.outbox_max_attempts, backoff_seconds=own.outbox_backoff_seconds,
                          backoff_max_seconds=own.outbox_backoff_max_seconds)


async def send_visits(ctx: JobContext) -> None:
    endpoint = endpoint_of(ctx.settings)
    if endpoint is None:
        log.warning("IHANOI_HEALTH_SOCIAL_INSURANCE_URL is not set: finished visits wait in the outbox")
        return
    async with httpx.AsyncClient() as http:
        counts = await service.deliver_due(ctx.pool, cipher_of(ctx.settings), http, endpoint, policy_of(ctx.settings))
    if any(counts.values()):
        log.info("social-insurance outbox", extra=counts)


JOBS = [Job(name="health.outbound.visits", run=send_visits, every_seconds=5)]
