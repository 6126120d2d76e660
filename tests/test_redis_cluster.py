"""Redis Cluster: a primary killed in the middle of a run loses no revocation and no job lease.

Each test here starts a cluster of its own (3 primaries, 3 replicas of Debian's redis-server, tests/redis_cluster.py)
because it kills one of its nodes. The rest of the Redis-touching tests run on a shared cluster with
`pytest --redis-cluster -m redis` (.ci/run).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from app import redisdb
from app.identity.tokens import RevokedSessions
from app.worker import Worker
from modules import Job, JobContext
from tests import conftest, redis_cluster

pytestmark = pytest.mark.redis


async def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def own_cluster():
    if not redis_cluster.available():
        if conftest.REDIS_CLUSTER:
            pytest.fail("--redis-cluster needs Debian's redis-server and redis-cli")
        pytest.skip("Debian's redis-server is not installed")
    nodes = redis_cluster.RedisClusterNodes().start()
    try:
        yield nodes
    finally:
        nodes.stop()


async def test_a_primary_killed_mid_run_loses_no_revocation_and_no_lease(own_cluster, settings):
    nodes = own_cluster
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    on_a = redisdb.connect(nodes.url, prefix=prefix, cluster=True)
    on_b = redisdb.connect(nodes.url, prefix=prefix, cluster=True)
    for client in (on_a, on_b):  # both know the slot map before the seed node may be the one killed
        await client.client.initialize()
    revoked_a = RevokedSessions(on_a, None, keep_for=3600)
    victim = nodes.primary_of_slot(on_a.client.keyslot(revoked_a.key))
    its_replica = nodes.replica_of(victim)

    runs: list[str] = []

    async def record(ctx: JobContext) -> None:
        runs.append(ctx.redis.prefix)

    # enough jobs that several leases live on every primary, the victim's among them
    jobs = [Job(name=f"test.job-{i}", run=record, every_seconds=600) for i in range(30)]
    on_victim = [j for j in jobs if nodes.primary_of_slot(on_a.client.keyslot(on_a.key("job-lease", j.name))) == victim]
    assert on_victim, "no lease on the primary to be killed"
    worker_a, worker_b = Worker(settings, [], redis=on_a), Worker(settings, [], redis=on_b)
    worker_b.identity = "another-host:1"
    ctx_a = JobContext(pool=None, redis=on_a, settings=settings, log=logging.getLogger("test"))
    ctx_b = JobContext(pool=None, redis=on_b, settings=settings, log=logging.getLogger("test"))

    published: list[str] = []  # Redis answered: these must survive
    unpublished: list[str] = []  # Redis was away: the others catch these up from the database
    stop = asyncio.Event()

    async def keep_revoking() -> None:
        while not stop.is_set():
            session = str(uuid.uuid4())
            (published if await revoked_a.revoke(session) else unpublished).append(session)
            await asyncio.sleep(0.001)

    revoking = asyncio.create_task(keep_revoking())
    try:
        await wait_for(lambda: len(published) >= 200, "200 revocations published")
        for job in jobs:
            assert await worker_a.run_once(job, ctx_a), job.name
        nodes.kill(victim)  # the leases and the last revocations were answered microseconds ago
        killed_at = time.monotonic()
        nodes.wait_healthy(30)
        failover = time.monotonic() - killed_at
        before = len(published)
        await wait_for(lambda: len(published) >= before + 10, "revocations published after the failover")
    finally:
        stop.set()
        await revoking

    roles = {n["port"]: n["role"] for n in nodes.nodes()}
    assert roles[its_replica] == "primary", "the replica did not take over"

    # Every revocation Redis answered is still there, on the promoted replica, for every other process.
    revoked_b = RevokedSessions(on_b, None, keep_for=3600)
    await revoked_b.sync()
    lost = [s for s in published if not revoked_b.is_revoked(s)]
    assert not lost, f"{len(lost)} of {len(published)} revocations lost in the failover"
    # Every lease is still held: no second worker runs a job whose lease the first one took before the kill.
    taken_again = [job.name for job in jobs if await worker_b.run_once(job, ctx_b)]
    assert not taken_again, f"leases lost in the failover: {taken_again}"
    assert runs == [prefix] * len(jobs)
    await worker_a.release_leases()  # and handed back after it, by the worker holding them
    assert all([await worker_b.run_once(job, ctx_b) for job in on_victim])
    await on_a.delete_prefixed()
    await on_a.close()
    await on_b.close()
    print(f"\nfailover in {failover:.1f} s; {len(published)} revocations kept, {len(unpublished)} left to the "
          f"database while no primary served the slot; {len(jobs)} leases kept ({len(on_victim)} on the killed one)")
