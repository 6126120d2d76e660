"""Health SQL: facilities, patients, FHIR resources (sealed at rest), consents, the access log chain.

Functions other parts of the module may call (names are stable; new ones are added, none renamed):

    cipher = health.crypto.cipher_of(state.settings)        # the health key's cipher, cached per process

    # patients (a resident's record; FHIR Patient id == health_patient.id)
    await patient(conn, patient_id) -> Record | None         # id, resident_id, bhyt_hash, created_at, ...
    await patient_of_resident(conn, resident_id) -> Record | None
    await ensure_patient(conn, cipher, resident_id, bhyt=None) -> Record   # creates it, or records the BHYT
    bhyt_of(cipher, patient_row) -> str | None                # the BHYT card number, decrypted (not async)

    # resources: StoredResource has resource_type, id, patient_id, facility_id, version, effective_at,
    # last_updated, category, status, encounter_id and `resource` (the FHIR JSON as a dict, with id and meta)
    await upsert_resource(conn, cipher, resource_type=, patient_id=, facility_id=, source_key=, resource=,
                          index=Index(...)) -> (StoredResource, created: bool)
        # the same (facility, type, source_key = identifier "system|value") updates, never duplicates
    await put_resource(conn, cipher, resource_type=, resource_id=, patient_id=, facility_id=, resource=,
                       index=Index(...)) -> StoredResource   # by id (the Patient resource: id = patient id)
    await write_resources(conn, cipher, facility_id, [Write(...)], at) -> {id: (version, last_updated)}  # batched
    await get_resource(conn, cipher, resource_type, resource_id) -> StoredResource | None
    await resource_by_source(conn, cipher, resource_type, facility_id, source_key) -> Record(id, patient_id) | None
    await resources_by_source(conn, cipher, facility_id, [(type, source_key)]) -> {(type, source_key): id}
    await find_resources(conn, cipher, Query(patient_id=..., types=(...), date_from=, date_to=, category=(...),
                         codes=(...), updated_from=, updated_to=, encounter_id=), limit=, after=(effective_at, id),
                         newest_first=True) -> list[StoredResource]
    await patient_resources(conn, cipher, patient_id, types=None, limit=None) -> list[StoredResource]  # newest first

    # the access log (hash chain per patient); appending locks the patient row (in a transaction)
    await append_access(conn, cipher, patient_id, actor=, actor_kind=, facility_id=, action=, purpose=, what=,
                        reason=None) -> Record
    await access_log(conn, patient_id, limit=, before_seq=None) -> list[Record]   # newest first
    await verify_chain(conn, cipher, patient_id) -> int | None   # the first broken seq, None when intact

    # facilities
    await facility_by_code(conn, code) / facility(conn, facility_id) -> Record | None; facilities(conn)

    # consent (read by the service's `may_read`)
    await live_consent(conn, patient_id, facility_id, clinician_id, now) -> Record | None
    await live_emergency(conn, patient_id, facility_id, now) -> Record | None
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from health.crypto import HealthCipher

Record = asyncpg.Record

GENESIS = b"\x00" * 32


def _context(resource_type: str, resource_id: uuid.UUID) -> bytes:
    return f"{resource_type}/{resource_id}".encode()


def code_hashes(cipher: HealthCipher, codings: Sequence[tuple[str | None, str]]) -> list[bytes]:
    """Keyed hashes a `code` search matches: "system|code" and "|code" (any system) for each coding."""
    found: list[bytes] = []
    for system, code in codings:
        if system:
            found.append(cipher.lookup(f"{system}|{code}", context=b"code"))
        found.append(cipher.lookup(f"|{code}", context=b"code"))
    return list(dict.fromkeys(found))


def source_hash(cipher: HealthCipher, source_key: str) -> bytes:
    return cipher.lookup(source_key, context=b"source")


def bhyt_hash(cipher: HealthCipher, bhyt: str) -> bytes:
    return cipher.lookup(bhyt, context=b"bhyt")


# ---- facilities --------------------------------------------------------------------------------------------


async def insert_facility(conn: asyncpg.Connection, *, code: str, name: str, kind: str, bhyt_code: str) -> Record:
    return await conn.fetchrow(
        "INSERT INTO health_facility (code, name, kind, bhyt_code) VALUES ($1, $2, $3, $4) RETURNING *",
        code, name, kind, bhyt_code)


async def facility_by_code(conn: asyncpg.Connection, code: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_facility WHERE code = $1", code)


async def facility(conn: asyncpg.Connection, facility_id: int) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_facility WHERE id = $1", facility_id)


async def facilities(conn: asyncpg.Connection) -> list[Record]:
    return await conn.fetch("SELECT * FROM health_facility ORDER BY code")


# ---- patients ----------------------------------------------------------------------------------------------


async def patient(conn: asyncpg.Connection, patient_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_patient WHERE id = $1", patient_id)


async def patient_of_resident(conn: asyncpg.Connection, resident_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_patient WHERE resident_id = $1", resident_id)


async def patient_by_bhyt(conn: asyncpg.Connection, cipher: HealthCipher, bhyt: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM health_patient WHERE bhyt_hash = $1", bhyt_hash(cipher, bhyt))


async def ensure_patient(conn: asyncpg.Connection, cipher: HealthCipher, resident_id: uuid.UUID,
                         bhyt: str | None = None) -> Record:
    """The resident's record, created on first use; a BHYT number given is recorded (a newer card replaces it)."""
    found = await conn.fetchrow(
        """INSERT INTO health_patient (id, resident_id) VALUES ($1, $2)
           ON CONFLICT (resident_id) DO UPDATE SET resident_id = EXCLUDED.resident_id RETURNING *""",
        uuid.uuid4(), resident_id)
    if bhyt is not None:
        hashed = bhyt_hash(cipher, bhyt)
        if found["bhyt_hash"] != hashed:
            found = await conn.fetchrow(
                "UPDATE health_patient SET bhyt_hash = $2, bhyt_enc = $3, updated_at = now() WHERE id = $1 RETURNING *",
                found["id"], hashed, cipher.seal(bhyt.encode(), context=b"bhyt:" + found["id"].bytes))
    return found


def bhyt_of(cipher: HealthCipher, row: Record) -> str | None:
    if row["bhyt_enc"] is None:
        return None
    return cipher.open(bytes(row["bhyt_enc"]), context=b"bhyt:" + row["id"].bytes).decode()


# ---- resources ---------------------------------------------------------------------------------------------


class Index(msgspec.Struct, frozen=True, kw_only=True):
    """What search needs of a resource, beside its sealed content."""

    effective_at: dt.datetime
    category: tuple[str, ...] = ()
    codes: tuple[tuple[str | None, str], ...] = ()  # (system, code) of each coding
    status: str | None = None
    encounter_id: uuid.UUID | None = None


class StoredResource(msgspec.Struct, frozen=True, kw_only=True):
    resource_type: str
    id: uuid.UUID
    patient_id: uuid.UUID
    facility_id: int | None
    version: int
    effective_at: dt.datetime
    last_updated: dt.datetime
    category: tuple[str, ...]
    status: str | None
    encounter_id: uuid.UUID | None
    resource: dict


class Query(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: uuid.UUID | None = None
    types: tuple[str, ...] | None = None
    date_from: dt.datetime | None = None      # inclusive
    date_to: dt.datetime | None = None        # exclusive
    category: tuple[str, ...] = ()            # any of
    codes: tuple[bytes, ...] = ()             # any of (keyed hashes, see `code_hashes`)
    updated_from: dt.datetime | None = None   # inclusive
    updated_to: dt.datetime | None = None     # exclusive
    encounter_id: uuid.UUID | None = None
    facility_id: int | None = None


_COLUMNS = ("resource_type, id, patient_id, facility_id, version, effective_at, last_updated, category, status, "
            "encounter_id, content")


def _stored(cipher: HealthCipher, row: Record) -> StoredResource:
    resource = cipher.open_json(row["content"], context=_context(row["resource_type"], row["id"]))
    resource["id"] = str(row["id"])
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(row["version"])
    meta["lastUpdated"] = row["last_updated"].isoformat()
    resource["meta"] = meta
    return StoredResource(
        resource_type=row["resource_type"], id=row["id"], patient_id=row["patient_id"], facility_id=row["facility_id"],
        version=row["version"], effective_at=row["effective_at"], last_updated=row["last_updated"],
        category=tuple(row["category"]), status=row["status"], encounter_id=row["encounter_id"], resource=resource)


def _sealed(cipher: HealthCipher, resource_type: str, resource_id: uuid.UUID, resource: dict) -> bytes:
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    body["resourceType"] = resource_type
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return cipher.seal_json(body, context=_context(resource_type, resource_id))


async def upsert_resource(conn: asyncpg.Connection, cipher: HealthCipher, *, resource_type: str,
                          patient_id: uuid.UUID, facility_id: int | None, source_key: str, resource: dict,
                          index: Index, new_id: uuid.UUID | None = None) -> tuple[StoredResource, bool]:
    """Insert (as `new_id` when given), or update the resource the same facility sent before under the same
    identifier."""
    hashed = source_hash(cipher, source_key)
    codes = code_hashes(cipher, index.codes)
    for _ in range(2):  # a concurrent first insert of the same identifier makes the second pass an update
        existing = await conn.fetchrow(
            """SELECT id, patient_id FROM health_resource
                WHERE resource_type = $1 AND facility_id IS NOT DISTINCT FROM $2 AND source_hash = $3 FOR UPDATE""",
            resource_type, facility_id, hashed)
        if existing is not None:
            row = await conn.fetchrow(
                f"""UPDATE health_resource SET patient_id = $3, version = version + 1, effective_at = $4,
                           category = $5, codes = $6, status = $7, encounter_id = $8, content = $9,
                           last_updated = clock_timestamp()
                     WHERE resource_type = $1 AND id = $2 RETURNING {_COLUMNS}""",
                resource_type, existing["id"], patient_id, index.effective_at, list(index.category), codes,
                index.status, index.encounter_id, _sealed(cipher, resource_type, existing["id"], resource))
            return _stored(cipher, row), False
        new_id = new_id or uuid.uuid4()
        row = await conn.fetchrow(
            f"""INSERT INTO health_resource (resource_type, id, patient_id, facility_id, source_hash, effective_at,
                                             category, codes, status, encounter_id, content, last_updated)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, clock_timestamp())
                ON CONFLICT (resource_type, facility_id, source_hash) DO NOTHING RETURNING {_COLUMNS}""",
            resource_type, new_id, patient_id, facility_id, hashed, index.effective_at, list(index.category), codes,
            index.status, index.encounter_id, _sealed(cipher, resource_type, new_id, resource))
        if row is not None:
            return _stored(cipher, row), True
    raise RuntimeError("resource upsert lost twice to concurrent writers")


class Write(msgspec.Struct, frozen=True, kw_only=True):
    """One resource of a facility's transaction, its id already decided (`existed`: it is an update)."""

    resource_type: str
    id: uuid.UUID
    patient_id: uuid.UUID
    source_key: str
    resource: dict
    index: Index
    existed: bool


class ConcurrentWrite(RuntimeError):
    """Another transaction wrote one of the same identifiers first: sending again updates it."""


async def write_resources(conn: asyncpg.Connection, cipher: HealthCipher, facility_id: int | None,
                          writes: Sequence[Write], at: dt.datetime) -> dict[uuid.UUID, tuple[int, dt.datetime]]:
    """Many resources of one facility in a few round trips (pipelined inserts and updates, one read-back):
    the version and last_updated of each id. The same identifiers update, never duplicate."""
    inserts, updates = [], []
    for w in writes:
        content = _sealed(cipher, w.resource_type, w.id, w.resource)
        codes = code_hashes(cipher, w.index.codes)
        if w.existed:
            updates.append((w.resource_type, w.id, facility_id, w.patient_id, w.index.effective_at,
                            list(w.index.category), codes, w.index.status, w.index.encounter_id, content, at))
        else:
            inserts.append((w.resource_type, w.id, w.patient_id, facility_id, source_hash(cipher, w.source_key),
                            w.index.effective_at, list(w.index.category), codes, w.index.status, w.index.encounter_id,
                            content, at))
    if inserts:
        await conn.executemany(
            """INSERT INTO health_resource (resource_type, id, patient_id, facility_id, source_hash, effective_at,
                                            category, codes, status, encounter_id, content, last_updated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (resource_type, facility_id, source_hash) DO NOTHING""", inserts)
    if updates:
        await conn.executemany(
            """UPDATE health_resource SET patient_id = $4, version = version + 1, effective_at = $5, category = $6,
                      codes = $7, status = $8, encounter_id = $9, content = $10, last_updated = $11
                WHERE resource_type = $1 AND id = $2 AND facility_id IS NOT DISTINCT FROM $3""", updates)
    rows = await conn.fetch("SELECT id, version, last_updated FROM health_resource WHERE id = ANY($1::uuid[])",
                            [w.id for w in writes])
    found = {r["id"]: (r["version"], r["last_updated"]) for r in rows}
    if len(found) != len(writes):
        raise ConcurrentWrite("another transaction wrote one of these identifiers first")
    return found


async def put_resource(conn: asyncpg.Connection, cipher: HealthCipher, *, resource_type: str,
                       resource_id: uuid.UUID, patient_id: uuid.UUID, facility_id: int | None, resource: dict,
                       index: Index) -> StoredResource:
    """Create or replace the resource with this id (the Patient resource of a record has the patient's id)."""
    row = await conn.fetchrow(
        f"""INSERT INTO health_resource (resource_type, id, patient_id, facility_id, effective_at, category, codes,
                                         status, encounter_id, content, last_updated)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, clock_timestamp())
            ON CONFLICT (resource_type, id) DO UPDATE SET
                facility_id = EXCLUDED.facility_id, version = health_resource.version + 1,
                effective_at = EXCLUDED.effective_at, category = EXCLUDED.category, codes = EXCLUDED.codes,
                status = EXCLUDED.status, encounter_id = EXCLUDED.encounter_id, content = EXCLUDED.content,
                last_updated = EXCLUDED.last_updated
            RETURNING {_COLUMNS}""",
        resource_type, resource_id, patient_id, facility_id, index.effective_at, list(index.category),
        code_hashes(cipher, index.codes), index.status, index.encounter_id,
        _sealed(cipher, resource_type, resource_id, resource))
    return _stored(cipher, row)


async def resource_by_source(conn: asyncpg.Connection, cipher: HealthCipher, resource_type: str,
                             facility_id: int | None, source_key: str) -> Record | None:
    """The id and patient of what this facility sent before under this identifier, without opening it."""
    return await conn.fetchrow(
        """SELECT id, patient_id FROM health_resource
            WHERE resource_type = $1 AND facility_id IS NOT DISTINCT FROM $2 AND source_hash = $3""",
        resource_type, facility_id, source_hash(cipher, source_key))


async def resources_by_source(conn: asyncpg.Connection, cipher: HealthCipher, facility_id: int | None,
                              keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], uuid.UUID]:
    """What this facility sent before under these (type, identifier) pairs, in one query."""
    hashes = {source_hash(cipher, key): (kind, key) for kind, key in keys}
    rows = await conn.fetch(
        """SELECT resource_type, source_hash, id FROM health_resource
            WHERE resource_type = ANY($1::text[]) AND facility_id IS NOT DISTINCT FROM $2
              AND source_hash = ANY($3::bytea[])""",
        list({kind for kind, _ in keys}), facility_id, list(hashes))
    found: dict[tuple[str, str], uuid.UUID] = {}
    for row in rows:
        kind, key = hashes[bytes(row["source_hash"])]
        if kind == row["resource_type"]:
            found[(kind, key)] = row["id"]
    return found


async def get_resource(conn: asyncpg.Connection, cipher: HealthCipher, resource_type: str,
                       resource_id: uuid.UUID) -> StoredResource | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM health_resource WHERE resource_type = $1 AND id = $2",
                              resource_type, resource_id)
    return None if row is None else _stored(cipher, row)


async def resource_exists(conn: asyncpg.Connection, resource_type: str, resource_id: uuid.UUID) -> Record | None:
    """The resource's patient and writer, without opening it (to check a reference)."""
    return await conn.fetchrow(
        "SELECT patient_id, facility_id FROM health_resource WHERE resource_type = $1 AND id = $2",
        resource_type, resource_id)


def _where(query: Query, args: list) -> list[str]:
    clauses: list[str] = []

    def arg(value) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.patient_id is not None:
        clauses.append(f"patient_id = {arg(query.patient_id)}")
    if query.types is not None:
        clauses.append(f"resource_type = ANY({arg(list(query.types))}::text[])")
    if query.date_from is not None:
        clauses.append(f"effective_at >= {arg(query.date_from)}")
    if query.date_to is not None:
        clauses.append(f"effective_at < {arg(query.date_to)}")
    if query.category:
        clauses.append(f"category && {arg(list(query.category))}::text[]")
    if query.codes:
        clauses.append(f"codes && {arg(list(query.codes))}::bytea[]")
    if query.updated_from is not None:
        clauses.append(f"last_updated >= {arg(query.updated_from)}")
    if query.updated_to is not None:
        clauses.append(f"last_updated < {arg(query.updated_to)}")
    if query.encounter_id is not None:
        clauses.append(f"encounter_id = {arg(query.encounter_id)}")
    if query.facility_id is not None:
        clauses.append(f"facility_id = {arg(query.facility_id)}")
    return clauses


async def find_resources(conn: asyncpg.Connection, cipher: HealthCipher, query: Query, *, limit: int | None,
                         after: tuple[dt.datetime, uuid.UUID] | None = None,
                         newest_first: bool = True) -> list[StoredResource]:
    """Resources matching `query` by clinical date (newest first by default), keyset-paged after `after`."""
    args: list = []
    clauses = _where(query, args)
    if after is not None:
        args.extend(after)
        clauses.append(f"(effective_at, id) {'<' if newest_first else '>'} (${len(args) - 1}, ${len(args)})")
    order = "DESC" if newest_first else "ASC"
    sql = (f"SELECT {_COLUMNS} FROM health_resource WHERE {' AND '.join(clauses) or 'true'} "
           f"ORDER BY effective_at {order}, id {order}")
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return [_stored(cipher, row) for row in await conn.fetch(sql, *args)]


async def count_resources(conn: asyncpg.Connection, query: Query) -> int:
    args: list = []
    clauses = _where(query, args)
    return await conn.fetchval(f"SELECT count(*) FROM health_resource WHERE {' AND '.join(clauses) or 'true'}", *args)


async def patient_resources(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID, *,
                            types: Sequence[str] | None = None, limit: int | None = None) -> list[StoredResource]:
    """Every resource of the patient (of `types`), newest clinical date first."""
    return await find_resources(conn, cipher, Query(patient_id=patient_id, types=tuple(types) if types else None),
                                limit=limit)


# ---- consent -----------------------------------------------------------------------------------------------


async def live_consent(conn: asyncpg.Connection, patient_id: uuid.UUID, facility_id: int,
                       clinician_id: uuid.UUID | None, now: dt.datetime) -> Record | None:
    """A consent in force for the facility as a whole, or for this clinician of it."""
    return await conn.fetchrow(
        """SELECT * FROM health_consent
            WHERE patient_id = $1 AND facility_id = $2 AND revoked_at IS NULL AND starts_at <= $4 AND expires_at > $4
              AND (clinician_id IS NULL OR clinician_id = $3)
            ORDER BY expires_at DESC LIMIT 1""", patient_id, facility_id, clinician_id, now)


async def live_emergency(conn: asyncpg.Connection, patient_id: uuid.UUID, facility_id: int,
                         now: dt.datetime) -> Record | None:
    return await conn.fetchrow(
        """SELECT * FROM health_emergency_access WHERE patient_id = $1 AND facility_id = $2
              AND starts_at <= $3 AND expires_at > $3 ORDER BY expires_at DESC LIMIT 1""", patient_id, facility_id, now)


async def insert_consent(conn: asyncpg.Connection, *, patient_id: uuid.UUID, facility_id: int,
                         clinician_id: uuid.UUID | None, via: str, starts_at: dt.datetime,
                         expires_at: dt.datetime) -> Record:
    return await conn.fetchrow(
        """INSERT INTO health_consent (patient_id, facility_id, clinician_id, via, starts_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        patient_id, facility_id, clinician_id, via, starts_at, expires_at)


async def consents(conn: asyncpg.Connection, patient_id: uuid.UUID) -> list[Record]:
    return await conn.fetch(
        """SELECT c.*, f.code AS facility_code, f.name AS facility_name FROM health_consent c
             JOIN health_facility f ON f.id = c.facility_id WHERE c.patient_id = $1 ORDER BY c.id DESC""", patient_id)


async def consent(conn: asyncpg.Connection, consent_id: int) -> Record | None:
    return await conn.fetchrow(
        """SELECT c.*, f.code AS facility_code, f.name AS facility_name FROM health_consent c
             JOIN health_facility f ON f.id = c.facility_id WHERE c.id = $1""", consent_id)


async def revoke_consent(conn: asyncpg.Connection, consent_id: int, patient_id: uuid.UUID,
                         now: dt.datetime) -> Record | None:
    return await conn.fetchrow(
        """UPDATE health_consent SET revoked_at = $3 WHERE id = $1 AND patient_id = $2 AND revoked_at IS NULL
           RETURNING id""", consent_id, patient_id, now)


async def insert_share_code(conn: asyncpg.Connection, *, code_hash: bytes, patient_id: uuid.UUID,
                            access_minutes: int, expires_at: dt.datetime) -> None:
    await conn.execute(
        "INSERT INTO health_share_code (code_hash, patient_id, access_minutes, expires_at) VALUES ($1, $2, $3, $4)",
        code_hash, patient_id, access_minutes, expires_at)


async def take_share_code(conn: asyncpg.Connection, code_hash: bytes, now: dt.datetime) -> Record | None:
    """The code, marked redeemed now; None when unknown, expired or already used."""
    return await conn.fetchrow(
        """UPDATE health_share_code SET redeemed_at = $2 WHERE code_hash = $1 AND redeemed_at IS NULL
              AND expires_at > $2 RETURNING *""", code_hash, now)


async def share_code_consent(conn: asyncpg.Connection, code_hash: bytes, consent_id: int) -> None:
    await conn.execute("UPDATE health_share_code SET consent_id = $2 WHERE code_hash = $1", code_hash, consent_id)


async def insert_emergency(conn: asyncpg.Connection, *, patient_id: uuid.UUID, facility_id: int, actor: str,
                           reason_enc: bytes, starts_at: dt.datetime, expires_at: dt.datetime) -> Record:
    return await conn.fetchrow(
        """INSERT INTO health_emergency_access (patient_id, facility_id, actor, reason_enc, starts_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        patient_id, facility_id, actor, reason_enc, starts_at, expires_at)


# ---- the access log ----------------------------------------------------------------------------------------


def _link(cipher: HealthCipher, row: dict | Record, prev_hash: bytes) -> bytes:
    """The keyed hash of a log row: its fields and the previous row's hash (without the key, no forgery)."""
    reason = row["reason_enc"]
    message = msgspec.json.encode([
        str(row["patient_id"]), row["seq"], row["at"].astimezone(dt.UTC).isoformat(), row["actor"],
        row["actor_kind"], row["facility_id"], row["action"], row["purpose"], row["what"],
        None if reason is None else bytes(reason).hex(),
    ])
    return cipher.chain(bytes(prev_hash) + message)


def _reason_context(patient_id: uuid.UUID) -> bytes:
    return b"access-reason:" + patient_id.bytes


async def append_access(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID, *, actor: str,
                        actor_kind: str, facility_id: int | None, action: str, purpose: str, what: str,
                        reason: str | None = None, at: dt.datetime | None = None) -> Record:
    """Append one row to the patient's chain (inside the caller's transaction, under the patient's lock)."""
    # the patient row holds the chain's head: its lock orders appends, and a deleted tail no longer matches it
    head = await conn.fetchrow(
        "UPDATE health_patient SET access_seq = access_seq + 1 WHERE id = $1 RETURNING access_seq, access_head",
        patient_id)
    if head is None:
        raise LookupError("no such patient")
    row = {
        "patient_id": patient_id, "seq": head["access_seq"],
        "at": at or dt.datetime.now(dt.UTC), "actor": actor, "actor_kind": actor_kind, "facility_id": facility_id,
        "action": action, "purpose": purpose, "what": what,
        "reason_enc": None if reason is None else cipher.seal(reason.encode(), context=_reason_context(patient_id)),
    }
    prev = GENESIS if head["access_head"] is None else bytes(head["access_head"])
    inserted = await conn.fetchrow(
        """INSERT INTO health_access_log (patient_id, seq, at, actor, actor_kind, facility_id, action, purpose, what,
                                          reason_enc, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *""",
        row["patient_id"], row["seq"], row["at"], actor, actor_kind, facility_id, action, purpose, what,
        row["reason_enc"], prev, _link(cipher, row, prev))
    await conn.execute("UPDATE health_patient SET access_head = $2 WHERE id = $1", patient_id, inserted["hash"])
    return inserted


def access_reason(cipher: HealthCipher, row: Record) -> str | None:
    if row["reason_enc"] is None:
        return None
    return cipher.open(bytes(row["reason_enc"]), context=_reason_context(row["patient_id"])).decode()


async def access_log(conn: asyncpg.Connection, patient_id: uuid.UUID, *, limit: int,
                     before_seq: int | None = None) -> list[Record]:
    """The patient's log, newest first, with the facility's code and name."""
    return await conn.fetch(
        """SELECT l.*, f.code AS facility_code, f.name AS facility_name FROM health_access_log l
             LEFT JOIN health_facility f ON f.id = l.facility_id
            WHERE l.patient_id = $1 AND ($2::bigint IS NULL OR l.seq < $2) ORDER BY l.seq DESC LIMIT $3""",
        patient_id, before_seq, limit)


async def verify_chain(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID) -> int | None:
    """Walk the patient's chain from the start: the seq of the first row that does not hold (a changed, missing
    or inserted row), or the head's seq when rows after the last good one were removed; None when intact."""
    head = await conn.fetchrow("SELECT access_seq, access_head FROM health_patient WHERE id = $1", patient_id)
    if head is None:
        return None
    prev = GENESIS
    expected_seq = 1
    for row in await conn.fetch("SELECT * FROM health_access_log WHERE patient_id = $1 ORDER BY seq", patient_id):
        if (row["seq"] != expected_seq or bytes(row["prev_hash"]) != prev
                or bytes(row["hash"]) != _link(cipher, row, prev)):
            return row["seq"] if row["seq"] <= expected_seq else expected_seq
        prev = bytes(row["hash"])
        expected_seq += 1
    if expected_seq - 1 != head["access_seq"] or (head["access_head"] is not None
                                                  and bytes(head["access_head"]) != prev):
        return expected_seq
    return None
