"""The rules of health: who may write and read a record, FHIR transactions, searches, consent, emergencies.

Who may do what:
- A facility's system (a machine client holding `health_facility:<code>`) WRITES visit data for any patient it
  identifies by personal ID number or BHYT card number: the patient attends that facility, and a write answers
  with ids only, never with what the record already holds. It updates only what it sent itself (its own
  identifiers). Every write is in the patient's access log.
- It READS nothing without the resident's consent: a consent for the facility (given in the app, or by a share
  code the resident showed at a visit) in force now, or an emergency access it opened with a reason (recorded,
  and told to the resident). Revoking a consent ends it for the next request.
- A clinician (a resident holding `health_clinician:<code>`) reads what was shared with the facility or with
  them personally, and may open an emergency access; clinicians never write over FHIR.
- The resident reads their own record and access log (level 2, signed in within 15 minutes).
Every read by someone else is appended to the patient's access log, a hash chain the resident reads.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from app import ratelimit, web
from app.errors import Forbidden, InvalidInput, NotFound, UnknownReference
from app.identity import Principal, names_of
from app.identity import service as identity
from health import config, fhir, store
from health.crypto import HealthCipher
from health.fhir import FhirError, Issue
from health.models import (
    AccessEntry,
    AccessLog,
    Clinician,
    ClinicianList,
    Consent,
    ConsentCreate,
    ConsentList,
    EmergencyAccess,
    EmergencyCreate,
    Facility,
    FacilityCreate,
    ShareCode,
    ShareCodeCreate,
    ShareCodeRedeem,
    ShareRedeemed,
)
from notifications import notify

log = logging.getLogger("ihanoi.health")

RESIDENT_AUTH_AGE = 15 * 60  # a resident's own health screens need a sign-in within 15 minutes
SHARE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud at a counter
SHARE_LENGTH = 10  # ~49 bits, valid for minutes and used once


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---- who is calling -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    kind: str  # facility (its system), clinician (a resident for a facility), resident (the patient's own view)
    label: str  # client:<id> or resident:<uuid>, as the access log records it
    facility: asyncpg.Record | None
    resident_id: uuid.UUID | None
    principal: Principal | None = None

    @property
    def facility_id(self) -> int | None:
        return None if self.facility is None else self.facility["id"]


async def actor_of(conn: asyncpg.Connection, principal: Principal, facility_code: str | None = None) -> Actor:
    """The caller as health sees it; `facility_code` chooses among the facilities a caller serves.

    The facility roles a token names are checked against the database at every request: a clinician whose role
    was revoked (or a facility system whose client was disabled or lost the role) is refused at once, not when
    the token expires. A resident without a health role costs no query."""
    label = identity.actor_of(principal)
    role, kind = ("health_facility", "facility") if principal.kind == "client" else ("health_clinician", "clinician")
    codes = [c for c in principal.scopes_of(role) if c]
    if codes:
        held = set(await identity.current_scopes(conn, principal, role))
        codes = [c for c in codes if c in held]
    if facility_code is not None:
        if facility_code not in codes:
            raise Forbidden(f"this caller does not act for facility {facility_code}")
        codes = [facility_code]
    if not codes:
        if principal.kind == "resident":
            return Actor(kind="resident", label=label, facility=None, resident_id=uuid.UUID(principal.sub),
                         principal=principal)
        raise Forbidden("this needs the health_facility role")
    if len(codes) > 1:
        raise InvalidInput.field("X-Facility", "this caller serves several facilities: name one", source="header")
    facility = await store.facility_by_code(conn, codes[0])
    if facility is None:
        raise Forbidden(f"facility {codes[0]} is not registered")
    resident = uuid.UUID(principal.sub) if principal.kind == "resident" else None
    return Actor(kind=kind, label=label, facility=facility, resident_id=resident, principal=principal)


async def may_read(conn: asyncpg.Connection, actor: Actor, patient: asyncpg.Record, at: dt.datetime) -> str | None:
    """Why this actor may read this record now: own, consent or emergency; None when it may not. A patient row
    read with `store.patient_for_reader` for this very reader already says it."""
    if actor.resident_id is not None and actor.resident_id == patient["resident_id"]:
        return "own"
    if actor.facility is None:
        return None
    clinician = actor.resident_id if actor.kind == "clinician" else None
    if ("consent_live" in patient.keys() and patient["reader_facility_id"] == actor.facility_id
            and patient["reader_clinician_id"] == clinician):
        return "consent" if patient["consent_live"] else "emergency" if patient["emergency_live"] else None
    if await store.live_consent(conn, patient["id"], actor.facility_id, clinician, at) is not None:
        return "consent"
    if await store.live_emergency(conn, patient["id"], actor.facility_id, at) is not None:
        return "emergency"
    return None


async def patient_for(conn: asyncpg.Connection, actor: Actor, patient_id: uuid.UUID) -> asyncpg.Record | None:
    """The patient row, with what `may_read` needs to know of this actor's consent (one statement)."""
    clinician = actor.resident_id if actor.kind == "clinician" else None
    return await store.patient_for_reader(conn, patient_id, actor.facility_id, clinician, now())


async def log_access(conn: asyncpg.Connection, cipher: HealthCipher, actor: Actor, patient_id: uuid.UUID, *,
                     action: str, purpose: str, what: str, reason: str | None = None,
                     known: asyncpg.Record | None = None) -> None:
    """One row of the patient's access log (a resident reading their own record is not logged). `known`: the
    patient row this request read (the append is then one statement while no other append came in between)."""
    if purpose == "own":
        return
    await store.append_access(conn, cipher, patient_id, actor=actor.label, actor_kind=actor.kind,
                              facility_id=actor.facility_id, action=action, purpose=purpose, what=what, reason=reason,
                              known=known)


async def require_read(conn: asyncpg.Connection, cipher: HealthCipher, actor: Actor, patient: asyncpg.Record, *,
                       action: str, what: str) -> str:
    """The purpose of a read this actor may make, logged; a 403 OperationOutcome when it may not."""
    purpose = await may_read(conn, actor, patient, now())
    if purpose is None:
        raise FhirError.one(403, "the patient has not shared their record with this facility or clinician (no "
                                 "consent in force, no emergency access)", code="forbidden")
    if purpose == "own" and actor.principal is not None:  # the resident's own record: a recent level-2 sign-in
        identity.require_level(actor.principal, 2, RESIDENT_AUTH_AGE)
    await log_access(conn, cipher, actor, patient["id"], action=action, purpose=purpose, what=what, known=patient)
    return purpose


# ---- FHIR transaction ----------------------------------------------------------------------------------------


@dataclass
class _Entry:
    index: int
    path: str
    kind: str
    resource: dict
    full_url: str | None
    target: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    source_key: str | None = None
    existed: bool = False


def _decode_bundle(body: bytes, settings: config.HealthSettings) -> dict:
    if len(body) > settings.max_bundle_bytes:
        raise FhirError.one(413, f"the Bundle is {len(body)} bytes; at most {settings.max_bundle_bytes} are accepted "
                                 "in one transaction: split it", "Bundle", code="too-costly")
    try:
        bundle = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise FhirError.one(400, f"the body is not JSON: {exc}", code="structure") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.one(400, "a transaction Bundle is expected (resourceType Bundle)", "Bundle.resourceType",
                            code="structure")
    if bundle.get("type") != "transaction":
        raise FhirError.one(400, "only Bundle.type transaction is accepted (all or nothing)", "Bundle.type",
                            code="not-supported")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise FhirError.one(400, "the Bundle has no entries", "Bundle.entry", code="required")
    if len(entries) > settings.max_bundle_entries:
        raise FhirError.one(413, f"the Bundle has {len(entries)} entries; at most {settings.max_bundle_entries} are "
                                 "accepted in one transaction: split it", "Bundle.entry", code="too-costly")
    return bundle


def _check_entries(bundle: dict) -> tuple[list[_Entry], list[Issue]]:
    issues: list[Issue] = []
    entries: list[_Entry] = []
    seen_urls: dict[str, int] = {}
    for i, entry in enumerate(bundle["entry"]):
        path = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            issues.append(Issue(diagnostics="an entry must be a JSON object", expression=[path], code="structure"))
            continue
        unknown = set(entry) - {"fullUrl", "resource", "request", "link", "id", "extension", "modifierExtension"}
        if unknown:
            issues.append(Issue(diagnostics=f"unknown entry fields: {', '.join(sorted(unknown))}", expression=[path],
                                code="structure"))
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            issues.append(Issue(diagnostics="each entry carries a resource", expression=[f"{path}.resource"],
                                code="required"))
            continue
        request = entry.get("request")
        kind = resource.get("resourceType")
        if not isinstance(request, dict) or request.get("method") not in ("POST", "PUT"):
            issues.append(Issue(diagnostics="request.method must be POST or PUT (a create or a conditional update "
                                            "by the facility's identifier)", expression=[f"{path}.request.method"],
                                code="not-supported"))
        elif not isinstance(request.get("url"), str) or request["url"].split("?")[0].split("/")[0] != kind:
            issues.append(Issue(diagnostics=f"request.url must name the resource type ({kind})",
                                expression=[f"{path}.request.url"], code="value"))
        full_url = entry.get("fullUrl")
        if full_url is not None:
            if not isinstance(full_url, str) or not full_url.startswith("urn:uuid:"):
                issues.append(Issue(diagnostics="fullUrl must be a urn:uuid: inside a transaction",
                                    expression=[f"{path}.fullUrl"], code="value"))
                full_url = None
            elif full_url in seen_urls:
                issues.append(Issue(diagnostics=f"fullUrl repeats entry {seen_urls[full_url]}",
                                    expression=[f"{path}.fullUrl"], code="duplicate"))
            else:
                seen_urls[full_url] = i
        found = fhir.validate(resource, f"{path}.resource")
        issues.extend(found)
        if not found:
            entries.append(_Entry(index=i, path=f"{path}.resource", kind=kind, resource=resource, full_url=full_url))
    return entries, issues


async def _match_patient(conn: asyncpg.Connection, rt, cipher: HealthCipher, entry: _Entry) -> list[Issue]:
    """Find (or start) the record of the person a Patient entry names, by personal ID number and BHYT number."""
    personal, bhyt = fhir.patient_identifiers(entry.resource)
    where = [f"{entry.path}.identifier"]
    by_bhyt = None if bhyt is None else await store.patient_by_bhyt(conn, cipher, bhyt)
    if personal is None:
        if by_bhyt is None:
            return [Issue(diagnostics="unknown patient: no record holds this BHYT card number; send the personal "
                                      "ID number too", expression=where, code="not-found")]
        entry.target = entry.patient_id = by_bhyt["id"]
        return []
    resident = await identity.resident_for_personal_id(rt, conn, personal, create=True)
    if by_bhyt is not None and by_bhyt["resident_id"] != resident["id"]:
        return [Issue(diagnostics="the BHYT card number belongs to another patient than the personal ID number",
                      expression=where, code="conflict")]
    patient = await store.ensure_patient(conn, cipher, resident["id"], bhyt)
    entry.target = entry.patient_id = patient["id"]
    return []


async def _resolve(conn: asyncpg.Connection, entry: _Entry, urls: dict[str, tuple[str, uuid.UUID, uuid.UUID]],
                   targets: dict[tuple[str, uuid.UUID], uuid.UUID]) -> list[Issue]:
    """Rewrite urn:uuid references to what they name; every reference to a type we hold must name something,
    of the same patient; the patient reference decides whose record the resource joins."""
    issues: list[Issue] = []
    patient_field = fhir.PATIENT_FIELD[entry.kind]
    resolved: dict[str, tuple[str, uuid.UUID, uuid.UUID | None]] = {}
    for path, ref in fhir.references(entry.resource, entry.path):
        text = ref["reference"]
        if text.startswith("urn:uuid:"):
            found = urls.get(text)
            if found is None:
                issues.append(Issue(diagnostics=f"{text} names no entry of this Bundle", expression=[path],
                                    code="not-found"))
                continue
            kind, target, owner = found
        else:
            parsed = fhir.parse_reference(text)
            if parsed is None:
                continue  # a type we do not hold (Practitioner, Organization, ...): kept as sent
            kind, target = parsed
            owner = None if target is None else targets.get((kind, target))
            if target is not None and owner is None:
                if kind == "Patient":  # a record may exist before any facility sent its Patient (a consent first)
                    owner = target if await store.patient(conn, target) is not None else None
                else:
                    row = await store.resource_exists(conn, kind, target)
                    owner = None if row is None else row["patient_id"]
            if owner is None:
                issues.append(Issue(diagnostics=f"{text} names nothing held here", expression=[path],
                                    code="not-found"))
                continue
        ref["reference"] = f"{kind}/{target}"
        resolved[path] = (kind, target, owner)
    subject = resolved.get(f"{entry.path}.{patient_field}")
    if subject is None:
        if not issues:
            issues.append(Issue(diagnostics="the patient reference must name a Patient",
                                expression=[f"{entry.path}.{patient_field}"], code="required"))
        return issues
    kind, target, _ = subject
    if kind != "Patient":
        return issues + [Issue(diagnostics="the patient reference must name a Patient",
                               expression=[f"{entry.path}.{patient_field}"], code="value")]
    entry.patient_id = target
    for path, (_, _, owner) in resolved.items():
        if owner is not None and owner != target:
            issues.append(Issue(diagnostics="this reference names another patient's record", expression=[path],
                                code="conflict"))
    return issues


async def transaction(conn: asyncpg.Connection, rt, cipher: HealthCipher, settings: config.HealthSettings,
                      actor: Actor, body: bytes, base_url: str) -> dict:
    """A facility's transaction Bundle, all or nothing (the caller's transaction): the transaction-response."""
    if actor.kind != "facility":
        raise FhirError.one(403, "only a facility's system writes records (health_facility role)", code="forbidden")
    bundle = _decode_bundle(body, settings)
    entries, issues = _check_entries(bundle)
    if issues:
        raise FhirError(422, issues)
    at = now()
    # 1. who each entry is: Patients matched by their identifiers, others by the facility's own identifier
    sources: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.kind == "Patient":
            issues.extend(await _match_patient(conn, rt, cipher, entry))
            continue
        entry.source_key = fhir.identifier_key(entry.resource)
        key = (entry.kind, entry.source_key)
        if key in sources:
            issues.append(Issue(diagnostics=f"the same {entry.kind} identifier is in entry {sources[key]} too",
                                expression=[f"{entry.path}.identifier"], code="duplicate"))
            continue
        sources[key] = entry.index
    if issues:
        raise FhirError(422, issues)
    known = await store.resources_by_source(conn, cipher, actor.facility_id, list(sources)) if sources else {}
    for entry in entries:
        if entry.kind != "Patient":
            found = known.get((entry.kind, entry.source_key))
            entry.target, entry.existed = (found, True) if found else (uuid.uuid4(), False)
    # 2. references: urn:uuid of this Bundle, or resources held here, of the same patient
    by_url = {e.full_url: e for e in entries if e.full_url}
    patients: dict[uuid.UUID, bool] = {e.target: True for e in entries if e.kind == "Patient"}
    resources = [e for e in entries if e.kind != "Patient"]
    for entry in resources:  # the patient of each, before checking that references agree on it
        subject = fhir.reference_of(entry.resource.get(fhir.PATIENT_FIELD[entry.kind])) or ""
        if subject.startswith("urn:uuid:"):
            named = by_url.get(subject)
            entry.patient_id = named.patient_id if named is not None and named.kind == "Patient" else None
        else:
            parsed = fhir.parse_reference(subject)
            if parsed and parsed[0] == "Patient" and parsed[1] is not None:
                if parsed[1] not in patients:
                    patients[parsed[1]] = await store.patient(conn, parsed[1]) is not None
                entry.patient_id = parsed[1] if patients[parsed[1]] else None
    urls = {e.full_url: (e.kind, e.target, e.patient_id) for e in entries if e.full_url and e.target is not None}
    targets: dict[tuple[str, uuid.UUID], uuid.UUID] = {
        (e.kind, e.target): e.patient_id for e in entries if e.target is not None and e.patient_id is not None}
    for entry in resources:
        entry.resource = fhir.deep_copy(entry.resource)
        issues.extend(await _resolve(conn, entry, urls, targets))
    if issues:
        raise FhirError(422, issues)
    # 3. write, Patients first, the rest in a few round trips; then say who wrote what, once per patient
    answers: list[dict | None] = [None] * len(bundle["entry"])
    written: dict[uuid.UUID, dict[str, int]] = {}

    def answer(entry: _Entry, version: int, last_updated: dt.datetime, created: bool) -> None:
        counts = written.setdefault(entry.patient_id, {})
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
        answers[entry.index] = {
            "fullUrl": f"{base_url}/{entry.kind}/{entry.target}",
            "response": {"status": "201 Created" if created else "200 OK",
                         "location": f"{entry.kind}/{entry.target}/_history/{version}",
                         "etag": f'W/"{version}"', "lastModified": last_updated.isoformat()},
        }

    writes: list[store.Write] = []
    for entry in entries:
        terms = fhir.index_terms(entry.kind, entry.resource, at)
        encounter = fhir.parse_reference(terms.pop("encounter") or "")
        index = store.Index(**terms, encounter_id=encounter[1] if encounter and encounter[0] == "Encounter" else None)
        if entry.kind == "Patient":
            before = await store.resource_exists(conn, "Patient", entry.target)
            merged = await merged_patient(conn, cipher, actor, entry.target, entry.resource, before)
            stored = await store.put_resource(conn, cipher, resource_type="Patient", resource_id=entry.target,
                                              patient_id=entry.target, facility_id=actor.facility_id,
                                              resource=merged, index=index)
            answer(entry, stored.version, stored.last_updated, before is None)
        else:
            writes.append(store.Write(resource_type=entry.kind, id=entry.target, patient_id=entry.patient_id,
                                      source_key=entry.source_key, resource=entry.resource, index=index,
                                      existed=entry.existed))
    if writes:
        try:
            versions = await store.write_resources(conn, cipher, actor.facility_id, writes, at)
        except store.ConcurrentWrite:
            raise FhirError.one(409, "another transaction wrote some of these identifiers at the same moment: send "
                                     "the Bundle again (it then updates them)", code="conflict") from None
        for entry in resources:
            version, last_updated = versions[entry.target]
            answer(entry, version, last_updated, not entry.existed)
    for patient_id, counts in written.items():
        what = "transaction: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        await log_access(conn, cipher, actor, patient_id, action="write", purpose="visit", what=what)
    log.info("fhir transaction stored", extra={"facility_code": actor.facility["code"], "entries": len(entries)})
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}


async def merged_patient(conn: asyncpg.Connection, cipher: HealthCipher, actor: Actor, patient_id: uuid.UUID,
                         sent: dict, before: asyncpg.Record | None) -> dict:
    """The Patient to serve once this facility sent `sent`: fhir.PATIENT_RULE over what every facility sent (kept
    per facility), with the demographics VNeID verified at the resident's sign-in. The patient's row is locked
    first: two facilities writing the same person at once merge one after the other, each seeing the other's."""
    row = await store.lock_patient(conn, patient_id)
    sources = await store.patient_sources(conn, cipher, patient_id)
    writer = None if before is None else before["facility_id"]
    if writer is not None and writer != actor.facility_id and all(f != writer for f, _, _ in sources):
        # a Patient stored before facilities' Patients were kept apart: its writer's, once
        old = await store.get_resource(conn, cipher, "Patient", patient_id)
        await store.put_patient_source(conn, cipher, patient_id, writer, old.resource, at=old.last_updated)
        sources.append((writer, old.last_updated, old.resource))
    await store.put_patient_source(conn, cipher, patient_id, actor.facility_id, sent)
    ordered = [sent] + [resource for facility_id, _, resource in sources if facility_id != actor.facility_id]
    profile = await identity.profile_of(conn, row["resident_id"])
    name = (await names_of(conn, [row["resident_id"]])).get(row["resident_id"])
    return fhir.merge_patient(ordered, verified_name=name, gender=profile.sex if profile else None,
                              birth_date=profile.birth_date if profile else None, bhyt=store.bhyt_of(cipher, row))


# ---- FHIR reads and searches ---------------------------------------------------------------------------------


def _id(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise FhirError.one(404, f"no {what} {text}", code="not-found") from None


def _kind(text: str) -> str:
    if text not in fhir.RESOURCE_TYPES:
        raise FhirError.one(404, f"resource type {text!r} is not served here; served: "
                                 f"{', '.join(fhir.RESOURCE_TYPES)}, AuditEvent", code="not-supported")
    return text


async def read(conn: asyncpg.Connection, cipher: HealthCipher, actor: Actor, kind: str, resource_id: str) -> dict:
    kind = _kind(kind)
    stored = await store.get_resource(conn, cipher, kind, _id(resource_id, kind))
    if stored is None:
        raise FhirError.one(404, f"no {kind} {resource_id}", code="not-found")
    patient = await patient_for(conn, actor, stored.patient_id)
    await require_read(conn, cipher, actor, patient, action="read", what=f"{kind}/{stored.id}")
    return stored.resource


_PREFIXES = ("eq", "ge", "gt", "le", "lt")


def _date_bounds(values: list[str], name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`date=ge2026-01-01&date=lt2026-02` as [from, to)."""
    low: dt.datetime | None = None
    high: dt.datetime | None = None
    for value in values:
        prefix = value[:2] if value[:2].isalpha() else "eq"
        if prefix not in _PREFIXES:
            raise FhirError.one(400, f"{name}: prefix {prefix!r} is not supported (eq, ge, gt, le, lt)", name,
                                code="not-supported")
        try:
            start, end = fhir.parse_instant(value[2:] if value[:2].isalpha() else value)
        except ValueError as exc:
            raise FhirError.one(400, f"{name}: {exc}", name, code="value") from None
        lower = {"eq": start, "ge": start, "gt": end}.get(prefix)
        upper = {"eq": end, "le": end, "lt": start}.get(prefix)
        if lower is not None:
            low = lower if low is None else max(low, lower)
        if upper is not None:
            high = upper if high is None else min(high, upper)
    return low, high


def _tokens(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _count(params: dict[str, list[str]], page_max: int, default: int = 50) -> int:
    raw = params.get("_count", [str(default)])[-1]
    try:
        count = int(raw)
    except ValueError:
        raise FhirError.one(400, "_count must be a whole number", "_count", code="value") from None
    if not 0 <= count <= page_max:
        raise FhirError.one(400, f"_count must be between 0 and {page_max}", "_count", code="value")
    return count


def _cursor(params: dict[str, list[str]]) -> tuple[dt.datetime, uuid.UUID] | None:
    if "_cursor" not in params:
        return None
    try:
        moment, ident = web.decode_cursor(params["_cursor"][-1], (str, str))
        return dt.datetime.fromisoformat(moment), uuid.UUID(ident)
    except (InvalidInput, ValueError):
        raise FhirError.one(400, "_cursor is not one this server gave", "_cursor", code="value") from None


def _patient_param(params: dict[str, list[str]]) -> uuid.UUID | None:
    values = params.get("patient") or params.get("subject")
    if not values:
        return None
    text = values[-1].removeprefix("Patient/")
    try:
        return uuid.UUID(text)
    except ValueError:
        raise FhirError.one(404, f"no Patient {text}", "patient", code="not-found") from None


def _bundle(base_url: str, kind: str, params: dict[str, list[str]], rows: list[store.StoredResource], *,
            total: int | None, next_cursor: str | None, extra: list[dict] = ()) -> dict:
    from urllib.parse import urlencode

    def link(cursor: str | None) -> str:
        pairs = [(k, v) for k, values in params.items() if k != "_cursor" for v in values]
        if cursor:
            pairs.append(("_cursor", cursor))
        return f"{base_url}/{kind}" + (f"?{urlencode(pairs)}" if pairs else "")

    links = [{"relation": "self", "url": link(params.get("_cursor", [None])[-1])}]
    if next_cursor:
        links.append({"relation": "next", "url": link(next_cursor)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if total is not None:
        bundle["total"] = total
    bundle["entry"] = [*extra, *({"fullUrl": f"{base_url}/{r.resource_type}/{r.id}", "resource": r.resource,
                                  "search": {"mode": "match"}} for r in rows)]
    return bundle


def _check_params(params: dict[str, list[str]], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise FhirError(400, [Issue(diagnostics=f"search parameter {name!r} is not supported here", expression=[name],
                                    code="not-supported") for name in unknown])


async def search(conn: asyncpg.Connection, rt, cipher: HealthCipher, settings: config.HealthSettings, actor: Actor,
                 kind: str, params: dict[str, list[str]], base_url: str) -> dict:
    kind = _kind(kind)
    if kind == "Patient":
        return await _search_patient(conn, rt, cipher, actor, params, base_url)
    _check_params(params, {"patient", "subject", "date", "category", "code", "_lastUpdated", "_count", "_sort",
                           "_cursor", "_format"})
    patient_id = _patient_param(params)
    if patient_id is None:
        raise FhirError.one(400, fhir.PATIENT_REQUIRED, "patient", code="required")
    patient = await patient_for(conn, actor, patient_id)
    if patient is None:
        raise FhirError.one(404, f"no Patient {patient_id}", "patient", code="not-found")
    count = _count(params, settings.page_max)
    sort = params.get("_sort", ["-date"])[-1]
    if sort not in ("-date", "date"):
        raise FhirError.one(400, "_sort: only date and -date are supported", "_sort", code="not-supported")
    date_from, date_to = _date_bounds(params.get("date", []), "date")
    updated_from, updated_to = _date_bounds(params.get("_lastUpdated", []), "_lastUpdated")
    codes: list[tuple[str | None, str]] = []
    for token in _tokens(params.get("code", [])):
        system, bar, code = token.rpartition("|")
        codes.append((system or None, code) if bar else (None, token))
    # the same keyed hashes the store indexed: "system|code", or "|code" for any system
    hashes = tuple(cipher.lookup(f"{system}|{code}" if system else f"|{code}", context=b"code")
                   for system, code in codes)
    query = store.Query(patient_id=patient_id, types=(kind,), date_from=date_from, date_to=date_to,
                        category=tuple(t.rpartition("|")[2] for t in _tokens(params.get("category", []))),
                        codes=hashes, updated_from=updated_from, updated_to=updated_to)
    await require_read(conn, cipher, actor, patient, action="search", what=f"search {kind}")
    total = await store.count_resources(conn, query)
    if count == 0:
        return _bundle(base_url, kind, params, [], total=total, next_cursor=None)
    rows = await store.find_resources(conn, cipher, query, limit=count + 1, after=_cursor(params),
                                      newest_first=sort == "-date")
    next_cursor = None
    if len(rows) > count:
        rows = rows[:count]
        next_cursor = web.encode_cursor(rows[-1].effective_at.isoformat(), str(rows[-1].id))
    return _bundle(base_url, kind, params, rows, total=total, next_cursor=next_cursor)


async def find_patient(conn: asyncpg.Connection, rt, cipher: HealthCipher, system: str,
                       value: str) -> asyncpg.Record | None:
    """The record of the person with this personal ID number or BHYT card number (None when there is none)."""
    if system == fhir.PERSONAL_ID_SYSTEM:
        resident = await identity.resident_for_personal_id(rt, conn, value)
        return None if resident is None else await store.patient_of_resident(conn, resident["id"])
    if system == fhir.BHYT_SYSTEM:
        if not fhir.BHYT.match(value):
            raise InvalidInput.field("bhyt", "a BHYT card number is 15 characters (2 letters, a digit 1-5, 12 digits)")
        return await store.patient_by_bhyt(conn, cipher, value)
    raise InvalidInput.field("identifier", f"search a Patient by {fhir.PERSONAL_ID_SYSTEM} or {fhir.BHYT_SYSTEM}",
                             source="query")


async def _search_patient(conn: asyncpg.Connection, rt, cipher: HealthCipher, actor: Actor,
                          params: dict[str, list[str]], base_url: str) -> dict:
    _check_params(params, {"identifier", "_id", "_count", "_format"})
    patient = None
    if params.get("_id"):
        found = params["_id"][-1]
        try:
            patient = await store.patient(conn, uuid.UUID(found))
        except ValueError:
            patient = None
    elif params.get("identifier"):
        system, _, value = params["identifier"][-1].rpartition("|")
        try:
            patient = await find_patient(conn, rt, cipher, system, value)
        except InvalidInput as exc:
            raise FhirError.one(400, exc.detail or "bad identifier", "identifier", code="value") from None
    else:
        raise FhirError.one(400, "search Patients by identifier (system|value) or _id", "identifier",
                            code="required")
    rows = []
    if patient is not None:
        await require_read(conn, cipher, actor, patient, action="search", what="search Patient")
        stored = await store.get_resource(conn, cipher, "Patient", patient["id"])
        rows = [stored] if stored is not None else []
    return _bundle(base_url, "Patient", params, rows, total=len(rows), next_cursor=None)


async def everything(conn: asyncpg.Connection, cipher: HealthCipher, settings: config.HealthSettings, actor: Actor,
                     patient_text: str, params: dict[str, list[str]], base_url: str) -> dict:
    """`Patient/{id}/$everything`: the Patient, then every resource of the record (newest first), paged. Each
    entry's resource is its JSON as msgspec.Raw (opened, never parsed: the response encodes it as it is)."""
    _check_params(params, {"start", "end", "_since", "_type", "_count", "_cursor", "_format"})
    patient_id = _id(patient_text, "Patient")
    patient = await patient_for(conn, actor, patient_id)
    if patient is None:
        raise FhirError.one(404, f"no Patient {patient_text}", code="not-found")
    count = _count(params, settings.page_max, default=100)
    types = tuple(_tokens(params.get("_type", []))) or None
    for kind in types or ():
        if kind not in fhir.RESOURCE_TYPES:
            raise FhirError.one(400, f"_type: {kind!r} is not served here", "_type", code="not-supported")
    start = end = since = None
    try:
        if params.get("start"):
            start = fhir.parse_instant(params["start"][-1])[0]
        if params.get("end"):
            end = fhir.parse_instant(params["end"][-1])[1]
        if params.get("_since"):
            since = fhir.parse_instant(params["_since"][-1])[0]
    except ValueError as exc:
        raise FhirError.one(400, str(exc), code="value") from None
    await require_read(conn, cipher, actor, patient, action="everything", what="Patient/$everything")
    others = tuple(t for t in (types or fhir.RESOURCE_TYPES) if t != "Patient")
    query = store.Query(patient_id=patient_id, types=others, date_from=start, date_to=end, updated_from=since)
    after = _cursor(params)
    extra: list[dict] = []
    rows: list[store.StoredResource] = []
    if after is None and (types is None or "Patient" in types):  # the first page starts with the Patient
        own, rows = await store.find_with(conn, cipher, ("Patient", patient_id), query,
                                           limit=count + 1 if count else 0, as_json=True)
        if own is not None:
            extra.append({"fullUrl": f"{base_url}/Patient/{own.id}", "resource": own.resource,
                          "search": {"mode": "match"}})
    elif count:
        rows = await store.find_resources(conn, cipher, query, limit=count + 1, after=after, as_json=True)
    next_cursor = None
    if len(rows) > count:
        rows = rows[:count]
        next_cursor = web.encode_cursor(rows[-1].effective_at.isoformat(), str(rows[-1].id))
    return _bundle(base_url, f"Patient/{patient_id}/$everything", params, rows, total=None, next_cursor=next_cursor,
                   extra=extra)


# ---- the access log as FHIR AuditEvent ----------------------------------------------------------------------

_AUDIT_SUBTYPE = {"read": "read", "search": "search-type", "everything": "search-type", "write": "transaction"}
_PURPOSE = {"consent": "TREAT", "emergency": "ETREAT", "visit": "TREAT", "share-code": "PATRQT"}


def audit_event(row: asyncpg.Record, names: dict[uuid.UUID, str | None]) -> dict:
    who: dict[str, Any] = {"identifier": {"system": "urn:ihanoi:actor", "value": row["actor"]}}
    display = row["facility_name"] or ""
    if row["actor"].startswith("resident:"):
        name = names.get(uuid.UUID(row["actor"].removeprefix("resident:")))
        display = f"{name or 'Nhân viên y tế'} ({display})" if display else (name or "")
    if display:
        who["display"] = display
    action = {"write": "C", "consent": "E", "emergency-access": "E"}.get(row["action"], "R")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"{row['patient_id']}-{row['seq']}",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110",
                 "display": "Patient Record"},
        "action": action,
        "recorded": row["at"].isoformat(),
        "outcome": "0",
        "agent": [{"who": who, "requestor": True}],
        "source": {"observer": {"display": "iHaNoi health"}},
        "entity": [{"what": {"reference": f"Patient/{row['patient_id']}"}, "description": row["what"]}],
    }
    if row["action"] in _AUDIT_SUBTYPE:
        event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction",
                             "code": _AUDIT_SUBTYPE[row["action"]]}]
    if row["purpose"] in _PURPOSE:
        event["purposeOfEvent"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                "code": _PURPOSE[row["purpose"]]}], "text": row["purpose"]}]
    return event


async def audit_events(conn: asyncpg.Connection, actor: Actor, params: dict[str, list[str]], base_url: str,
                       settings: config.HealthSettings) -> dict:
    """The resident's own access log as AuditEvents (a resident only: who read a record is the resident's)."""
    _check_params(params, {"patient", "_count", "_cursor", "_format"})
    if actor.kind == "facility" or actor.resident_id is None:
        raise FhirError.one(403, "the access log is the resident's own to read", code="forbidden")
    patient = await store.patient_of_resident(conn, actor.resident_id)
    asked = _patient_param(params)
    if asked is not None and (patient is None or asked != patient["id"]):
        raise FhirError.one(403, "a resident reads their own access log only", "patient", code="forbidden")
    count = _count(params, settings.page_max)
    before = None
    if "_cursor" in params:
        try:
            (before,) = web.decode_cursor(params["_cursor"][-1], (int,))
        except InvalidInput:
            raise FhirError.one(400, "_cursor is not one this server gave", "_cursor", code="value") from None
    rows = [] if patient is None else await store.access_log(conn, patient["id"], limit=count + 1, before_seq=before)
    next_cursor = None
    if len(rows) > count:
        rows = rows[:count]
        next_cursor = web.encode_cursor(rows[-1]["seq"])
    names = await _clinician_names(conn, rows)
    from urllib.parse import urlencode

    pairs = [(k, v) for k, values in params.items() if k != "_cursor" for v in values]
    links = [{"relation": "self", "url": f"{base_url}/AuditEvent" + (f"?{urlencode(pairs)}" if pairs else "")}]
    if next_cursor:
        following = urlencode([*pairs, ("_cursor", next_cursor)])
        links.append({"relation": "next", "url": f"{base_url}/AuditEvent?{following}"})
    return {"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": [{"fullUrl": f"{base_url}/AuditEvent/{row['patient_id']}-{row['seq']}",
                       "resource": audit_event(row, names), "search": {"mode": "match"}} for row in rows]}


async def _clinician_names(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> dict[uuid.UUID, str | None]:
    ids = list({uuid.UUID(r["actor"].removeprefix("resident:")) for r in rows if r["actor"].startswith("resident:")})
    return await names_of(conn, ids) if ids else {}


# ---- the resident: consent, share codes, the access log ------------------------------------------------------


async def own_patient(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal) -> asyncpg.Record:
    identity.require_level(principal, 2, RESIDENT_AUTH_AGE)
    return await store.ensure_patient(conn, cipher, uuid.UUID(principal.sub))


def _consent_view(row: asyncpg.Record, names: dict[uuid.UUID, str | None], at: dt.datetime) -> Consent:
    state = ("revoked" if row["revoked_at"] is not None else "expired" if row["expires_at"] <= at
             else "pending" if row["starts_at"] > at else "active")
    return Consent(id=row["id"], facility=row["facility_code"], facility_name=row["facility_name"],
                   clinician=None if row["clinician_id"] is None else str(row["clinician_id"]),
                   clinician_name=None if row["clinician_id"] is None else names.get(row["clinician_id"]),
                   via=row["via"], starts_at=web.local(row["starts_at"]), expires_at=web.local(row["expires_at"]),
                   revoked_at=None if row["revoked_at"] is None else web.local(row["revoked_at"]), state=state)


async def give_consent(conn: asyncpg.Connection, cipher: HealthCipher, settings: config.HealthSettings,
                       principal: Principal, body: ConsentCreate) -> Consent:
    patient = await own_patient(conn, cipher, principal)
    facility = await store.facility_by_code(conn, body.facility)
    if facility is None:
        raise UnknownReference.field("facility", "no such facility")
    clinician = None
    if body.clinician is not None:
        clinician = uuid.UUID(body.clinician)
        if clinician not in await identity.holders_of(conn, "health_clinician", [facility["code"]]):
            raise InvalidInput.field("clinician", "not a clinician of this facility")
    at = now()
    starts = max(body.starts_at.astimezone(dt.UTC), at) if body.starts_at else at
    ends = body.expires_at.astimezone(dt.UTC)
    if ends <= starts:
        raise InvalidInput.field("expires_at", "must be after the consent starts (and in the future)")
    if ends - starts > dt.timedelta(days=settings.consent_max_days):
        raise InvalidInput.field("expires_at", f"a consent lasts at most {settings.consent_max_days} days")
    row = await store.insert_consent(conn, patient_id=patient["id"], facility_id=facility["id"],
                                     clinician_id=clinician, via="app", starts_at=starts, expires_at=ends)
    full = await store.consent(conn, row["id"])
    names = await names_of(conn, [clinician]) if clinician else {}
    return _consent_view(full, names, at)


async def list_consents(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal) -> ConsentList:
    patient = await own_patient(conn, cipher, principal)
    rows = await store.consents(conn, patient["id"])
    names = await names_of(conn, list({r["clinician_id"] for r in rows if r["clinician_id"]}))
    at = now()
    return ConsentList(items=[_consent_view(r, names, at) for r in rows])


async def revoke_consent(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal,
                         consent_id: int) -> Consent:
    patient = await own_patient(conn, cipher, principal)
    at = now()
    if await store.revoke_consent(conn, consent_id, patient["id"], at) is None:
        row = await store.consent(conn, consent_id)
        if row is None or row["patient_id"] != patient["id"]:
            raise NotFound("no such consent")
    row = await store.consent(conn, consent_id)
    names = await names_of(conn, [row["clinician_id"]]) if row["clinician_id"] else {}
    return _consent_view(row, names, at)


def _share_hash(cipher: HealthCipher, code: str) -> bytes:
    return cipher.lookup(code.strip().upper().replace("-", "").replace(" ", ""), context=b"share-code")


async def create_share_code(conn: asyncpg.Connection, cipher: HealthCipher, settings: config.HealthSettings,
                            principal: Principal, body: ShareCodeCreate) -> ShareCode:
    patient = await own_patient(conn, cipher, principal)
    minutes = body.access_minutes or settings.share_access_minutes
    if minutes > settings.consent_max_days * 24 * 60:
        raise InvalidInput.field("access_minutes", "longer than the longest consent")
    code = "".join(secrets.choice(SHARE_ALPHABET) for _ in range(SHARE_LENGTH))
    expires = now() + dt.timedelta(seconds=settings.share_code_seconds)
    await store.insert_share_code(conn, code_hash=_share_hash(cipher, code), patient_id=patient["id"],
                                  access_minutes=minutes, expires_at=expires)
    shown = f"{code[:5]}-{code[5:]}"
    return ShareCode(code=shown, qr=f"ihanoi:health-share:{code}", expires_at=web.local(expires),
                     access_minutes=minutes)


_REDEEM_FAILED = "failed share-code redemptions"


async def redeem_share_code(conn: asyncpg.Connection, redis, cipher: HealthCipher, settings: config.HealthSettings,
                            actor: Actor, body: ShareCodeRedeem, *, client_ip: str) -> ShareRedeemed:
    """A share code a resident shows, redeemed for a consent. A code is short-lived but short (~49 bits): failed
    tries are counted per caller and per address, and past either budget every try is refused (429) before the
    code is even looked at, so guessing is slow and a refused try never uses up the resident's code."""
    if actor.facility is None:
        raise Forbidden("a facility's system or clinician redeems share codes")
    budgets = (("health-share-failed", actor.label, settings.rate_share_redeem_failed),
               ("health-share-failed-address", client_ip, settings.rate_share_redeem_failed_address))
    for bucket, who, rate in budgets:
        await ratelimit.check(redis, bucket, who, rate, what=_REDEEM_FAILED)
    at = now()
    code = body.code.removeprefix("ihanoi:health-share:")
    hashed = _share_hash(cipher, code)
    row = await store.take_share_code(conn, hashed, at)
    if row is None:
        for bucket, who, rate in budgets:
            await ratelimit.hit(redis, bucket, who, rate, what=_REDEEM_FAILED)
        log.info("share code not redeemed", extra={"facility_code": actor.facility["code"]})
        raise InvalidInput.field("code", "unknown, expired or already used")
    consent = await store.insert_consent(conn, patient_id=row["patient_id"], facility_id=actor.facility_id,
                                         clinician_id=None, via="share_code", starts_at=at,
                                         expires_at=at + dt.timedelta(minutes=row["access_minutes"]))
    await store.share_code_consent(conn, hashed, consent["id"])
    await log_access(conn, cipher, actor, row["patient_id"], action="consent", purpose="share-code",
                     what=f"share code redeemed: consent {consent['id']}")
    return ShareRedeemed(patient=str(row["patient_id"]), consent=consent["id"],
                         expires_at=web.local(consent["expires_at"]))


async def emergency_access(conn: asyncpg.Connection, rt, cipher: HealthCipher, settings: config.HealthSettings,
                           actor: Actor, body: EmergencyCreate) -> EmergencyAccess:
    """Break-glass: the facility reads the record for a short window; recorded with its reason and told to the
    resident at once (their inbox and a push)."""
    if actor.facility is None:
        raise Forbidden("a facility's system or clinician opens an emergency access")
    patient = None
    if body.patient:
        try:
            patient = await store.patient(conn, uuid.UUID(body.patient))
        except ValueError:
            raise InvalidInput.field("patient", "not a Patient id") from None
    elif body.personal_id:
        patient = await find_patient(conn, rt, cipher, fhir.PERSONAL_ID_SYSTEM, body.personal_id)
    elif body.bhyt:
        patient = await find_patient(conn, rt, cipher, fhir.BHYT_SYSTEM, body.bhyt)
    else:
        raise InvalidInput.field("patient", "name the patient: patient, personal_id or bhyt")
    if patient is None:
        raise NotFound("no health record for this person")
    at = now()
    reason = body.reason.strip()
    expires = at + dt.timedelta(minutes=settings.emergency_minutes)
    row = await store.insert_emergency(
        conn, patient_id=patient["id"], facility_id=actor.facility_id, actor=actor.label,
        reason_enc=cipher.seal(reason.encode(), context=b"emergency:" + patient["id"].bytes), starts_at=at,
        expires_at=expires)
    await log_access(conn, cipher, actor, patient["id"], action="emergency-access", purpose="emergency",
                     what=f"emergency access {row['id']} until {expires.isoformat()}", reason=reason)
    local = web.local(at)
    await notify(conn, [patient["resident_id"]], "health.emergency_access",
                 {"facility": actor.facility["name"], "at_vi": local.strftime("%H:%M %d/%m/%Y"),
                  "at_en": local.strftime("%H:%M on %d %b %Y"), "reason": reason},
                 category="health", idempotency_key=f"health-emergency-{row['id']}",
                 deep_link="ihanoi://health/access-log")
    log.info("emergency access opened", extra={"facility_code": actor.facility["code"], "access": row["id"]})
    return EmergencyAccess(id=row["id"], patient=str(patient["id"]), expires_at=web.local(expires))


async def access_log(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal, *, limit: int,
                     cursor: str | None) -> AccessLog:
    patient = await own_patient(conn, cipher, principal)
    before = web.decode_cursor(cursor, (int,))[0] if cursor else None
    rows = await store.access_log(conn, patient["id"], limit=limit + 1, before_seq=before)
    more = len(rows) > limit
    rows = rows[:limit]
    names = await _clinician_names(conn, rows)
    items = []
    for row in rows:
        clinician = (names.get(uuid.UUID(row["actor"].removeprefix("resident:")))
                     if row["actor"].startswith("resident:") else None)
        items.append(AccessEntry(
            seq=row["seq"], at=web.local(row["at"]), who=row["actor_kind"], clinician_name=clinician,
            facility=row["facility_code"], facility_name=row["facility_name"], action=row["action"],
            purpose=row["purpose"], what=row["what"], reason=store.access_reason(cipher, row)))
    broken = await store.verify_chain(conn, cipher, patient["id"])
    return AccessLog(items=items, intact=broken is None, broken_at=broken,
                     next_cursor=web.encode_cursor(rows[-1]["seq"]) if more else None)


# ---- facilities ----------------------------------------------------------------------------------------------


def facility_view(row: asyncpg.Record) -> Facility:
    return Facility(code=row["code"], name=row["name"], kind=row["kind"], bhyt_code=row["bhyt_code"])


async def add_facility(conn: asyncpg.Connection, body: FacilityCreate) -> Facility:
    try:
        row = await store.insert_facility(conn, code=body.code, name=body.name, kind=body.kind,
                                          bhyt_code=body.bhyt_code)
    except asyncpg.UniqueViolationError:
        raise InvalidInput.field("code", "a facility with this code or BHYT facility code exists already") from None
    return facility_view(row)


async def clinicians(conn: asyncpg.Connection, code: str) -> ClinicianList:
    """Whom a resident may share with personally at a facility: the residents holding its clinician role."""
    if await store.facility_by_code(conn, code) is None:
        raise NotFound("no such facility")
    ids = await identity.holders_of(conn, "health_clinician", [code])
    names = await names_of(conn, ids) if ids else {}
    return ClinicianList(items=sorted((Clinician(id=str(i), name=names.get(i)) for i in ids),
                                      key=lambda c: (c.name or "", c.id)))


async def list_facilities(conn: asyncpg.Connection) -> list[Facility]:
    return [facility_view(r) for r in await store.facilities(conn)]
