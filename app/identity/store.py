"""Every identity query, plain SQL through asyncpg."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

# ---- residents ----------------------------------------------------------------------------------


async def find_resident_by_hash(conn: asyncpg.Connection, personal_id_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM resident WHERE personal_id_hash = $1", personal_id_hash)


async def get_resident(conn: asyncpg.Connection, resident_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM resident WHERE id = $1", resident_id)


async def resident_profile(conn: asyncpg.Connection, resident_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT birth_date, sex, identity_level FROM resident WHERE id = $1", resident_id)


async def insert_bare_resident(conn: asyncpg.Connection, *, personal_id_hash: bytes,
                               personal_id_enc: bytes) -> asyncpg.Record:
    """A resident known only by number (a role granted before the first login)."""
    return await conn.fetchrow(
        "INSERT INTO resident (id, personal_id_hash, personal_id_enc) VALUES ($1, $2, $3) "
        "ON CONFLICT (personal_id_hash) DO UPDATE SET updated_at = resident.updated_at RETURNING *",
        uuid.uuid4(), personal_id_hash, personal_id_enc,
    )


async def upsert_resident_from_login(conn: asyncpg.Connection, *, personal_id_hash: bytes, personal_id_enc: bytes,
                                     idp_subject: str, full_name: str, birth_date, sex: str, identity_level: int,
                                     auth_time) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO resident (id, personal_id_hash, personal_id_enc, idp_subject, full_name, birth_date, sex,
                              identity_level, auth_time)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (personal_id_hash) DO UPDATE SET
            idp_subject = EXCLUDED.idp_subject, full_name = EXCLUDED.full_name, birth_date = EXCLUDED.birth_date,
            sex = EXCLUDED.sex, identity_level = EXCLUDED.identity_level, auth_time = EXCLUDED.auth_time,
            updated_at = now()
        RETURNING *
        """,
        uuid.uuid4(), personal_id_hash, personal_id_enc, idp_subject, full_name, birth_date, sex,
        identity_level, auth_time,
    )


# ---- sessions and refresh tokens ---------------------------------------------------------------------


async def set_full_name(conn: asyncpg.Connection, resident_id: uuid.UUID, full_name: str) -> None:
    await conn.execute("UPDATE resident SET full_name = $2 WHERE id = $1", resident_id, full_name)


async def insert_session(conn: asyncpg.Connection, *, resident_id: uuid.UUID, device_name: str, platform: str,
                         identity_level: int, auth_time) -> uuid.UUID:
    session_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO session (id, resident_id, device_name, platform, identity_level, auth_time) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        session_id, resident_id, device_name, platform, identity_level, auth_time,
    )
    return session_id


async def insert_refresh_token(conn: asyncpg.Connection, *, token_hash: bytes, session_id: uuid.UUID,
                               ttl_seconds: int) -> None:
    await conn.execute(
        "INSERT INTO refresh_token (token_hash, session_id, expires_at) "
        "VALUES ($1, $2, now() + make_interval(secs => $3))",
        token_hash, session_id, ttl_seconds,
    )


async def lock_session_of_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> uuid.UUID | None:
    """Lock the session the token belongs to: every use of a token family waits here, one at a time.

    Read the tokens in a later statement: under READ COMMITTED it sees what the lock holder committed.
    """
    return await conn.fetchval(
        "SELECT s.id FROM session s JOIN refresh_token t ON t.session_id = s.id WHERE t.token_hash = $1 "
        "FOR UPDATE OF s",
        token_hash,
    )


async def get_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """The token with its session (call with the session locked)."""
    return await conn.fetchrow(
        """
        SELECT t.token_hash, t.session_id, t.spent_at, t.replaced_by, t.successor_enc,
               t.expires_at < clock_timestamp() AS expired,
               greatest(0, extract(epoch FROM t.expires_at - clock_timestamp()))::int AS expires_in,
               -- wall-clock time, not the transaction's start: the grace is measured in real seconds
               extract(epoch FROM clock_timestamp() - t.spent_at) AS spent_seconds_ago,
               s.resident_id, s.revoked_at, s.identity_level, s.auth_time
        FROM refresh_token t JOIN session s ON s.id = t.session_id
        WHERE t.token_hash = $1
        """,
        token_hash,
    )


async def spend_refresh_token(conn: asyncpg.Connection, token_hash: bytes, replaced_by: bytes,
                              successor_enc: bytes, *, session_id: uuid.UUID, grace_seconds: int) -> None:
    await conn.execute(
        "UPDATE refresh_token SET spent_at = clock_timestamp(), replaced_by = $2, successor_enc = $3 "
        "WHERE token_hash = $1",
        token_hash, replaced_by, successor_enc,
    )
    # successors whose grace has passed are never handed out again: do not keep them
    await conn.execute(
        "UPDATE refresh_token SET successor_enc = NULL WHERE session_id = $1 AND successor_enc IS NOT NULL "
        "AND spent_at < clock_timestamp() - make_interval(secs => $2)",
        session_id, grace_seconds,
    )


async def touch_session(conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    await conn.execute("UPDATE session SET last_used_at = now() WHERE id = $1", session_id)


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, reason: str,
                         resident_id: uuid.UUID | None = None) -> bool:
    """Revoke a live session (of this resident when given); False if there was none."""
    row = await conn.fetchrow(
        "UPDATE session SET revoked_at = now(), revoked_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR resident_id = $3) RETURNING id",
        session_id, reason, resident_id,
    )
    return row is not None


async def sessions_revoked_within(conn: asyncpg.Connection, seconds: float) -> list[tuple[uuid.UUID, float]]:
    """(id, revocation time in epoch seconds) of the sessions revoked in the last `seconds`."""
    rows = await conn.fetch(
        "SELECT id, extract(epoch FROM revoked_at)::float8 AS at FROM session "
        "WHERE revoked_at > now() - make_interval(secs => $1)",
        seconds,
    )
    return [(r["id"], r["at"]) for r in rows]


async def live_sessions(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, device_name, platform, identity_level, created_at, last_used_at FROM session "
        "WHERE resident_id = $1 AND revoked_at IS NULL ORDER BY last_used_at DESC",
        resident_id,
    )


async def active_roles(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT role, scope FROM role_grant WHERE resident_id = $1 AND revoked_at IS NULL ORDER BY role, scope",
        resident_id,
    )


async def role_holders(conn: asyncpg.Connection, role: str, scopes: list[str]) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT DISTINCT resident_id FROM role_grant WHERE role = $1 AND scope = ANY($2::text[]) "
        "AND revoked_at IS NULL ORDER BY resident_id", role, scopes)
    return [r["resident_id"] for r in rows]


async def resident_names(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    rows = await conn.fetch("SELECT id, full_name FROM resident WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: r["full_name"] for r in rows}


async def find_active_grant(conn: asyncpg.Connection, resident_id: uuid.UUID, role: str,
                            scope: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM role_grant WHERE resident_id = $1 AND role = $2 AND scope = $3 AND revoked_at IS NULL",
        resident_id, role, scope,
    )


async def insert_grant(conn: asyncpg.Connection, *, resident_id: uuid.UUID, role: str, scope: str,
                       actor: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO role_grant (resident_id, role, scope, granted_by) VALUES ($1, $2, $3, $4) RETURNING *",
        resident_id, role, scope, actor,
    )


async def revoke_grant(conn: asyncpg.Connection, grant_id: int, actor: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE role_grant SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING *",
        grant_id, actor,
    )


async def list_grants(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM role_grant WHERE resident_id = $1 ORDER BY id", resident_id)


async def insert_role_audit(conn: asyncpg.Connection, *, actor: str, action: str, grant: Any,
                            request_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO role_audit (actor, action, resident_id, role, scope, grant_id, request_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        actor, action, grant["resident_id"], grant["role"], grant["scope"], grant["id"], request_id,
    )


# ---- machine clients --------------------------------------------------------------------------------


async def insert_client(conn: asyncpg.Connection, *, client_id: str, name: str, roles: list[str], scope: str,
                        public_jwk: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO machine_client (id, name, roles, scope, public_jwk) VALUES ($1, $2, $3, $4, $5)",
        client_id, name, roles, scope, public_jwk,
    )


async def get_client(conn: asyncpg.Connection, client_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM machine_client WHERE id = $1 AND disabled_at IS NULL", client_id)


async def role_audit(conn: asyncpg.Connection, *, resident_id: uuid.UUID | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT a.id, a.at, a.actor, a.action, a.resident_id, r.full_name, a.role, a.scope, a.grant_id, a.request_id "
        "FROM role_audit a LEFT JOIN resident r ON r.id = a.resident_id "
        "WHERE $1::uuid IS NULL OR a.resident_id = $1 ORDER BY a.id DESC LIMIT $2", resident_id, limit)
