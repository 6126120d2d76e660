"""Health SQL: facilities, patients, FHIR resources (sealed at rest), consents, the access log chain.

Functions other parts of the module may call (names are stable; new ones are added, none renamed):

    cipher = health.crypto.cipher_of(state.settings)        # the health key's cipher, cached per process

    # patients (a resident's record; FHIR Patient id == health_patient.id)
    await patient(conn, patient_id) -> Record | None         # id, resident_id, bhyt_hash, created_at, ...
    await patient_for_reader(conn, patient_id, facility_id, clinician_id, now) -> Record | None
        # the patient row with consent_live and emergency_live for that reader, in one statement
    await patient_of_resident(conn, resident_id) -> Record | None
    await lock_patient(conn, patient_id) -> Record | None   # FOR UPDATE, until the transaction ends
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
    await find_with(conn, cipher, (type, id), Query(...), limit=, after=) -> (StoredResource | None, [...])
        # that one resource (the Patient of $everything's first page) and the page, in one statement
    await find_lines(conn, Query(...), limit=, after=, newest_first=True) -> list[Record]  # for line_of, with
                                                    # facility_name: a list of lines opens no whole resource
    opened(cipher, row) -> StoredResource          # a row selected with RESOURCE_COLUMNS, opened (not async)
    opened_json(cipher, row) -> StoredResource     # the same, `resource` as msgspec.Raw JSON (for a response)
    # find_resources / find_with(..., as_json=True): opened with opened_json
    line_of(cipher, row) -> health.display.Line     # a row selected with LINE_COLUMNS: its line (text, detail,
                                                    # status, code), sealed beside the content at write time

    # the access log (hash chain per patient); appending locks the patient row (in a transaction)
    await append_access(conn, cipher, patient_id, actor=, actor_kind=, facility_id=, action=, purpose=, what=,
                        reason=None, known=patient_row) -> Record   # known: one statement when its head holds
    await access_log(conn, patient_id, limit=, before_seq=None) -> list[Record]   # newest first
    await verify_chain(conn, cipher, patient_id) -> int | None   # the first broken seq, None when intact

    # what each facility sent as the Patient (the Patient resource served is merged from them)
    await put_patient_source(conn, cipher, patient_id, facility_id, resource, at=None)
    await patient_sources(conn, cipher, patient_id) -> list[(facility_id, updated_at, resource)]  # newest first

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

from health import display
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


async def patient_for_reader(conn: asyncpg.Connection, patient_id: uuid.UUID, facility_id: int | None,
                             clinician_id: uuid.UUID | None, now: dt.datetime) -> Record | None:
    """The patient row, and in the same statement whether this facility (or clinician of it) holds a consent in
    force now (`consent_live`) or an emergency access (`emergency_live`), for the reader `reader_facility_id`."""
    return await conn.fetchrow(
        """SELECT p.*, $2::integer AS reader_facility_id, $3::uuid AS reader_clinician_id,
                  EXISTS (SELECT 1 FROM health_consent c
                           WHERE c.patient_id = p.id AND c.facility_id = $2 AND c.revoked_at IS NULL
                             AND c.starts_at <= $4 AND c.expires_at > $4
                             AND (c.clinician_id IS NULL OR c.clinician_id = $3)) AS consent_live,
                  EXISTS (SELECT 1 FROM health_emergency_access e
                           WHERE e.patient_id = p.id AND e.facility_id = $2 AND e.starts_at <= $4
                             AND e.expires_at > $4) AS emergency_live
             FROM health_patient p WHERE p.id = $1""", patient_id, facility_id, clinician_id, now)


async def lock_patient(conn: asyncpg.Connection, patient_id: uuid.UUID) -> Record | None:
    """The patient's row, locked until the transaction ends (writes to one record's Patient, one at a time)."""
    return await conn.fetchrow("SELECT * FROM health_patient WHERE id = $1 FOR UPDATE", patient_id)


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
    resource: dict  # msgspec.Raw (the same JSON, unparsed) when read with as_json / opened_json


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


# the columns `opened` makes a StoredResource of (a query of another part of the module selects these)
RESOURCE_COLUMNS = ("resource_type, id, patient_id, facility_id, version, effective_at, last_updated, category, "
                    "status, encounter_id, content")
_COLUMNS = RESOURCE_COLUMNS
# the columns `line_of` reads a resource's line from: the sealed line, and the content only where no line was
# stored (rows written before the column existed), so a list of lines never carries whole resources
LINE_COLUMNS = ("resource_type, id, facility_id, effective_at, status, encounter_id, display, "
                "CASE WHEN display IS NULL THEN content END AS content")
# the same, with the writing facility's name (a list of lines shows who recorded each)
LINE_COLUMNS_NAMED = (LINE_COLUMNS + ", (SELECT f.name FROM health_facility f WHERE f.id = health_resource.facility_id)"
                      " AS facility_name")


def opened(cipher: HealthCipher, row: Record) -> StoredResource:
    """The resource of a row selected with RESOURCE_COLUMNS, opened (its id and meta as FHIR shows them)."""
    kind, resource_id, version, updated = row["resource_type"], row["id"], row["version"], row["last_updated"]
    resource = cipher.open_json(row["content"], context=f"{kind}/{resource_id}".encode())
    resource["id"] = str(resource_id)
    meta = resource.get("meta")
    meta = dict(meta) if meta else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = updated.isoformat()
    resource["meta"] = meta
    return StoredResource(
        resource_type=kind, id=resource_id, patient_id=row["patient_id"], facility_id=row["facility_id"],
        version=version, effective_at=row["effective_at"], last_updated=updated, category=tuple(row["category"]),
        status=row["status"], encounter_id=row["encounter_id"], resource=resource)



def opened_json(cipher: HealthCipher, row: Record) -> StoredResource:
    """As `opened`, but `resource` is the resource's JSON as msgspec.Raw, for a response body that msgspec encodes:
    the sealed JSON is opened and its id and meta written in front of it, never decoded to a dict and encoded
    again (a resource stored with a meta of its own, a profile say, is opened and merged as `opened` does)."""
    kind, resource_id, version, updated = row["resource_type"], row["id"], row["version"], row["last_updated"]
    body = cipher.open(row["content"], context=f"{kind}/{resource_id}".encode())
    if body[:1] != b"{" or b'"meta":' in body:  # a meta to merge (or, harmlessly, the text in a value): decode
        return opened(cipher, row)
    head = b'{"id":"%s","meta":{"versionId":"%d","lastUpdated":"%s"}' % (
        str(resource_id).encode(), version, updated.isoformat().encode())
    resource = msgspec.Raw(head + (b"," + body[1:] if body != b"{}" else b"}"))
    return StoredResource(
        resource_type=kind, id=resource_id, patient_id=row["patient_id"], facility_id=row["facility_id"],
        version=version, effective_at=row["effective_at"], last_updated=updated, category=tuple(row["category"]),
        status=row["status"], encounter_id=row["encounter_id"], resource=resource)


def _line_context(resource_type: str, resource_id: uuid.UUID) -> bytes:
    return f"line:{resource_type}/{resource_id}".encode()


_LINE = msgspec.json.Decoder(display.Line)


def line_of(cipher: HealthCipher, row: Record) -> display.Line:
    """The line of a row selected with LINE_COLUMNS: its sealed line, else (an older row) made from its content."""
    sealed = row["display"]
    if sealed is not None:
        return _LINE.decode(cipher.open(sealed, context=_line_context(row["resource_type"], row["id"])))
    return display.line_of(cipher.open_json(row["content"], context=_context(row["resource_type"], row["id"])))


def _sealed(cipher: HealthCipher, resource_type: str, resource_id: uuid.UUID, resource: dict) -> bytes:
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    body["resourceType"] = resource_type
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return cipher.seal_json(body, context=_context(resource_type, resource_id))


def _sealed_line(cipher: HealthCipher, resource_type: str, resource_id: uuid.UUID, resource: dict) -> bytes:
    line = display.line_of({**resource, "resourceType": resource_type})
    return cipher.seal(msgspec.json.encode(line), context=_line_context(resource_type, resource_id))


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
                           display = $10, last_updated = clock_timestamp()
                     WHERE resource_type = $1 AND id = $2 RETURNING {_COLUMNS}""",
                resource_type, existing["id"], patient_id, index.effective_at, list(index.category), codes,
                index.status, index.encounter_id, _sealed(cipher, resource_type, existing["id"], resource),
                _sealed_line(cipher, resource_type, existing["id"], resource))
            return opened(cipher, row), False
        new_id = new_id or uuid.uuid4()
        row = await conn.fetchrow(
            f"""INSERT INTO health_resource (resource_type, id, patient_id, facility_id, source_hash, effective_at,
                                             category, codes, status, encounter_id, content, display, last_updated)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, clock_timestamp())
                ON CONFLICT (resource_type, facility_id, source_hash) DO NOTHING RETURNING {_COLUMNS}""",
            resource_type, new_id, patient_id, facility_id, hashed, index.effective_at, list(index.category), codes,
            index.status, index.encounter_id, _sealed(cipher, resource_type, new_id, resource),
            _sealed_line(cipher, resource_type, new_id, resource))
        if row is not None:
            return opened(cipher, row), True
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
        line = _sealed_line(cipher, w.resource_type, w.id, w.resource)
        codes = code_hashes(cipher, w.index.codes)
        if w.existed:
            updates.append((w.resource_type, w.id, facility_id, w.patient_id, w.index.effective_at,
                            list(w.index.category), codes, w.index.status, w.index.encounter_id, content, at, line))
        else:
            inserts.append((w.resource_type, w.id, w.patient_id, facility_id, source_hash(cipher, w.source_key),
                            w.index.effective_at, list(w.index.category), codes, w.index.status, w.index.encounter_id,
                            content, at, line))
    if inserts:
        await conn.executemany(
            """INSERT INTO health_resource (resource_type, id, patient_id, facility_id, source_hash, effective_at,
                                            category, codes, status, encounter_id, content, last_updated, display)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (resource_type, facility_id, source_hash) DO NOTHING""", inserts)
    if updates:
        await conn.executemany(
            """UPDATE health_resource SET patient_id = $4, version = version + 1, effective_at = $5, category = $6,
                      codes = $7, status = $8, encounter_id = $9, content = $10, last_updated = $11,
                      display = $12
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
                                         status, encounter_id, content, display, last_updated)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, clock_timestamp())
            ON CONFLICT (resource_type, id) DO UPDATE SET
                facility_id = EXCLUDED.facility_id, version = health_resource.version + 1,
                effective_at = EXCLUDED.effective_at, category = EXCLUDED.category, codes = EXCLUDED.codes,
                status = EXCLUDED.status, encounter_id = EXCLUDED.encounter_id, content = EXCLUDED.content,
                display = EXCLUDED.display, last_updated = EXCLUDED.last_updated
            RETURNING {_COLUMNS}""",
        resource_type, resource_id, patient_id, facility_id, index.effective_at, list(index.category),
        code_hashes(cipher, index.codes), index.status, index.encounter_id,
        _sealed(cipher, resource_type, resource_id, resource),
        _sealed_line(cipher, resource_type, resource_id, resource))
    return opened(cipher, row)


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
    return None if row is None else opened(cipher, row)


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


def _find_sql(columns: str, query: Query, args: list, limit: int | None, after: tuple[dt.datetime, uuid.UUID] | None,
              newest_first: bool) -> str:
    clauses = _where(query, args)
    if after is not None:
        args.extend(after)
        clauses.append(f"(effective_at, id) {'<' if newest_first else '>'} (${len(args) - 1}, ${len(args)})")
    order = "DESC" if newest_first else "ASC"
    sql = (f"SELECT {columns} FROM health_resource WHERE {' AND '.join(clauses) or 'true'} "
           f"ORDER BY effective_at {order}, id {order}")
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return sql


async def find_resources(conn: asyncpg.Connection, cipher: HealthCipher, query: Query, *, limit: int | None,
                         after: tuple[dt.datetime, uuid.UUID] | None = None,
                         newest_first: bool = True, as_json: bool = False) -> list[StoredResource]:
    """Resources matching `query` by clinical date (newest first by default), keyset-paged after `after`
    (`as_json`: opened with `opened_json`)."""
    args: list = []
    sql = _find_sql(_COLUMNS, query, args, limit, after, newest_first)
    opening = opened_json if as_json else opened
    return [opening(cipher, row) for row in await conn.fetch(sql, *args)]


async def find_with(conn: asyncpg.Connection, cipher: HealthCipher, first: tuple[str, uuid.UUID], query: Query, *,
                    limit: int, after: tuple[dt.datetime, uuid.UUID] | None = None,
                    newest_first: bool = True,
                    as_json: bool = False) -> tuple[StoredResource | None, list[StoredResource]]:
    """The resource `first` (type, id), and `find_resources(query, ...)`, in one statement."""
    args: list = [first[0], first[1]]
    sql = _find_sql(_COLUMNS, query, args, limit, after, newest_first)
    order = "DESC" if newest_first else "ASC"
    rows = await conn.fetch(
        f"""SELECT * FROM (
                (SELECT 0 AS part, {_COLUMNS} FROM health_resource WHERE resource_type = $1 AND id = $2)
                UNION ALL (SELECT 1 AS part, * FROM ({sql}) found)) both_parts
            ORDER BY part, effective_at {order}, id {order}""", *args)
    opening = opened_json if as_json else opened
    head = opening(cipher, rows[0]) if rows and rows[0]["part"] == 0 else None
    return head, [opening(cipher, row) for row in rows[head is not None:]]


async def find_lines(conn: asyncpg.Connection, query: Query, *, limit: int | None,
                     after: tuple[dt.datetime, uuid.UUID] | None = None, newest_first: bool = True) -> list[Record]:
    """As `find_resources`, but the rows for `line_of` (LINE_COLUMNS), with the writer's `facility_name`."""
    args: list = []
    sql = _find_sql(LINE_COLUMNS_NAMED, query, args, limit, after, newest_first)
    return await conn.fetch(sql, *args)


async def count_resources(conn: asyncpg.Connection, query: Query) -> int:
    args: list = []
    clauses = _where(query, args)
    return await conn.fetchval(f"SELECT count(*) FROM health_resource WHERE {' AND '.join(clauses) or 'true'}", *args)


async def patient_resources(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID, *,
                            types: Sequence[str] | None = None, limit: int | None = None) -> list[StoredResource]:
    """Every resource of the patient (of `types`), newest clinical date first."""
    return await find_resources(conn, cipher, Query(patient_id=patient_id, types=tuple(types) if types else None),
                                limit=limit)


# ---- what each facility sent as the Patient ---------------------------------------------------------------


def _source_context(patient_id: uuid.UUID, facility_id: int) -> bytes:
    return b"patient-source:" + patient_id.bytes + str(facility_id).encode()


async def put_patient_source(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID,
                             facility_id: int, resource: dict, at: dt.datetime | None = None) -> None:
    """This facility's Patient as it sent it (replacing what it sent before)."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    await conn.execute(
        """INSERT INTO health_patient_source (patient_id, facility_id, content, updated_at)
           VALUES ($1, $2, $3, coalesce($4, clock_timestamp()))
           ON CONFLICT (patient_id, facility_id) DO UPDATE SET content = EXCLUDED.content,
                                                               updated_at = EXCLUDED.updated_at""",
        patient_id, facility_id, cipher.seal_json(body, context=_source_context(patient_id, facility_id)), at)


async def patient_sources(conn: asyncpg.Connection, cipher: HealthCipher,
                          patient_id: uuid.UUID) -> list[tuple[int, dt.datetime, dict]]:
    rows = await conn.fetch(
        """SELECT facility_id, updated_at, content FROM health_patient_source WHERE patient_id = $1
            ORDER BY updated_at DESC, facility_id DESC""", patient_id)
    return [(r["facility_id"], r["updated_at"],
             cipher.open_json(r["content"], context=_source_context(patient_id, r["facility_id"]))) for r in rows]


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


_LOG_COLUMNS = "patient_id, seq, at, actor, actor_kind, facility_id, action, purpose, what, reason_enc, prev_hash, hash"


async def append_access(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID, *, actor: str,
                        actor_kind: str, facility_id: int | None, action: str, purpose: str, what: str,
                        reason: str | None = None, at: dt.datetime | None = None,
                        known: Record | None = None) -> Record:
    """Append one row to the patient's chain (inside the caller's transaction, under the patient's lock).

    `known`: the patient row as this request read it (its access_seq and access_head). The row is then chained
    to that head and written in one statement that moves the head only if it is still the one read (the same
    lock, taken by that UPDATE); when another append came in between, nothing is written and the row is chained
    again to the head read under the lock. Either way each row holds the keyed hash of the one before."""
    reason_enc = None if reason is None else cipher.seal(reason.encode(), context=_reason_context(patient_id))
    row = {"patient_id": patient_id, "at": at or dt.datetime.now(dt.UTC), "actor": actor, "actor_kind": actor_kind,
           "facility_id": facility_id, "action": action, "purpose": purpose, "what": what, "reason_enc": reason_enc}
    if known is not None and known["id"] == patient_id:
        row["seq"] = known["access_seq"] + 1
        prev = GENESIS if known["access_head"] is None else bytes(known["access_head"])
        link = _link(cipher, row, prev)
        # the head moves only from the one chained to; the INSERT reads the UPDATE's row, so both or neither
        inserted = await conn.fetchrow(
            f"""WITH head AS (
                    UPDATE health_patient SET access_seq = $2, access_head = $12
                     WHERE id = $1 AND access_seq = $2 - 1 AND access_head IS NOT DISTINCT FROM $13::bytea
                    RETURNING id)
                INSERT INTO health_access_log ({_LOG_COLUMNS})
                SELECT head.id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM head RETURNING *""",
            patient_id, row["seq"], row["at"], actor, actor_kind, facility_id, action, purpose, what, reason_enc,
            prev, link, None if known["access_head"] is None else prev)
        if inserted is not None:
            return inserted
    # the patient row holds the chain's head: its lock orders appends, and a deleted tail no longer matches it
    head = await conn.fetchrow(
        "UPDATE health_patient SET access_seq = access_seq + 1 WHERE id = $1 RETURNING access_seq, access_head",
        patient_id)
    if head is None:
        raise LookupError("no such patient")
    row["seq"] = head["access_seq"]
    prev = GENESIS if head["access_head"] is None else bytes(head["access_head"])
    link = _link(cipher, row, prev)
    inserted = await conn.fetchrow(
        f"""WITH log AS (
                INSERT INTO health_access_log ({_LOG_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *),
            moved AS (UPDATE health_patient SET access_head = $12 WHERE id = $1)
            SELECT * FROM log""",
        patient_id, row["seq"], row["at"], actor, actor_kind, facility_id, action, purpose, what, reason_enc, prev,
        link)
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


async def save_chain_anchors(conn: asyncpg.Connection, partition: str) -> None:
    """Before a month of the log is detached (the partitions job, in its transaction): for each patient, the
    last row of every run of rows the month holds, so that verify_chain can step over the gap it leaves."""
    if not partition.startswith("health_access_log_p") or not partition[len("health_access_log_p"):].isdigit():
        raise ValueError(f"not a month of the access log: {partition!r}")
    await conn.execute(
        f"""INSERT INTO health_access_log_anchor (patient_id, seq, hash, partition_name)
            SELECT l.patient_id, l.seq, l.hash, $1 FROM "{partition}" l
             WHERE NOT EXISTS (SELECT 1 FROM "{partition}" n WHERE n.patient_id = l.patient_id AND n.seq = l.seq + 1)
            ON CONFLICT (patient_id, seq) DO NOTHING""", partition)


async def _anchors(conn: asyncpg.Connection, patient_id: uuid.UUID) -> dict[int, bytes | None]:
    """The patient's anchors by seq: their hash, or None when the month's table, still here, disagrees."""
    rows = await conn.fetch(
        "SELECT a.seq, a.hash, a.partition_name, to_regclass(quote_ident(a.partition_name)) IS NOT NULL AS kept "
        "FROM health_access_log_anchor a WHERE a.patient_id = $1", patient_id)
    found: dict[int, bytes | None] = {}
    for row in rows:
        hash_ = bytes(row["hash"])
        if row["kept"]:
            archived = await conn.fetchval(f'SELECT hash FROM "{row["partition_name"]}" '
                                           "WHERE patient_id = $1 AND seq = $2", patient_id, row["seq"])
            if archived is None or bytes(archived) != hash_:
                hash_ = None
        found[row["seq"]] = hash_
    return found


async def verify_chain(conn: asyncpg.Connection, cipher: HealthCipher, patient_id: uuid.UUID) -> int | None:
    """Walk the patient's chain from the start: the seq of the first row that does not hold (a changed, missing
    or inserted row), or the head's seq when rows after the last good one were removed; None when intact.

    Rows of months detached past the retention are not in the log: a gap ending at an anchor the partitions job
    saved (save_chain_anchors) is stepped over, the walk going on from the anchor's hash."""
    head = await conn.fetchrow("SELECT access_seq, access_head FROM health_patient WHERE id = $1", patient_id)
    if head is None:
        return None
    anchors = await _anchors(conn, patient_id)
    prev = GENESIS
    expected_seq = 1
    for row in await conn.fetch("SELECT * FROM health_access_log WHERE patient_id = $1 ORDER BY seq", patient_id):
        if row["seq"] > expected_seq and anchors.get(row["seq"] - 1) is not None:
            prev, expected_seq = anchors[row["seq"] - 1], row["seq"]  # the rows before left with their month
        if (row["seq"] != expected_seq or bytes(row["prev_hash"]) != prev
                or bytes(row["hash"]) != _link(cipher, row, prev)):
            return row["seq"] if row["seq"] <= expected_seq else expected_seq
        prev = bytes(row["hash"])
        expected_seq += 1
    if head["access_seq"] > expected_seq - 1 and anchors.get(head["access_seq"]) is not None:
        prev, expected_seq = anchors[head["access_seq"]], head["access_seq"] + 1  # the newest rows left too
    if expected_seq - 1 != head["access_seq"] or (head["access_head"] is not None
                                                  and bytes(head["access_head"]) != prev):
        return expected_seq
    return None
