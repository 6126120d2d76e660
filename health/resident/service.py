"""The rules of the resident's side: their summary, timeline and visit PDFs, and the apps they let read the summary.

A resident reads only their own record (found from the caller's identity, never from a path). Every read of a
record is appended to the core's access log in the same transaction: the resident's own (`resident:<id>`, purpose
`own`) and an app's (`client:<id>`, purpose `app-grant`), so the resident sees every access.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg

from app import web
from app.errors import NotFound, UnknownReference, Unprocessable
from app.identity import Principal, machine_client, names_of
from health import display
from health import service as health_service
from health import store as health_store
from health.crypto import HealthCipher
from health.resident import ips, pdf, store
from health.resident.models import (
    AppGrant,
    AppGrantCreate,
    EmptyReason,
    Summary,
    SummaryEntry,
    SummarySection,
    Timeline,
    TimelineItem,
)

DISPLAY_ROLE = "health_display"
TIMELINE_TYPES = ("Encounter", "Condition", "Observation", "MedicationRequest", "Immunization", "AllergyIntolerance",
                  "DiagnosticReport", "DocumentReference")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _resident(principal: Principal) -> uuid.UUID:
    return uuid.UUID(principal.sub)


async def own_patient(conn: asyncpg.Connection, principal: Principal) -> asyncpg.Record | None:
    return await health_store.patient_of_resident(conn, _resident(principal))


async def _log(conn: asyncpg.Connection, cipher: HealthCipher, patient: asyncpg.Record, principal: Principal, *,
               action: str, what: str) -> None:
    """`patient`: the row this request read (its chain head makes the append one statement)."""
    if principal.kind == "resident":
        # The core's `log_access` leaves a resident's own reads out; the record's log takes them (actor_kind
        # resident), and the resident sees their own reads among the others.
        await health_store.append_access(conn, cipher, patient["id"], actor=f"resident:{principal.sub}",
                                         actor_kind="resident", facility_id=None, action=action, purpose="own",
                                         what=what, known=patient)
        return
    app = health_service.Actor(kind="app", label=f"client:{principal.client_id}", facility=None, resident_id=None)
    await health_service.log_access(conn, cipher, app, patient["id"], action=action, purpose="app-grant", what=what,
                                    known=patient)


# ---- the summary ---------------------------------------------------------------------------------------------


async def summary_sections(conn: asyncpg.Connection, cipher: HealthCipher,
                           patient_id: uuid.UUID) -> dict[str, list[health_store.StoredResource]]:
    """The resources each section shows, newest first: one statement filters and cuts them, only those are opened."""
    grouped: dict[str, list[health_store.StoredResource]] = {spec.key: [] for spec in ips.SECTIONS}
    for row in await store.summary_rows(conn, patient_id):
        grouped[row["section"]].append(health_store.opened(cipher, row))
    return grouped


def _entry(row: asyncpg.Record, line: display.Line) -> SummaryEntry:
    return SummaryEntry(id=str(row["id"]), type=row["resource_type"], text=line.text, detail=line.detail,
                        status=line.status, date=web.local(row["effective_at"]), code=line.code,
                        facility=row["facility_name"])


def build_summary(patient_id: uuid.UUID | None, grouped: dict[str, list[SummaryEntry]], language: str) -> Summary:
    sections = []
    for spec in ips.SECTIONS:
        entries = grouped.get(spec.key) or []
        empty = None if entries else EmptyReason(code="unavailable", text=ips.EMPTY[language])
        sections.append(SummarySection(key=spec.key, code=spec.loinc, title=spec.en if language == "en" else spec.vi,
                                       entries=entries, empty_reason=empty))
    return Summary(patient_id=str(patient_id) if patient_id else None, generated_at=web.local(now()),
                   language=language, sections=sections)


async def summary_of(conn: asyncpg.Connection, cipher: HealthCipher, patient: asyncpg.Record | None,
                     principal: Principal, language: str) -> Summary:
    """The summary's sections: one statement picks each section's rows (with who wrote them), and only their
    sealed lines are opened, not the resources."""
    if patient is None:  # no facility has written anything yet: every section empty, nothing to log against
        return build_summary(None, {}, language)
    grouped: dict[str, list[SummaryEntry]] = {spec.key: [] for spec in ips.SECTIONS}
    for row in await store.summary_lines(conn, patient["id"]):
        grouped[row["section"]].append(_entry(row, health_store.line_of(cipher, row)))
    await _log(conn, cipher, patient, principal, action="read", what="summary")
    return build_summary(patient["id"], grouped, language)


async def document_of(conn: asyncpg.Connection, cipher: HealthCipher, patient: asyncpg.Record | None,
                      principal: Principal, language: str, base_url: str) -> dict:
    """The summary as a FHIR `document` Bundle (Composition LOINC 60591-5 first)."""
    if patient is None:
        raise NotFound("no health record yet: no facility has written one")
    grouped = await summary_sections(conn, cipher, patient["id"])
    stored_patient = await health_store.get_resource(conn, cipher, "Patient", patient["id"])
    patient_resource = stored_patient.resource if stored_patient else {"resourceType": "Patient",
                                                                       "id": str(patient["id"])}
    await _log(conn, cipher, patient, principal, action="read", what="summary document")
    return ips.document_bundle(patient_resource, {k: [r.resource for r in rows] for k, rows in grouped.items()},
                               language=language, base_url=base_url, now=now())


async def my_summary(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal, language: str) -> Summary:
    return await summary_of(conn, cipher, await own_patient(conn, principal), principal, language)


async def my_document(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal, language: str,
                      base_url: str) -> dict:
    return await document_of(conn, cipher, await own_patient(conn, principal), principal, language, base_url)


# ---- the timeline --------------------------------------------------------------------------------------------


TIMELINE_CURSOR = (dt.datetime, uuid.UUID)  # the clinical date and the resource's id of the page's last item


def _after(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    return None if cursor is None else web.decode_cursor(cursor, TIMELINE_CURSOR)


async def my_timeline(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal, *, cursor: str | None,
                      limit: int) -> Timeline:
    """Everything in the record, newest clinical date first, keyset-paged by (date, id)."""
    after = _after(cursor)
    patient = await own_patient(conn, principal)
    if patient is None:
        return Timeline(items=[])
    rows = await health_store.find_lines(
        conn, health_store.Query(patient_id=patient["id"], types=TIMELINE_TYPES), limit=limit + 1, after=after)
    page, more = rows[:limit], len(rows) > limit
    items = []
    for row in page:
        line = health_store.line_of(cipher, row)
        visit = row["id"] if row["resource_type"] == "Encounter" else row["encounter_id"]
        items.append(TimelineItem(
            id=str(row["id"]), type=row["resource_type"], text=line.text, detail=line.detail, status=line.status,
            date=web.local(row["effective_at"]), facility=row["facility_name"],
            encounter_id=str(visit) if visit else None))
    await _log(conn, cipher, patient, principal, action="read", what="timeline")
    last = page[-1] if page else None
    next_cursor = web.encode_cursor(last["effective_at"], last["id"]) if more and last else None
    return Timeline(items=items, next_cursor=next_cursor)


# ---- a visit's PDF -------------------------------------------------------------------------------------------


async def my_visit_pdf(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal,
                       encounter_id: uuid.UUID, language: str) -> tuple[bytes, dt.datetime | None]:
    patient = await own_patient(conn, principal)
    encounter = await health_store.get_resource(conn, cipher, "Encounter", encounter_id)
    # someone else's visit answers exactly as no visit does
    if patient is None or encounter is None or encounter.patient_id != patient["id"]:
        raise NotFound("no such visit in your record")
    linked = await health_store.find_resources(
        conn, cipher, health_store.Query(patient_id=patient["id"], encounter_id=encounter_id), limit=500,
        newest_first=False)
    allergies = await health_store.find_resources(
        conn, cipher, health_store.Query(patient_id=patient["id"], types=("AllergyIntolerance",)), limit=100)
    facility = await health_store.facility(conn, encounter.facility_id) if encounter.facility_id else None
    name = (await names_of(conn, [patient["resident_id"]])).get(patient["resident_id"])
    resource = encounter.resource
    period = resource.get("period") or {}

    def lines(*kinds: str) -> list[str]:
        """What was recorded at this visit (resolved problems too: it is the visit's own account)."""
        found = []
        for stored in linked:
            if stored.resource_type not in kinds or stored.resource.get("status") == "entered-in-error":
                continue
            text, detail = ips.describe(stored.resource)
            code = ips.first_code(stored.resource.get("code"))
            shown = f"{text} ({code.split('|')[-1]})" if stored.resource_type == "Condition" and code else text
            found.append(f"{shown}: {detail}" if detail else shown)
        return found

    reasons = [ips.concept_text(r) for r in resource.get("reasonCode") or []]
    doc = pdf.VisitDocument(
        facility=facility["name"] if facility else "—", patient=name or "—",
        start=ips._parse(period.get("start")), end=ips._parse(period.get("end")),
        visit_class=(resource.get("class") or {}).get("display") or (resource.get("class") or {}).get("code") or "",
        status=resource.get("status") or "", reasons=[r for r in reasons if r], diagnoses=lines("Condition"),
        medications=lines("MedicationRequest"), results=lines("Observation", "DiagnosticReport"),
        immunizations=lines("Immunization"),
        allergies=[ips.describe(a.resource)[0] for a in allergies
                   if ips.is_current(ips.BY_KEY["allergies"], a.status)])
    await _log(conn, cipher, patient, principal, action="read", what=f"Encounter/{encounter_id} pdf")
    # fpdf2 is pure Python: lay the pages out off the event loop
    body = await asyncio.to_thread(pdf.render, doc, language, issued=now())
    return body, doc.start


# ---- apps the resident lets read the summary (the VNeID display) ---------------------------------------------


def _grant(row: asyncpg.Record, app_name: str | None, at: dt.datetime) -> AppGrant:
    return AppGrant(id=row["id"], client_id=row["client_id"], app_name=app_name,
                    granted_at=web.local(row["granted_at"]), expires_at=web.local(row["expires_at"]),
                    revoked_at=web.local(row["revoked_at"]) if row["revoked_at"] else None,
                    in_force=row["revoked_at"] is None and row["expires_at"] > at)


async def grant_app(conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal, body: AppGrantCreate, *,
                    max_days: int) -> AppGrant:
    if body.days > max_days:
        # the schema's bound is the hard one; this deployment's is a setting (IHANOI_HEALTH_DISPLAY_GRANT_MAX_DAYS)
        raise Unprocessable.field("days", f"at most {max_days} days")
    app = await machine_client(conn, body.client_id)
    if app is None or DISPLAY_ROLE not in {role.partition(":")[0] for role in app[1]}:
        raise UnknownReference.field("client_id", "no app that displays health summaries has this id")
    patient = await health_store.ensure_patient(conn, cipher, _resident(principal))
    at = now()
    row = await store.grant_app(conn, patient["id"], body.client_id, now=at,
                                expires_at=at + dt.timedelta(days=body.days))
    return _grant(row, app[0], at)


async def my_apps(conn: asyncpg.Connection, principal: Principal) -> list[AppGrant]:
    patient = await own_patient(conn, principal)
    if patient is None:
        return []
    at = now()
    rows = await store.app_grants(conn, patient["id"])
    names = {}
    for client_id in {r["client_id"] for r in rows}:
        app = await machine_client(conn, client_id)
        names[client_id] = app[0] if app else None
    return [_grant(row, names[row["client_id"]], at) for row in rows]


async def revoke_app(conn: asyncpg.Connection, principal: Principal, client_id: str) -> AppGrant:
    patient = await own_patient(conn, principal)
    at = now()
    row = await store.revoke_app(conn, patient["id"], client_id, at) if patient else None
    if row is None:
        raise NotFound("this app has no grant in force")
    app = await machine_client(conn, client_id)
    return _grant(row, app[0] if app else None, at)


async def _shared_patient(rt, conn: asyncpg.Connection, principal: Principal, personal_id: str) -> asyncpg.Record:
    """The record of this resident if they granted the calling app now; every refusal answers the same 404, so an
    app learns nothing of people who did not choose it."""
    from app.identity.service import resident_for_personal_id

    resident = await resident_for_personal_id(rt, conn, personal_id)
    patient = await health_store.patient_of_resident(conn, resident["id"]) if resident else None
    if patient is None or principal.client_id is None or await store.live_app_grant(
            conn, patient["id"], principal.client_id, now()) is None:
        raise NotFound("no health summary is shared with this app for this person")
    return patient


async def display_summary(rt, conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal,
                          personal_id: str, language: str) -> Summary:
    patient = await _shared_patient(rt, conn, principal, personal_id)
    return await summary_of(conn, cipher, patient, principal, language)


async def display_document(rt, conn: asyncpg.Connection, cipher: HealthCipher, principal: Principal,
                           personal_id: str, language: str, base_url: str) -> dict:
    patient = await _shared_patient(rt, conn, principal, personal_id)
    return await document_of(conn, cipher, patient, principal, language, base_url)
