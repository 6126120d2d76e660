"""PostgreSQL primary and streaming replica: public reads that may lag go to the replica, a resident's own data
read right after a write comes from the primary.

A throw-away primary and its replica (pg_basebackup -R) of the machine's PostgreSQL binaries
(tests/pg_replica.py); the app is built from settings (DATABASE_URL and DATABASE_REPLICA_URL), so its lifespan
opens both pools as in production. Replay on the replica is paused (pg_wal_replay_pause) to make the lag last.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app import migrate
from app.asgi import create_app, migration_sources
from app.settings import load_settings
from tests import conftest, pg_replica
from tests.conftest import MASTER_KEY, TEST_MODULES, running
from tests.feedback.support import RESIDENT_A, WARD, bearer, submit

pytestmark = pytest.mark.replica
OPEN311 = "/open311/v2"


@pytest.fixture(scope="module")
def servers():
    if pg_replica.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("the replica tests need PostgreSQL's server binaries (/usr/lib/postgresql/N/bin)")
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    pg = pg_replica.ReplicatedPostgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def databases(servers):
    """The app's database, migrated on the primary and replicated; a connection to each side."""
    admin = await asyncpg.connect(servers.primary_url())
    try:
        await admin.execute("CREATE DATABASE ihanoi")
    finally:
        await admin.close()
    primary = await asyncpg.connect(servers.primary_url("ihanoi"))
    await migrate.migrate(primary, migration_sources(TEST_MODULES))
    deadline = time.monotonic() + 30
    while True:  # the replica has the database and the migrations
        try:
            replica = await asyncpg.connect(servers.replica_url("ihanoi"))
            if await replica.fetchval("SELECT to_regclass('report') IS NOT NULL"):
                break
            await replica.close()
        except asyncpg.InvalidCatalogNameError:
            pass
        assert time.monotonic() < deadline, "the replica did not follow the primary"
        await asyncio.sleep(0.1)
    yield primary, replica
    await primary.close()
    await replica.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(servers, databases, redis, redis_url):
    settings = load_settings({
        "IHANOI_ENV": "test", "IHANOI_LOG_LEVEL": "WARNING", "IHANOI_MASTER_KEY": MASTER_KEY,
        "IHANOI_PUBLIC_URL": "http://ihanoi.test", "REDIS_URL": redis_url,
        "IHANOI_REDIS_CLUSTER": "true" if conftest.REDIS_CLUSTER else "false",
        "DATABASE_URL": servers.primary_url("ihanoi"), "DATABASE_REPLICA_URL": servers.replica_url("ihanoi"),
    })
    transport = httpx.ASGITransport(app=None)
    app = create_app(settings, modules=TEST_MODULES, redis=redis, idp_transport=transport)
    transport.app = app
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://ihanoi.test") as c:
        c.app = app
        yield c


async def replay(replica: asyncpg.Connection, *, paused: bool) -> None:
    await replica.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
    wanted = "paused" if paused else "not paused"
    deadline = time.monotonic() + 10
    while await replica.fetchval("SELECT pg_get_wal_replay_pause_state()") != wanted:
        assert time.monotonic() < deadline, f"replay not {wanted}"
        await asyncio.sleep(0.02)


async def public_ids(client) -> set[int]:
    response = await client.get("/v1/feedback/public/reports", params={"ward": WARD, "limit": 100})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


async def test_public_reads_lag_on_the_replica_while_own_reads_come_from_the_primary(client, databases):
    primary, replica = databases
    headers = await bearer(client, RESIDENT_A)
    await replay(replica, paused=True)
    try:
        report = await submit(client, headers, description=f"Đèn đường hỏng {uuid.uuid4().hex[:6]}")
        assert await primary.fetchval("SELECT count(*) FROM report WHERE id = $1", report["id"]) == 1
        # the resident sees what they just sent: their own list and the report itself read the primary
        mine = await client.get("/v1/feedback/me/reports", headers=headers)
        assert report["id"] in {item["id"] for item in mine.json()["items"]}, mine.text
        assert (await client.get(f"/v1/feedback/reports/{report['id']}", headers=headers)).status_code == 200
        # the public map and Open311 read the replica, which has not replayed the write yet
        assert report["id"] not in await public_ids(client)
        assert (await client.get(f"{OPEN311}/requests/{report['id']}.json")).status_code == 404
        requests = await client.get(f"{OPEN311}/requests.json")
        assert report["id"] not in {int(r["service_request_id"]) for r in requests.json()}
        assert await replica.fetchval("SELECT count(*) FROM report WHERE id = $1", report["id"]) == 0
        # and they were read over the replica's pool
        names = await replica.fetch("SELECT DISTINCT application_name FROM pg_stat_activity")
        assert "ihanoi-replica" in {row["application_name"] for row in names}
    finally:
        await replay(replica, paused=False)
    # replay resumed: the public reads catch up
    deadline = time.monotonic() + 10
    while report["id"] not in await public_ids(client):
        assert time.monotonic() < deadline, "the replica did not catch up"
        await asyncio.sleep(0.05)
    [one] = (await client.get(f"{OPEN311}/requests/{report['id']}.json")).json()
    assert one["service_request_id"] == report["id"]


async def test_a_replica_that_is_down_sends_the_reads_to_the_primary(client, servers):
    headers = await bearer(client, RESIDENT_A)
    report = await submit(client, headers, duplicates_checked=True)
    servers.stop_replica()
    assert report["id"] in await public_ids(client)  # not a 500: the primary answers
    assert (await client.get(f"{OPEN311}/requests/{report['id']}.json")).status_code == 200
