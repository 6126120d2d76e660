"""The rules of identity: login through VNeID, the backend's tokens, sessions, roles, machine clients."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import jwt

from app import ratelimit
from app.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, StepUpRequired, UnknownReference
from app.identity import store
from app.identity.crypto import Vault, token_hash
from app.identity.models import (
    Account,
    ClientToken,
    Grant,
    GrantRequest,
    LoginStart,
    LoginStarted,
    Principal,
    Profile,
    ResidentRef,
    RoleView,
    SessionView,
    TokenPair,
)
from app.identity.oidc import IdentityProvider, LoginRefused, pkce_pair
from app.identity.personal_id import PersonalIdError, mask_personal_id, parse_personal_id
from app.identity.roles import KERNEL_ROLES  # noqa: F401 - declares the city's roles
from app.identity.tokens import RevokedSessions, TokenKeys, issue_access_token
from app.identity.units import UnitDirectory
from modules.registry import REGISTRY

log = logging.getLogger("ihanoi.identity")

ACR_LEVELS = {"urn:vneid:level:1": 1, "urn:vneid:level:2": 2}
LOGIN_TTL = 600
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_MAX_LIFETIME = 120
CLIENT_ALGORITHMS = {"ES256": "EC", "EdDSA": "OKP", "RS256": "RSA"}
CLIENT_ROLE = re.compile(r"^[a-z_]{3,32}(:[a-z0-9._-]{1,64})?$")
SCOPE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class LoginFailed(NotAuthenticated):
    slug = "login-refused"


@dataclass
class IdentityRuntime:
    """Everything identity needs at run time, built once per process in the app's lifespan."""

    settings: Any
    vault: Vault
    keys: TokenKeys
    revoked: RevokedSessions
    provider: IdentityProvider
    units: UnitDirectory
    provider_issuer: str
    settings_client_id: str
    settings_client_secret: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token_issuer(self) -> str:
        return self.settings.base_url()

    @property
    def token_endpoint(self) -> str:
        return self.settings.base_url() + "/oauth/token"

    @property
    def redirect_uri(self) -> str:
        return self.settings.oidc_redirect_uri or self.settings.base_url() + "/v1/auth/vneid/callback"


# ---- login -----------------------------------------------------------------------------------------


async def start_login(rt: IdentityRuntime, redis, body: LoginStart, *, client_ip: str) -> LoginStarted:
    await ratelimit.hit(redis, "login", client_ip, rt.settings.rate_login)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    redirect_uri = body.redirect_uri or rt.redirect_uri
    try:
        url = await rt.provider.authorization_url(state=state, nonce=nonce, code_challenge=challenge,
                                                  redirect_uri=redirect_uri)
    except LoginRefused as exc:
        raise LoginFailed(exc.reason) from None
    pending = {"nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri,
               "device_name": body.device_name, "platform": body.platform}
    await redis.client.set(redis.key("login", state), json.dumps(pending), ex=LOGIN_TTL)
    return LoginStarted(authorization_url=url, state=state, expires_in=LOGIN_TTL)


def _claims_to_profile(claims: dict[str, Any]) -> dict[str, Any]:
    """Map the provider's claims to a resident; any doubt refuses the login."""
    level = ACR_LEVELS.get(claims.get("acr", ""))
    if level is None:
        raise LoginFailed("the identity provider gave no known identity level (acr)")
    try:
        birth_date = dt.date.fromisoformat(claims.get("birthdate", ""))
    except ValueError:
        raise LoginFailed("the identity provider gave no valid birth date") from None
    sex = claims.get("gender")
    if sex not in ("male", "female"):
        raise LoginFailed("the identity provider gave no valid sex")
    try:
        parsed = parse_personal_id(str(claims.get("personal_id", "")), birth_date=birth_date, sex=sex)
    except PersonalIdError as exc:
        raise LoginFailed(f"the personal ID number is not valid: {exc.reason}") from None
    name = str(claims.get("name", "")).strip()
    if not name:
        raise LoginFailed("the identity provider gave no name")
    import unicodedata

    auth_time = int(claims.get("auth_time") or claims["iat"])
    return {
        "personal_id": parsed.number, "full_name": unicodedata.normalize("NFC", name), "birth_date": birth_date,
        "sex": sex, "level": level, "auth_time": dt.datetime.fromtimestamp(auth_time, dt.UTC),
        "idp_subject": str(claims["sub"]),
    }


async def complete_login(rt: IdentityRuntime, conn: asyncpg.Connection, redis, *, state: str, code: str,
                         client_ip: str) -> TokenPair:
    await ratelimit.hit(redis, "login", client_ip, rt.settings.rate_login)
    raw = await redis.client.getdel(redis.key("login", state))
    if raw is None:  # unknown, expired, or already completed once
        raise LoginFailed("this login is unknown, expired or already completed; start again")
    pending = json.loads(raw)
    try:
        answer = await rt.provider.exchange_code(code=code, code_verifier=pending["verifier"],
                                                 redirect_uri=pending["redirect_uri"])
        claims = await rt.provider.validate_id_token(answer["id_token"], nonce=pending["nonce"])
    except LoginRefused as exc:
        log.warning("login refused", extra={"reason": exc.reason})
        raise LoginFailed(exc.reason) from None
    # An ID token is good for one login: its nonce is remembered until long after the token expires.
    nonce_key = redis.key("nonce-used", token_hash(claims["nonce"]).hex())
    if not await redis.client.set(nonce_key, "1", nx=True, ex=LOGIN_TTL + 3600):
        raise LoginFailed("this ID token was already used")
    profile = _claims_to_profile(claims)
    async with conn.transaction():
        resident = await store.upsert_resident_from_login(
            conn,
            personal_id_hash=rt.vault.lookup_hash(profile["personal_id"], context=b"personal_id"),
            personal_id_enc=rt.vault.encrypt(profile["personal_id"].encode(), context=b"personal_id"),
            idp_subject=profile["idp_subject"], full_name=profile["full_name"], birth_date=profile["birth_date"],
            sex=profile["sex"], identity_level=profile["level"], auth_time=profile["auth_time"],
        )
        session_id = await store.insert_session(
            conn, resident_id=resident["id"], device_name=pending["device_name"], platform=pending["platform"],
            identity_level=profile["level"], auth_time=profile["auth_time"],
        )
        pair = await _issue_pair(rt, conn, resident_id=resident["id"], session_id=session_id,
                                 level=profile["level"], auth_time=profile["auth_time"])
    log.info("login", extra={"resident": str(resident["id"]), "session": str(session_id), "level": profile["level"]})
    return pair


async def _access_token(rt: IdentityRuntime, conn: asyncpg.Connection, *, resident_id: uuid.UUID,
                        session_id: uuid.UUID, level: int, auth_time: dt.datetime) -> str:
    roles = [r["role"] + (":" + r["scope"] if r["scope"] else "") for r in await store.active_roles(conn, resident_id)]
    access, _, _ = issue_access_token(
        rt.keys, issuer=rt.token_issuer, sub=str(resident_id), ttl=rt.settings.access_token_ttl,
        sid=str(session_id), roles=roles, level=level, auth_time=int(auth_time.timestamp()),
    )
    return access


async def _issue_pair(rt: IdentityRuntime, conn: asyncpg.Connection, *, resident_id: uuid.UUID,
                      session_id: uuid.UUID, level: int, auth_time: dt.datetime) -> TokenPair:
    access = await _access_token(rt, conn, resident_id=resident_id, session_id=session_id, level=level,
                                 auth_time=auth_time)
    refresh = secrets.token_urlsafe(32)
    await store.insert_refresh_token(conn, token_hash=token_hash(refresh), session_id=session_id,
                                     ttl_seconds=rt.settings.refresh_token_ttl)
    return TokenPair(access_token=access, token_type="Bearer", expires_in=rt.settings.access_token_ttl,
                     refresh_token=refresh, refresh_expires_in=rt.settings.refresh_token_ttl,
                     session_id=str(session_id))


# A family rotated more often than this within one grace is not a phone retrying.
MAX_RETRY_CHAIN = 32


def _successor_context(spent_hash: bytes) -> bytes:
    return b"refresh_successor:" + spent_hash


async def _live_successor(rt: IdentityRuntime, conn: asyncpg.Connection,
                          spent: asyncpg.Record) -> tuple[str, asyncpg.Record] | None:
    """The family's live refresh token reached from a spent one, with its row; None if there is none."""
    row = spent
    for _ in range(MAX_RETRY_CHAIN):
        if row["replaced_by"] is None or row["successor_enc"] is None:
            return None
        successor = await store.get_refresh_token(conn, row["replaced_by"])
        if successor is None or successor["expired"]:
            return None
        if successor["spent_at"] is None:
            token = rt.vault.decrypt(row["successor_enc"], context=_successor_context(row["token_hash"]))
            return token.decode(), successor
        row = successor
    return None


async def refresh(rt: IdentityRuntime, conn: asyncpg.Connection, redis, *, refresh_token: str,
                  client_ip: str) -> TokenPair:
    """Rotate: the presented token is spent and a new pair issued.

    Within the grace after a token was spent it may come again (a phone's parallel refreshes, a
    retry whose answer was lost): each such use gets the family's live refresh token, the same one
    every time, with a fresh access token. A spent token after the grace is a replay (or a stolen
    copy): the whole session is revoked. Every use of a family waits for the session's row lock,
    so parallel refreshes are decided one after another.
    """
    await ratelimit.hit(redis, "refresh", client_ip, rt.settings.rate_refresh)
    presented = token_hash(refresh_token)
    theft = False
    async with conn.transaction():
        locked = await store.lock_session_of_refresh_token(conn, presented)
        row = await store.get_refresh_token(conn, presented) if locked else None
        if row is None or row["expired"] or row["revoked_at"] is not None:
            raise NotAuthenticated("the refresh token is not valid; sign in again")
        who = {"resident_id": row["resident_id"], "session_id": row["session_id"], "level": row["identity_level"],
               "auth_time": row["auth_time"]}
        if row["spent_at"] is None:
            pair = await _issue_pair(rt, conn, **who)
            await store.spend_refresh_token(
                conn, presented, token_hash(pair.refresh_token),
                rt.vault.encrypt(pair.refresh_token.encode(), context=_successor_context(presented)),
                session_id=row["session_id"], grace_seconds=rt.settings.refresh_grace,
            )
        else:
            within_grace = row["spent_seconds_ago"] <= rt.settings.refresh_grace
            live = await _live_successor(rt, conn, row) if within_grace else None
            if live is None:
                await store.revoke_session(conn, row["session_id"], "refresh token reused")
                await _session_ended(rt, conn, row["session_id"])
                theft = True
            else:
                token, successor = live
                pair = TokenPair(access_token=await _access_token(rt, conn, **who), token_type="Bearer",
                                 expires_in=rt.settings.access_token_ttl, refresh_token=token,
                                 refresh_expires_in=successor["expires_in"], session_id=str(row["session_id"]))
        if not theft:
            await store.touch_session(conn, row["session_id"])
    if theft:
        await rt.revoked.revoke(str(row["session_id"]))
        log.warning("refresh token reused: session revoked", extra={"session": str(row["session_id"])})
        raise NotAuthenticated("this refresh token was already used; the session has been ended for safety")
    return pair


# ---- sessions ----------------------------------------------------------------------------------------


def _resident_id(principal: Principal) -> uuid.UUID:
    if principal.kind != "resident":
        raise Forbidden("this is for residents")
    return uuid.UUID(principal.sub)


async def end_session(rt: IdentityRuntime, conn: asyncpg.Connection, principal: Principal,
                      session_id: uuid.UUID | None = None) -> None:
    """Logout (the current session) or revoke one of the resident's own sessions."""
    resident_id = _resident_id(principal)
    target = session_id or uuid.UUID(principal.session_id)
    async with conn.transaction():
        if not await store.revoke_session(conn, target, "logout" if session_id is None else "revoked by resident",
                                          resident_id):
            raise NotFound("no such session")
        await _session_ended(rt, conn, target)
    await rt.revoked.revoke(str(target))


async def _session_ended(rt: IdentityRuntime, conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    """Tell the modules (e.g. notifications stops pushing to that phone), in the same transaction."""
    for hook in rt.extra.get("session_end_hooks", ()):
        await hook(conn, session_id)


async def list_sessions(conn: asyncpg.Connection, principal: Principal) -> list[SessionView]:
    rows = await store.live_sessions(conn, _resident_id(principal))
    return [
        SessionView(id=str(r["id"]), device_name=r["device_name"], platform=r["platform"],
                    identity_level=r["identity_level"], created_at=r["created_at"], last_used_at=r["last_used_at"],
                    current=str(r["id"]) == principal.session_id)
        for r in rows
    ]


async def me(rt: IdentityRuntime, conn: asyncpg.Connection, principal: Principal) -> Account:
    resident = await store.get_resident(conn, _resident_id(principal))
    if resident is None:
        raise NotFound("no such resident")
    number = rt.vault.decrypt(resident["personal_id_enc"], context=b"personal_id").decode()
    roles = [RoleView(role=r["role"], scope=r["scope"]) for r in await store.active_roles(conn, resident["id"])]
    return Account(id=str(resident["id"]), personal_id=mask_personal_id(number), full_name=resident["full_name"],
              birth_date=resident["birth_date"], sex=resident["sex"], identity_level=resident["identity_level"],
              auth_time=resident["auth_time"], roles=roles, session_id=principal.session_id)


# ---- roles -------------------------------------------------------------------------------------------


async def resident_for_personal_id(rt: IdentityRuntime, conn: asyncpg.Connection, personal_id: str, *,
                                   create: bool = False) -> asyncpg.Record | None:
    try:
        parsed = parse_personal_id(personal_id)
    except PersonalIdError as exc:
        raise InvalidInput.field("personal_id", exc.reason) from None
    hashed = rt.vault.lookup_hash(parsed.number, context=b"personal_id")
    found = await store.find_resident_by_hash(conn, hashed)
    if found is None and create:
        found = await store.insert_bare_resident(
            conn, personal_id_hash=hashed,
            personal_id_enc=rt.vault.encrypt(parsed.number.encode(), context=b"personal_id"),
        )
    return found


async def lookup_resident(rt: IdentityRuntime, conn: asyncpg.Connection, personal_id: str) -> ResidentRef:
    found = await resident_for_personal_id(rt, conn, personal_id)
    if found is None:
        raise NotFound("no resident with this personal ID number")
    number = rt.vault.decrypt(found["personal_id_enc"], context=b"personal_id").decode()
    return ResidentRef(resident_id=str(found["id"]), full_name=found["full_name"],
                       personal_id=mask_personal_id(number))


def _check_scope(rt: IdentityRuntime, role: str, scope: str) -> None:
    declared = REGISTRY.roles.get(role)
    if declared is None:
        raise UnknownReference.field("role", f"unknown role {role!r}; known: {', '.join(sorted(REGISTRY.roles))}")
    if declared.scope == "none":
        if scope:
            raise InvalidInput.field("scope", f"the {role} role has no scope")
        return
    if not scope:
        raise InvalidInput.field("scope", f"the {role} role needs a scope: {declared.scope_doc}")
    if declared.scope == "unit":
        if rt.units.get(scope) is None:
            raise UnknownReference.field("scope", f"unknown organisational unit {scope!r}")
    elif not SCOPE.match(scope):
        raise InvalidInput.field("scope", "a scope is 2-64 lowercase letters, digits, '.', '_' or '-'")


def _grant_view(row) -> Grant:
    return Grant(id=row["id"], resident_id=str(row["resident_id"]), role=row["role"], scope=row["scope"],
                 granted_by=row["granted_by"], granted_at=row["granted_at"], revoked_at=row["revoked_at"])


async def grant_role(rt: IdentityRuntime, conn: asyncpg.Connection, *, actor: str, resident_id: uuid.UUID,
                     request: GrantRequest, request_id: str | None) -> tuple[Grant, bool]:
    """Grant a role (idempotent: granting an active role again returns it); every grant is audited."""
    _check_scope(rt, request.role, request.scope)
    async with conn.transaction():
        if await store.get_resident(conn, resident_id) is None:
            raise NotFound("no such resident")
        existing = await store.find_active_grant(conn, resident_id, request.role, request.scope)
        if existing is not None:
            return _grant_view(existing), False
        row = await store.insert_grant(conn, resident_id=resident_id, role=request.role, scope=request.scope,
                                       actor=actor)
        await store.insert_role_audit(conn, actor=actor, action="grant", grant=row, request_id=request_id)
    return _grant_view(row), True


async def revoke_role(conn: asyncpg.Connection, *, actor: str, grant_id: int, request_id: str | None) -> Grant:
    async with conn.transaction():
        row = await store.revoke_grant(conn, grant_id, actor)
        if row is None:
            raise NotFound("no such active grant")
        await store.insert_role_audit(conn, actor=actor, action="revoke", grant=row, request_id=request_id)
    return _grant_view(row)


async def list_grants(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[Grant]:
    return [_grant_view(r) for r in await store.list_grants(conn, resident_id)]


async def role_audit(conn: asyncpg.Connection, *, resident_id: uuid.UUID | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
    """The latest grants and revocations (of one resident, or everyone's), newest first; for admins' eyes."""
    return [dict(r) for r in await store.role_audit(conn, resident_id=resident_id, limit=limit)]


def actor_of(principal: Principal) -> str:
    return f"resident:{principal.sub}" if principal.kind == "resident" else f"client:{principal.client_id}"


# ---- authorization rules used by guards and by every module ------------------------------------------------


def require_level(principal: Principal, level: int, max_auth_age: int | None) -> None:
    """Sensitive actions need identity level 2 and, optionally, a recent authentication."""
    if principal.kind != "resident":
        return
    too_old = max_auth_age is not None and time.time() - principal.auth_time > max_auth_age
    if principal.level < level or too_old:
        reason = (f"this action needs identity level {level}" if principal.level < level
                  else f"this action needs a sign-in within the last {max_auth_age} seconds")
        raise StepUpRequired(reason, required_level=level, max_auth_age=max_auth_age,
                             current_level=principal.level)


def covers_unit(rt: IdentityRuntime, principal: Principal, role: str, unit_code: str) -> bool:
    """True when the principal holds `role` for `unit_code` or for a unit that contains it."""
    return any(rt.units.contains(scope, unit_code) for scope in principal.scopes_of(role))


async def holders_of(conn: asyncpg.Connection, role: str, unit_codes: list[str]) -> list[uuid.UUID]:
    """Residents holding `role` scoped exactly to one of `unit_codes` (e.g. the heads of a ward)."""
    return await store.role_holders(conn, role, unit_codes)


async def holds_role_for(rt: IdentityRuntime, conn: asyncpg.Connection, resident_id: uuid.UUID, role: str,
                         unit_code: str) -> bool:
    """True when the resident holds `role` now (in the database, not a token) for the unit or a parent."""
    return any(r["role"] == role and rt.units.contains(r["scope"], unit_code)
               for r in await store.active_roles(conn, resident_id))


async def current_scopes(conn: asyncpg.Connection, principal: Principal, role: str) -> list[str]:
    """The scopes of `role` the caller holds now, in the database rather than in its token: a resident's grants
    not revoked, an enabled machine client's roles. For checks a revocation must reach at once (an access token
    lives for minutes): one indexed query."""
    if principal.kind == "resident":
        return [r["scope"] for r in await store.active_roles(conn, uuid.UUID(principal.sub)) if r["role"] == role]
    client = await store.get_client(conn, principal.client_id or "")
    if client is None:
        return []
    return [scope for name, _, scope in (entry.partition(":") for entry in client["roles"]) if name == role]


async def demo_resident(conn: asyncpg.Connection, *, key: str, full_name: str) -> uuid.UUID:
    """A resident who never signs in, for demo data (`ihanoi seed`): no personal ID number is stored."""
    row = await store.insert_bare_resident(conn, personal_id_hash=hashlib.sha256(f"demo:{key}".encode()).digest(),
                                           personal_id_enc=b"")
    await store.set_full_name(conn, row["id"], full_name)
    return row["id"]


async def profile_of(conn: asyncpg.Connection, resident_id: uuid.UUID) -> Profile | None:
    """Birth date and sex as VNeID verified them (age-based fares, priority groups); None if unknown."""
    row = await store.resident_profile(conn, resident_id)
    if row is None:
        return None
    return Profile(birth_date=row["birth_date"], sex=row["sex"], identity_level=row["identity_level"])


async def names_of(conn: asyncpg.Connection, resident_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """Full names as VNeID gave them at the last sign-in; for showing who reported or answered."""
    return await store.resident_names(conn, resident_ids)


# ---- machine clients ---------------------------------------------------------------------------------------


async def machine_client(conn: asyncpg.Connection, client_id: str) -> tuple[str, tuple[str, ...]] | None:
    """An enabled machine client's (name, roles), for a module that lets residents pick an app; None if unknown."""
    row = await store.get_client(conn, client_id)
    return None if row is None else (row["name"], tuple(row["roles"]))


async def add_client(conn: asyncpg.Connection, *, client_id: str, name: str, roles: list[str], scope: str,
                     public_jwk: dict[str, Any]) -> None:
    for role in roles:
        if not CLIENT_ROLE.match(role):
            raise InvalidInput.field("roles", f"bad role {role!r}")
    if public_jwk.get("kty") not in CLIENT_ALGORITHMS.values() or "d" in public_jwk:
        raise InvalidInput.field("public_key", "a public EC, OKP or RSA key is needed (never a private one)")
    try:
        await store.insert_client(conn, client_id=client_id, name=name, roles=roles, scope=scope,
                                  public_jwk=public_jwk)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"client {client_id!r} exists already") from None
    except asyncpg.CheckViolationError:
        raise InvalidInput.field("client_id", "3-64 lowercase letters, digits, '.', '_' or '-'") from None


class InvalidClient(NotAuthenticated):
    slug = "unauthorized"


async def client_token(rt: IdentityRuntime, conn: asyncpg.Connection, redis, form: dict[str, str], *,
                       client_ip: str) -> ClientToken:
    """OAuth client credentials with private_key_jwt (RFC 7523): a short token with the client's roles.

    Failures are counted by the caller's address (before any work, a spent budget is refused at
    once) and verified successes by client: a claim nobody has verified, such as the `iss` of a
    forged assertion, never spends a real client's budget.
    """
    rate = rt.settings.rate_client_token
    await ratelimit.check(redis, "client-token-failed", client_ip, rate, what="failed client-token requests")
    try:
        client, claims = await _verified_client(rt, conn, redis, form)
    except (InvalidClient, InvalidInput):
        await ratelimit.hit(redis, "client-token-failed", client_ip, rate, what="failed client-token requests")
        raise
    client_id = client["id"]
    await ratelimit.hit(redis, "client-token", client_id, rate)
    ttl = rt.settings.client_token_ttl
    token, _, _ = issue_access_token(rt.keys, issuer=rt.token_issuer, sub=f"client:{client_id}", ttl=ttl,
                                     client_id=client_id, roles=list(client["roles"]), scope=client["scope"])
    return ClientToken(access_token=token, token_type="Bearer", expires_in=ttl, scope=client["scope"])


async def _verified_client(rt: IdentityRuntime, conn: asyncpg.Connection, redis,
                           form: dict[str, str]) -> tuple[asyncpg.Record, dict[str, Any]]:
    """The client whose key signed the assertion, and the assertion's claims; its `jti` is spent."""
    def refuse(reason: str) -> InvalidClient:
        return InvalidClient(reason, error="invalid_client")

    if form.get("grant_type") != "client_credentials":
        raise InvalidInput("grant_type must be client_credentials", error="unsupported_grant_type",
                           errors=None)
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE or not form.get("client_assertion"):
        raise refuse("a private_key_jwt client assertion is required")
    assertion = form["client_assertion"]
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise refuse("the client assertion is malformed") from None
    client_id = str(unverified.get("iss", ""))
    client = await store.get_client(conn, client_id) if client_id else None
    if client is None:
        raise refuse("unknown client")
    alg = header.get("alg")
    jwk = client["public_jwk"]
    if alg not in CLIENT_ALGORITHMS or CLIENT_ALGORITHMS[alg] != jwk.get("kty"):
        raise refuse("the assertion's algorithm does not match the client's key")
    from app.identity.oidc import _public_key

    try:
        claims = jwt.decode(assertion, _public_key(jwk), algorithms=[alg], audience=[rt.token_endpoint,
                            rt.token_issuer], issuer=client_id, leeway=30,
                            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})
    except jwt.PyJWTError as exc:
        raise refuse(f"the client assertion is not valid ({exc})") from None
    if claims["sub"] != client_id:
        raise refuse("the assertion's sub must be the client id")
    if claims["exp"] - claims["iat"] > CLIENT_ASSERTION_MAX_LIFETIME:
        raise refuse(f"a client assertion may live at most {CLIENT_ASSERTION_MAX_LIFETIME} seconds")
    if claims["iat"] > time.time() + 30:
        raise refuse("the client assertion is not valid yet")
    remaining = max(int(claims["exp"] - time.time()) + 60, 60)
    if not await redis.client.set(redis.key("client-jti", client_id, claims["jti"]), "1", nx=True, ex=remaining):
        raise refuse("this client assertion was already used")  # a replay is a failure, not the client's success
    return client, claims
