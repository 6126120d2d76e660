"""Test fixtures: real PostgreSQL and Redis, one fresh database per run, one transaction per test.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` choose the servers; without them the embedded ones are started
once for the run (under .ihanoi/test) and stopped at its end. Each run creates its own database on
that server, applies the real migrations once, and drops it at the end. Each test then runs inside a
transaction rolled back at its end and writes Redis keys under its own prefix, deleted at its end.

`--redis-cluster` runs the tests against a throw-away Redis Cluster of Debian's
`redis-server` (3 primaries, 3 replicas, tests/redis_cluster.py) with `IHANOI_REDIS_CLUSTER` on, in place of
`TEST_REDIS_URL` or the embedded Redis. Every test that touches Redis (through the `redis` or `redis_url`
fixture) is marked `redis`, so `pytest --redis-cluster -m redis` runs exactly those.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app import db, migrate, redisdb
from app.asgi import create_app, migration_sources
from app.settings import load_settings
from modules import catalog
from tests import redis_cluster
from tests.fixture_module import module as fixture_module
from tests.fixture_module import second as second_module

ROOT = Path(__file__).resolve().parent.parent
# every module of the catalog, then the kernel's test modules: a new module is tested with no edit here
TEST_MODULES = [*catalog.load(), fixture_module, second_module]
# What they declare (categories, roles, problem types) is known to the test process from the start, as it
# is to a server process once it has loaded its modules: a test that calls a service directly needs it too.
catalog.install(TEST_MODULES)
EXTRA_MODULES = "tests.fixture_module:module,tests.fixture_module:second"
# One master key for every process of this run: they share the database, so they must share its keys.
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()


# Set by pytest_configure from --redis-cluster: every client, app and process of the run speaks cluster.
REDIS_CLUSTER = False


def pytest_addoption(parser) -> None:
    parser.addoption("--redis-cluster", action="store_true", default=False,
                     help="run against a throw-away 6-node Redis Cluster (Debian's redis-server)")


def pytest_configure(config) -> None:
    global REDIS_CLUSTER
    REDIS_CLUSTER = bool(config.getoption("--redis-cluster"))


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if {"redis", "redis_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("redis")


def sync_redis_client(url: str):
    """A blocking client for a test's own look at Redis: a cluster client when the run is on a cluster."""
    import redis

    if REDIS_CLUSTER:
        return redis.RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    database_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    cluster = None
    if REDIS_CLUSTER:
        if not redis_cluster.available():
            pytest.exit("--redis-cluster needs Debian's redis-server and redis-cli (apt-get install redis-server)", 2)
        cluster = redis_cluster.RedisClusterNodes().start()
        redis_url = cluster.url
    if database_url and redis_url:
        try:
            yield database_url, redis_url
        finally:
            if cluster is not None:
                cluster.stop()
        return
    from app.embedded import EmbeddedServices

    services = EmbeddedServices(ROOT / ".ihanoi" / "test", postgres=not database_url, redis=not redis_url)
    embedded_db, embedded_redis = services.start()
    try:
        yield database_url or embedded_db, redis_url or embedded_redis
    finally:
        services.stop()
        if cluster is not None:
            cluster.stop()


class FreshDatabases:
    """Creates throw-away databases on the test server, dropped when the run ends."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def create(self, label: str = "t") -> str:
        name = f"ihanoi_{label}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return with_database(self.admin_url, name)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="session")
async def databases(server_urls) -> AsyncIterator[FreshDatabases]:
    fresh = FreshDatabases(server_urls[0])
    yield fresh
    await fresh.drop_all()


@pytest_asyncio.fixture(scope="session")
async def database_url(databases) -> str:
    """This run's database, migrated once by the real runner (kernel and test modules)."""
    url = await databases.create("run")
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn, migration_sources(TEST_MODULES))
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="session")
def redis_url(server_urls) -> str:
    return server_urls[1]


@pytest_asyncio.fixture(scope="session")
async def pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, min_size=1, max_size=8, timeout=5)
    yield pool
    await pool.close()


class TransactionPool:
    """The app's pool during a test: the test's one real connection, inside its open transaction.

    Each acquisition is a savepoint that is kept when the request ends, as a connection's committed
    work stays in production even when the handler then raises, and rolled back only if the request
    left the connection in a failed state, so the test's transaction stays usable.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self.in_use = 0

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        async with self.lock:
            self.in_use = 1
            savepoint = self.conn.transaction()
            await savepoint.start()
            try:
                yield self.conn
            finally:
                try:
                    await savepoint.commit()
                except asyncpg.InFailedSQLTransactionError:
                    await savepoint.rollback()
                self.in_use = 0

    def get_size(self) -> int:
        return 1

    def get_idle_size(self) -> int:
        return 1 - self.in_use


@pytest_asyncio.fixture
async def conn(pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest_asyncio.fixture
async def redis(redis_url) -> AsyncIterator[redisdb.Redis]:
    client = redisdb.connect(redis_url, prefix=f"test:{uuid.uuid4().hex[:12]}:", cluster=REDIS_CLUSTER)
    yield client
    await client.delete_prefixed()
    await client.close()


@pytest.fixture
def settings(database_url, redis_url):
    return load_settings(
        {"IHANOI_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": redis_url, "IHANOI_LOG_LEVEL": "WARNING",
         "IHANOI_MASTER_KEY": MASTER_KEY, "IHANOI_PUBLIC_URL": "http://ihanoi.test",
         "IHANOI_REDIS_CLUSTER": "true" if REDIS_CLUSTER else "false"}
    )


@asynccontextmanager
async def running(app) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own.

    pytest-asyncio sets a fixture up and tears it down in different tasks, and the lifespan's anyio
    cancel scope must be entered and left in one task.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises the start-up error
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
def make_client(conn, redis, settings):
    """Build an app on the test's transaction and Redis prefix, and a client driving it in this loop."""

    @asynccontextmanager
    async def make(app_settings=None, modules=TEST_MODULES, **kwargs) -> AsyncIterator[httpx.AsyncClient]:
        # The relying party reaches the VNeID stand-in through the app itself, in this event loop.
        transport = httpx.ASGITransport(app=None)
        app = create_app(app_settings or settings, modules=modules, pool=TransactionPool(conn),
                         redis=kwargs.pop("redis", redis), idp_transport=transport, **kwargs)
        transport.app = app
        async with running(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://ihanoi.test") as client:
                client.app = app
                yield client

    return make


@pytest_asyncio.fixture
async def client(make_client) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


# ---- real processes -------------------------------------------------------------------------------

IHANOI = [sys.executable, "-m", "app.cli"]


def process_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IHANOI_", "TEST_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    env["IHANOI_ENV"] = "test"
    env["IHANOI_MASTER_KEY"] = MASTER_KEY
    if REDIS_CLUSTER:
        env["IHANOI_REDIS_CLUSTER"] = "true"
    env.update(values)
    return env


def process_log(proc: subprocess.Popen, tail: int = 8000) -> str:
    """What a process started by a test printed (its `log_path`) but its access log, to show when a test fails."""
    path = getattr(proc, "log_path", None)
    if path is None:
        return "(the process's output was not kept)"
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    text = "\n".join(line for line in lines if '"logger":"ihanoi.access"' not in line)
    return text if len(text) <= tail else "[...]\n" + text[-tail:]


def wait_ready(base_url: str, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    """Seconds until /readyz answers 200; if the process exits or is not ready in time, fail with its output."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; its output:\n{process_log(proc)}")
        try:
            if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready in {timeout}s; its output so far:\n{process_log(proc)}")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> float:
    """SIGTERM, wait; returns how long it took. Kills (and fails the caller's check) if it hangs."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data folder for the embedded servers, outside pytest's temporary folder, removed after the test.

    Run as root, the embedded PostgreSQL runs as the `pgserver` user and opens `<dir>/postgres` through
    every folder above it, which pgserver opens to others (chmod o+rx) for that. pytest's basetemp
    /tmp/pytest-of-root is shared by every pytest run of the machine, and each run starting sets it back to
    0700: a PostgreSQL starting under `tmp_path` meanwhile fails with "Permission denied" (initdb PANICs,
    `ihanoi dev` exits 1). A folder of our own right under /tmp (mode 1777, which nobody tightens) is safe.
    """
    folder = Path(tempfile.mkdtemp(prefix="ihanoi-e2e-"))
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def start_server(database_url, redis_url, tmp_path):
    """Start real `ihanoi serve` processes on free ports; all are stopped after the test."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, port: int | None = None, **env: str) -> tuple[str, subprocess.Popen]:
        port = port or free_port()
        values = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "IHANOI_EXTRA_MODULES": EXTRA_MODULES,
                  "IHANOI_LOG_LEVEL": "INFO"}
        values.update(env)
        log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*IHANOI, "serve", "--port", str(port), *args], cwd=ROOT,
                                env=process_env(**values), stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = tmp_path / f"server-{port}.log"
        procs.append(proc)
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, proc)
        return base_url, proc

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture(scope="session")
def fcm_url() -> Iterator[str]:
    """The FCM stand-in as a real HTTP server (firebase-admin speaks HTTP to it), one per run."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "notifications.fcm_stand_in:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"FCM stand-in exited with {proc.returncode}")
            try:
                if httpx.get(url + "/_control/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("FCM stand-in did not start")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


async def next_event(lines, wanted: str) -> dict:
    """The data of the next server-sent event named `wanted` from a stream's lines (5 s for each line)."""
    event = None
    while True:
        line = await asyncio.wait_for(anext(lines), 5)
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event == wanted:
            return json.loads(line.split(":", 1)[1])
