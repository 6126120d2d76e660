"""Parking's background jobs (run by `ihanoi worker`)."""

from __future__ import annotations

import logging

from modules import Job, JobContext
from parking import config, service

log = logging.getLogger("ihanoi.parking")


async def settle_debts(ctx: JobContext) -> None:
    counts = await service.settle_debts(ctx.pool)
    if counts["settled"]:
        log.info("parking debts settled", extra=counts)


async def remind(ctx: JobContext) -> None:
    await service.remind(ctx.pool, config.of(ctx.settings))


async def expire(ctx: JobContext) -> None:
    await service.expire(ctx.pool)


JOBS = [Job(name="parking.settle_debts", run=settle_debts, every_seconds=60),
        Job(name="parking.remind", run=remind, every_seconds=30),
        Job(name="parking.expire", run=expire, every_seconds=60)]
