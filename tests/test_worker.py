"""Background jobs: one worker at a time per job, across processes, through a Redis lease."""

from __future__ import annotations

import asyncio

from app.worker import Worker
from modules import Job, JobContext
from tests.fixture_module import module as fixture_module


async def test_two_workers_never_run_the_same_period_twice(settings, redis, pool):
    runs: list[str] = []

    async def record(ctx: JobContext) -> None:
        runs.append("run")
        await asyncio.sleep(0.05)

    job = Job(name="test.record", run=record, every_seconds=30)
    first, second = (Worker(settings, [], pool=pool, redis=redis) for _ in range(2))
    ctx = JobContext(pool=pool, redis=redis, settings=settings, log=None)
    results = await asyncio.gather(first.run_once(job, ctx), second.run_once(job, ctx))
    assert sorted(results) == [False, True]
    assert runs == ["run"]
    # the lease lasts the period: neither runs it again within it
    assert await first.run_once(job, ctx) is False and await second.run_once(job, ctx) is False
    assert 0 < await redis.client.pttl(redis.key("job-lease", "test.record")) <= 30_000


async def test_failed_job_is_logged_and_the_worker_goes_on(settings, redis, pool, caplog):
    async def broken(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    worker = Worker(settings, [], pool=pool, redis=redis)
    ctx = JobContext(pool=pool, redis=redis, settings=settings, log=None)
    assert await worker.run_once(Job(name="test.broken", run=broken, every_seconds=1), ctx) is False
    assert "job failed" in caplog.text


async def test_worker_runs_module_jobs_and_stops_on_request(settings, redis, pool):
    worker = Worker(settings, [fixture_module], pool=pool, redis=redis)
    assert [j.name for j in worker.jobs] == ["kernel.idempotency-purge", "fixture.tick"]
    task = asyncio.create_task(worker.run())
    for _ in range(100):
        if int(await redis.client.get(redis.key("fixture", "ticks")) or 0) >= 2:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert worker.runs["fixture.tick"] >= 2
    # stopping hands the lease back so a restarted worker need not wait out the period
    assert await redis.client.exists(redis.key("job-lease", "fixture.tick")) == 0
