"""Console sessions: the browser holds a random cookie, the server holds the person's tokens.

After the VNeID sign-in the console keeps the identity session's access and refresh tokens in Redis under a hash
of the cookie, so no token ever reaches the browser (nothing for a script to steal). Each request verifies the
access token (a session revoked anywhere ends the console's too) and refreshes it when it has expired. The
Redis key lives `idle_minutes` past the last request: idle, it disappears with the only copy of the tokens, and
the identity session is ended too by the next console request of anyone (`sweep`: a sorted set of console
sessions by the time they fall idle). Logout ends the identity session at once (identity's own end_session, so
modules' on_session_end hooks run) and the key.

The CSRF token is random per session and kept with it: a form of another session, of an ended session, or
without a token is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from litestar import Request

from app.errors import NotAuthenticated, NotFound
from app.identity import service as identity
from app.identity.models import Principal, TokenPair
from app.identity.tokens import verify_access_token
from console.config import console_settings

COOKIE = "ihanoi_console"
LOGIN_COOKIE = "ihanoi_console_login"
LANG_COOKIE = "ihanoi_console_lang"


@dataclass
class Staff:
    """Who is signed in to the console for this request."""

    principal: Principal
    name: str
    csrf: str
    cookie_key: str
    data: dict[str, Any]

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, token or "")


SWEEP_BATCH = 20


def _idle_index(redis) -> str:
    return redis.key("console", "idle-at")


def _member(principal: Principal) -> str:
    return f"{principal.sub}|{principal.session_id}"


async def _touch(state, key: str, principal: Principal) -> None:
    seconds = idle_seconds(state)
    await state.redis.client.expire(key, seconds)
    await state.redis.client.zadd(_idle_index(state.redis), {_member(principal): time.time() + seconds})


async def sweep(state, conn) -> int:
    """End the identity sessions of console sessions that fell idle (their Redis key is gone by now); each is
    taken by one process only (ZREM)."""
    index = _idle_index(state.redis)
    due = await state.redis.client.zrangebyscore(index, "-inf", time.time(), start=0, num=SWEEP_BATCH)
    ended = 0
    for member in due:
        if not await state.redis.client.zrem(index, member):
            continue
        sub, _, session_id = member.decode().partition("|")
        try:
            await identity.end_session(state.identity, conn,
                                       Principal(sub=sub, kind="resident", session_id=session_id))
            ended += 1
        except NotFound:  # ended already (logout elsewhere, revoked)
            pass
    return ended


def _key(redis, cookie: str) -> str:
    return redis.key("console", "session", hashlib.sha256(cookie.encode()).hexdigest())


def idle_seconds(state) -> int:
    return console_settings(state.settings).idle_minutes * 60


def secure_cookies(state) -> bool:
    """HTTPS-only cookies outside dev and test (which run on plain http://127.0.0.1)."""
    return state.settings.env not in ("dev", "test")


async def create(state, pair: TokenPair, principal: Principal, name: str) -> str:
    cookie = secrets.token_urlsafe(32)
    data = {"access": pair.access_token, "refresh": pair.refresh_token, "identity_session": pair.session_id,
            "csrf": secrets.token_urlsafe(32), "name": name, "sub": principal.sub}
    key = _key(state.redis, cookie)
    await state.redis.client.set(key, json.dumps(data), ex=idle_seconds(state))
    await _touch(state, key, principal)
    return cookie


async def load(request: Request, conn) -> Staff | None:
    """The signed-in person, or None (no cookie, idle too long, logged out, or the identity session ended)."""
    state = request.app.state
    await sweep(state, conn)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    redis, rt = state.redis, state.identity
    key = _key(redis, cookie)
    raw = await redis.client.get(key)
    if raw is None:
        return None
    data = json.loads(raw)
    try:
        principal = await _verify(state, data["access"])
    except NotAuthenticated:
        try:
            pair = await identity.refresh(rt, conn, redis, refresh_token=data["refresh"],
                                          client_ip=request.client.host if request.client else "unknown")
            principal = await _verify(state, pair.access_token)
        except NotAuthenticated:  # the identity session ended (logout elsewhere, revoked, expired)
            await redis.client.delete(key)
            await redis.client.zrem(_idle_index(redis), f"{data['sub']}|{data['identity_session']}")
            return None
        data.update(access=pair.access_token, refresh=pair.refresh_token)
        await redis.client.set(key, json.dumps(data), ex=idle_seconds(state))
    await _touch(state, key, principal)
    return Staff(principal=principal, name=data.get("name") or "", csrf=data["csrf"], cookie_key=key, data=data)


async def _verify(state, token: str) -> Principal:
    rt = state.identity
    return await verify_access_token(token, keys=rt.keys, pool=state.pool, issuer=rt.token_issuer,
                                     revoked=rt.revoked)


async def end(request: Request, conn, staff: Staff) -> None:
    """Logout: the identity session ends too (everywhere within a second), then the console's key."""
    state = request.app.state
    try:
        await identity.end_session(state.identity, conn, staff.principal)
    finally:
        await state.redis.client.delete(staff.cookie_key)
        await state.redis.client.zrem(_idle_index(state.redis), _member(staff.principal))
