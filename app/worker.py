"""`ihanoi worker`: runs every module's background jobs until SIGTERM.

Several workers may run at once (production runs at least two for safety): each run of a job takes a
lease in Redis first, so one job runs on one worker at a time, and a lease whose worker died expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence

from redis.exceptions import RedisError

from app import db, idempotency, partitions, redisdb
from app.settings import Settings
from modules import Job, JobContext, Module

log = logging.getLogger("ihanoi.worker")


async def _purge_idempotency(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        await idempotency.purge(conn)


# The kernel's own housekeeping, run like any module's job.
KERNEL_JOBS = (Job(name="kernel.idempotency-purge", run=_purge_idempotency, every_seconds=600),)

# Release the lease only if it is still ours (it may have expired and been taken by another worker).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Worker:
    def __init__(self, settings: Settings, modules: Sequence[Module], *, pool=None, redis=None) -> None:
        self.settings = settings
        enabled = [m for m in modules if m.name not in settings.modules_disabled]
        # the partitions job only when an enabled module declares partitioned tables
        partitioned = partitions.declared(enabled)
        kernel = [*KERNEL_JOBS, *([Job(name="kernel.partitions", run=partitions.job_for(partitioned),
                                       every_seconds=3600)] if partitioned else [])]
        self.jobs: list[Job] = [*kernel, *(job for m in enabled for job in m.jobs)]
        self.pool = pool
        self.redis = redis
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = asyncio.Event()
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}
        self.leases: dict[str, str] = {}  # Redis key -> our token, for the leases we hold

    def stop(self) -> None:
        self.stopping.set()

    async def run_once(self, job: Job, ctx: JobContext) -> bool:
        """Run the job if no other worker holds its lease; True when it ran here."""
        key = self.redis.key("job-lease", job.name)
        lease_ms = max(int(job.every_seconds * 1000), 50)
        token = f"{self.identity}:{time.monotonic_ns()}"
        try:
            # durable: a Redis primary failing over must not hand the same lease to a second worker
            taken = await self.redis.durable(key, "SET", key, token, "NX", "PX", lease_ms)
        except (RedisError, OSError) as exc:  # Redis away for a moment (a failover): skip this run, try next period
            log.warning("job lease not taken: redis unreachable", extra={"job": job.name, "error": type(exc).__name__})
            return False
        if not taken:
            return False
        # Kept until the period ends so no other worker runs it again at once; handed back on stop.
        self.leases[key] = token
        try:
            await job.run(ctx)
            self.runs[job.name] = self.runs.get(job.name, 0) + 1
            return True
        except Exception:
            log.exception("job failed", extra={"job": job.name})
            return False

    async def release_leases(self) -> None:
        """Hand back the leases we hold, so a restarted worker need not wait out the period."""
        for key, token in self.leases.items():
            try:
                await self.redis.client.eval(_RELEASE, 1, key, token)
            except (RedisError, OSError):  # it expires at the end of its period anyway
                log.warning("job lease not handed back: redis unreachable", extra={"lease": key})
        self.leases.clear()

    async def _loop(self, job: Job, ctx: JobContext) -> None:
        while not self.stopping.is_set():
            await self.run_once(job, ctx)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=job.every_seconds)
            except TimeoutError:
                pass

    async def run(self) -> None:
        own_pool = own_redis = False
        if self.pool is None:
            self.pool = await db.create_pool(self.settings.database_url, min_size=1,
                                             max_size=self.settings.db_pool_max, timeout=self.settings.db_timeout)
            own_pool = True
        if self.redis is None:
            self.redis = redisdb.connect(self.settings.redis_url, prefix=self.settings.redis_prefix,
                                         cluster=self.settings.redis_cluster)
            own_redis = True
        ctx = JobContext(pool=self.pool, redis=self.redis, settings=self.settings, log=log, stopping=self.stopping)
        log.info("worker started", extra={"jobs": [j.name for j in self.jobs], "worker": self.identity})
        try:
            if self.jobs:
                await asyncio.gather(*(self._loop(job, ctx) for job in self.jobs))
            else:
                await self.stopping.wait()
        finally:
            await self.release_leases()
            if own_redis:
                await self.redis.close()
            if own_pool:
                await self.pool.close()
            log.info("worker stopped", extra={"runs": self.runs})


def install_signal_handlers(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
