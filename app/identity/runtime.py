"""Builds identity's per-process runtime inside the app's lifespan, with its background refreshers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from app.identity.crypto import Vault, load_master_key
from app.identity.oidc import OIDCProvider
from app.identity.service import IdentityRuntime
from app.identity.tokens import RELOAD_EVERY, RevokedSessions, TokenKeys, ensure_key
from app.identity.units import load_units

log = logging.getLogger("ihanoi.identity")


async def _every(seconds: float, stop: asyncio.Event, work, what: str) -> None:
    """Run `work` every `seconds` until `stop` is set; never cancelled in the middle of a query."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await work()
        except Exception as exc:  # the database or Redis may be away for a moment: keep what we have
            log.warning(f"{what} failed", extra={"error": type(exc).__name__})


@contextlib.asynccontextmanager
async def identity_runtime(state, settings, *, transport: httpx.AsyncBaseTransport | None = None
                           ) -> AsyncIterator[IdentityRuntime]:
    vault = Vault(load_master_key(settings.master_key, env=settings.env, data_dir=settings.data_path))
    units = load_units(Path(settings.units_file) if settings.units_file else None)
    keys = TokenKeys(vault)
    try:
        async with state.pool.acquire() as conn:
            await ensure_key(conn, vault)
        await keys.load(state.pool)
    except asyncpg.UndefinedTableError:
        log.warning("identity tables missing: run `ihanoi migrate`; tokens cannot be issued until then")
    revoked = RevokedSessions(state.redis, state.pool,
                              keep_for=max(settings.access_token_ttl, settings.client_token_ttl) + 60)
    try:
        await revoked.catch_up()
    except Exception as exc:  # the first periodic catch-up tries again
        log.warning("revocation catch-up failed at start", extra={"error": type(exc).__name__})
    await revoked.sync()
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as http:
        provider = OIDCProvider(issuer=settings.identity_issuer(), client_id=settings.oidc_client_id,
                                client_secret=settings.oidc_client_secret, http=http)
        runtime = IdentityRuntime(
            settings=settings, vault=vault, keys=keys, revoked=revoked, provider=provider, units=units,
            provider_issuer=settings.identity_issuer(), settings_client_id=settings.oidc_client_id,
            settings_client_secret=settings.oidc_client_secret,
        )
        state.identity = runtime
        async def from_database() -> None:
            # one connection every few seconds for both
            async with state.pool.acquire() as conn:
                await revoked.catch_up(conn)
                await keys.load_from(conn)

        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_every(revoked.POLL_EVERY, stop, revoked.sync, "revocation sync")),
            asyncio.create_task(_every(RELOAD_EVERY, stop, from_database, "revocations and signing keys reload")),
        ]
        try:
            yield runtime
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
