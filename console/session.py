"""Console sessions: the browser holds a random cookie, the server holds the person's tokens.

After the VNeID sign-in the console keeps the identity session's access and refresh tokens in Redis under a hash
of the cookie, so no token ever reaches the browser (nothing for a script to steal). Each request verifies the
access token (a session revoked anywhere ends the console's too) and refreshes it when it has expired. The
Redis key lives `idle_minutes` past the last request: idle, it disappears with the only copy of the tokens.
Logout ends the identity session (identity's own end_session, so modules' on_session_end hooks run) and the key.

The CSRF token is random per session and kept with it: a form of another session, of an ended session, or
without a token is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from litestar import Request

from app.errors import NotAuthenticated
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
    await state.redis.client.set(_key(state.redis, cookie), json.dumps(data), ex=idle_seconds(state))
    return cookie


async def load(request: Request, conn) -> Staff | None:
    """The signed-in person, or None (no cookie, idle too long, logged out, or the identity session ended)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    state = request.app.state
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
        except NotAuthenticated:
            await redis.client.delete(key)
            return None
        data.update(access=pair.access_token, refresh=pair.refresh_token)
        await redis.client.set(key, json.dumps(data), ex=idle_seconds(state))
    else:
        await redis.client.expire(key, idle_seconds(state))
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
