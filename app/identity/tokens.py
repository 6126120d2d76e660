"""The backend's own access tokens: ES256 JWTs with a `kid`, keys in PostgreSQL, revocation in Redis.

Signing keys live in `signing_key`, their private halves encrypted by the vault. Every process keeps
them in memory, reloads them every few seconds and at once (rate-limited) on a `kid` it does not
know, so `ihanoi keys rotate` on one machine reaches all. The newest unretired key signs; every
unretired key verifies and is published at /.well-known/jwks.json so validators can check offline.

A revoked session is refused by a set kept in each process, so no request pays a round trip. The
database (`session.revoked_at`) is the truth; Redis is the fast path: one sorted set (member:
session id, score: revocation time) each process polls four times a second, so a revocation reaches
every process within a second. Each process also catches up from the database at start, as soon
as Redis answers again after a failure, and every few seconds, so a revocation whose Redis notice
was lost (Redis down at logout) is refused everywhere all the same.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import redis.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from app.errors import NotAuthenticated
from app.identity import store
from app.identity.crypto import Vault
from app.identity.models import Principal

log = logging.getLogger("ihanoi.identity.tokens")

AUDIENCE = "ihanoi-api"
ALGORITHM = "ES256"
LEEWAY = 30
RELOAD_EVERY = 5.0
UNKNOWN_KID_RELOAD_INTERVAL = 1.0


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    public: ec.EllipticCurvePublicKey
    public_jwk: dict[str, Any]


def _new_key() -> tuple[str, bytes, dict[str, Any], ec.EllipticCurvePrivateKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    kid = time.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return kid, pem, jwk, private


async def create_key(conn, vault: Vault) -> str:
    kid, pem, jwk, _ = _new_key()
    await conn.execute(
        "INSERT INTO signing_key (kid, alg, private_enc, public_jwk) VALUES ($1, $2, $3, $4)",
        kid, ALGORITHM, vault.encrypt(pem, context=b"signing_key:" + kid.encode()), jwk,
    )
    return kid


async def ensure_key(conn, vault: Vault) -> None:
    """First start: create a signing key unless one exists (under a lock: several processes start)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ihanoi.signing_key'))")
        exists = await conn.fetchval("SELECT 1 FROM signing_key WHERE retire_after IS NULL OR retire_after > now()")
        if not exists:
            await create_key(conn, vault)


async def rotate_keys(conn, vault: Vault, *, keep_old_for: float) -> tuple[str, list[str]]:
    """Add a key that signs from now on; older keys verify for `keep_old_for` seconds more, then retire."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ihanoi.signing_key'))")
        retiring = await conn.fetch(
            "UPDATE signing_key SET retire_after = now() + make_interval(secs => $1) "
            "WHERE retire_after IS NULL RETURNING kid", keep_old_for,
        )
        kid = await create_key(conn, vault)
    return kid, [r["kid"] for r in retiring]


class TokenKeys:
    """This process's copy of the signing keys."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.keys: dict[str, SigningKey] = {}
        self.signer: SigningKey | None = None
        self.loaded_at = 0.0
        self.last_unknown_reload = 0.0
        # Tokens already verified here, by their exact text: an ES256 check costs far more than the
        # request it guards, and a mobile app sends the same token for ten minutes.
        self.verified: OrderedDict[str, Principal] = OrderedDict()

    async def load(self, pool) -> None:
        async with pool.acquire() as conn:
            await self.load_from(conn)

    async def load_from(self, conn) -> None:
        rows = await conn.fetch(
            "SELECT kid, private_enc, public_jwk FROM signing_key "
            "WHERE retire_after IS NULL OR retire_after > now() ORDER BY created_at"
        )
        keys: dict[str, SigningKey] = {}
        for row in rows:
            known = self.keys.get(row["kid"])
            if known is None:
                try:
                    pem = self.vault.decrypt(row["private_enc"], context=b"signing_key:" + row["kid"].encode())
                except InvalidTag:
                    raise RuntimeError(
                        f"signing key {row['kid']} cannot be decrypted with this IHANOI_MASTER_KEY: "
                        "every process of a deployment must use the same master key"
                    ) from None
                private = serialization.load_pem_private_key(pem, password=None)
                known = SigningKey(row["kid"], private, private.public_key(), row["public_jwk"])
            keys[row["kid"]] = known
        if set(keys) != set(self.keys):
            self.verified.clear()  # a retired key takes its tokens with it
        self.keys = keys
        self.signer = keys[rows[-1]["kid"]] if rows else None
        self.loaded_at = time.monotonic()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys.values()]}

    def sign(self, claims: dict[str, Any]) -> str:
        if self.signer is None:
            raise RuntimeError("no signing key loaded")
        return jwt.encode(claims, self.signer.private, algorithm=ALGORITHM, headers={"kid": self.signer.kid})

    def key_for(self, kid: str | None) -> SigningKey | None:
        return self.keys.get(kid or "")

    async def key_for_or_reload(self, kid: str | None, pool) -> SigningKey | None:
        key = self.key_for(kid)
        now = time.monotonic()
        if key is None and kid and now - self.last_unknown_reload > UNKNOWN_KID_RELOAD_INTERVAL:
            self.last_unknown_reload = now
            await self.load(pool)
            key = self.key_for(kid)
        return key


def issue_access_token(keys: TokenKeys, *, issuer: str, sub: str, ttl: int, **claims: Any) -> tuple[str, str, int]:
    now = int(time.time())
    jti = uuid.uuid4().hex
    body = {"iss": issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + ttl, "jti": jti}
    body.update(claims)
    return keys.sign(body), jti, now + ttl


class RevokedSessions:
    """Revoked session ids, mirrored in every process from Redis (fast) and PostgreSQL (the truth)."""

    POLL_EVERY = 0.25
    CATCH_UP_EVERY = RELOAD_EVERY  # with the signing keys, on one connection
    # Each catch-up reads back this far before the previous one: a logout committed late is not missed.
    CATCH_UP_OVERLAP = 60.0

    def __init__(self, redis, pool, *, keep_for: int) -> None:
        self.redis = redis
        self.pool = pool
        self.keep_for = keep_for  # the longest access-token lifetime: after it the token is dead anyway
        self.local: dict[str, float] = {}
        self.seen_until = 0.0
        self.synced_at = 0.0
        self.caught_up_at: float | None = None  # monotonic time of the last catch-up from the database
        self.redis_down = False

    @property
    def key(self) -> str:
        return self.redis.key("revoked-sessions")

    async def revoke(self, session_id: str) -> bool:
        """Call after the revocation is committed: refused here at once, and told to the others through
        Redis when it answers (True); when it does not (False), the others catch up from the database."""
        now = time.time()
        self.local[session_id] = now
        try:
            # durable: a Redis primary failing over right after must not forget it
            await self.redis.durable(self.key, "ZADD", self.key, now, session_id)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("revocation not published to redis: other processes catch up from the database",
                        extra={"session": session_id, "error": type(exc).__name__})
            return False
        return True

    async def sync(self) -> None:
        """Poll Redis; when it answers again after a failure, catch up from the database first."""
        try:
            if self.redis_down:
                await self.redis.client.ping()
            else:
                await self._sync_redis()
                return
        except (redis.exceptions.RedisError, OSError) as exc:
            if not self.redis_down:
                log.warning("redis unreachable: revocations now come from the database every few seconds",
                            extra={"error": type(exc).__name__})
            self.redis_down = True
            return
        # What was revoked while Redis was away (or was lost with it) is in the database.
        await self.catch_up()
        self.redis_down = False
        log.info("redis answers again: revocations caught up from the database")
        await self._sync_redis()

    async def _sync_redis(self) -> None:
        now = time.time()
        await self.redis.client.zremrangebyscore(self.key, "-inf", now - self.keep_for)
        rows = await self.redis.client.zrangebyscore(self.key, self.seen_until - 2, "+inf", withscores=True)
        for member, score in rows:
            self.local[member.decode() if isinstance(member, bytes) else member] = score
            self.seen_until = max(self.seen_until, score)
        self._forget_old(now)
        self.synced_at = time.monotonic()

    async def catch_up(self, conn=None) -> None:
        """Read the sessions revoked since the last catch-up (all those still mattering the first time)."""
        started = time.monotonic()
        lookback = float(self.keep_for)
        if self.caught_up_at is not None:
            lookback = min(lookback, started - self.caught_up_at + self.CATCH_UP_OVERLAP)
        if conn is None:
            async with self.pool.acquire() as conn:
                rows = await store.sessions_revoked_within(conn, lookback)
        else:
            rows = await store.sessions_revoked_within(conn, lookback)
        for session_id, revoked_at in rows:
            self.local.setdefault(str(session_id), revoked_at)
        self._forget_old(time.time())
        self.caught_up_at = started

    def _forget_old(self, now: float) -> None:
        for sid in [s for s, at in self.local.items() if at < now - self.keep_for]:
            del self.local[sid]

    def is_revoked(self, session_id: str | None) -> bool:
        return session_id is not None and session_id in self.local


VERIFIED_CACHE_SIZE = 50_000


async def verify_access_token(token: str, *, keys: TokenKeys, pool, issuer: str,
                              revoked: RevokedSessions) -> Principal:
    cached = keys.verified.get(token)
    if cached is not None:
        if cached.exp + LEEWAY < time.time():
            del keys.verified[token]
        else:
            if revoked.is_revoked(cached.session_id):
                raise NotAuthenticated("the session has ended", headers=_challenge("invalid_token"))
            return cached
    principal = await _verify(token, keys=keys, pool=pool, issuer=issuer, revoked=revoked)
    keys.verified[token] = principal
    if len(keys.verified) > VERIFIED_CACHE_SIZE:
        keys.verified.popitem(last=False)
    return principal


async def _verify(token: str, *, keys: TokenKeys, pool, issuer: str, revoked: RevokedSessions) -> Principal:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise NotAuthenticated("the access token is malformed", headers=_challenge("invalid_token")) from None
    if header.get("alg") != ALGORITHM:
        raise NotAuthenticated("the access token's algorithm is not accepted", headers=_challenge("invalid_token"))
    key = await keys.key_for_or_reload(header.get("kid"), pool)
    if key is None:
        raise NotAuthenticated("the access token was signed by an unknown key", headers=_challenge("invalid_token"))
    try:
        claims = jwt.decode(
            token, key.public, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=issuer, leeway=LEEWAY,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise NotAuthenticated("the access token has expired", headers=_challenge("invalid_token")) from None
    except jwt.PyJWTError as exc:
        raise NotAuthenticated(f"the access token is not valid: {exc}", headers=_challenge("invalid_token")) from None
    session_id = claims.get("sid")
    if revoked.is_revoked(session_id):
        raise NotAuthenticated("the session has ended", headers=_challenge("invalid_token"))
    return Principal(
        sub=claims["sub"],
        kind="client" if claims.get("client_id") else "resident",
        roles=tuple(claims.get("roles", ())),
        level=int(claims.get("level", 0)),
        auth_time=int(claims.get("auth_time", 0)),
        session_id=session_id,
        client_id=claims.get("client_id"),
        jti=claims["jti"],
        exp=claims["exp"],
    )


def _challenge(error: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="ihanoi", error="{error}"'}
