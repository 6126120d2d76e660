"""The asyncpg pool owned by the app's lifespan, the request-scoped connection and transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
import msgspec
from litestar.datastructures import State

log = logging.getLogger("ihanoi.db")


class Pool(Protocol):
    """What the app needs of a pool: asyncpg's Pool, or a test's pool bound to one transaction."""

    def acquire(self, *, timeout: float | None = None) -> Any: ...
    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...


# Every connection: UTC, and no JIT compilation. The API's statements are short, and PostgreSQL compiles a plan
# whose estimated cost passes jit_above_cost (a text search in a map box over a million reports does) for tens of
# milliseconds before running it in a few (benchmarks/feedback.py).
SERVER_SETTINGS = {"timezone": "UTC", "jit": "off"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB columns come back as Python values and accept them, encoded by msgspec.
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=lambda v: msgspec.json.encode(v).decode(),
            decoder=msgspec.json.decode, format="text",
        )


async def connect(dsn: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection with the same codecs as the pool's (for commands and scripts)."""
    conn = await asyncpg.connect(dsn, timeout=timeout, server_settings={"application_name": "ihanoi-cli",
                                                                         **SERVER_SETTINGS})
    await _init_connection(conn)
    return conn


async def create_pool(dsn: str, *, min_size: int, max_size: int, timeout: float, attempts: int = 20,
                      name: str = "ihanoi") -> asyncpg.Pool:
    """Connect, retrying for a while: in production PostgreSQL may come up after the API does."""
    delay = 0.25
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                init=_init_connection,
                server_settings={"application_name": name, **SERVER_SETTINGS},
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            if attempt == attempts:
                raise
            log.warning("postgres not reachable yet, retrying", extra={"attempt": attempt, "error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


async def provide_connection(state: State) -> AsyncIterator[asyncpg.Connection]:
    """Request-scoped connection: acquired when a handler asks for `conn`, released after it."""
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn:
        yield conn


async def provide_read_connection(state: State) -> AsyncIterator[asyncpg.Connection]:
    """A connection for reads that may lag a little: from the streaming replica's pool when one is configured
    (`DATABASE_REPLICA_URL`), else from the primary's. A replica that cannot be reached is not an outage: the
    read goes to the primary. Never for what a caller reads right after its own write (that is `conn`)."""
    read_pool = state.get("read_pool")
    if read_pool is not None:
        try:
            conn = await read_pool.acquire(timeout=state.settings.db_timeout)
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            log.warning("replica unreachable: reading from the primary", extra={"error": type(exc).__name__})
        else:
            try:
                yield conn
            finally:
                await read_pool.release(conn)
            return
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn:
        yield conn


async def provide_transaction(state: State) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction committed when the handler returns, rolled back if it raises."""
    async with state.pool.acquire(timeout=state.settings.db_timeout) as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def transaction(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """Run a block atomically; inside another transaction it becomes a savepoint."""
    async with conn.transaction():
        yield conn
