"""Helpers for the resident-side and outbound health tests: a facility, a resident's record, resources written
through the core's store (as its FHIR ingest does), and a display app that is a real machine client."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from app.identity import service as identity
from health import crypto, fhir, store
from tests.feedback.support import bearer  # noqa: F401 - re-exported

RESIDENT, OTHER = "001090012345", "001190054321"
BHYT = "DN4010123456789"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"


def cipher_of(client):
    return crypto.cipher_of(client.app.state.settings)


async def facility(conn, code: str | None = None, name: str = "Bệnh viện Bạch Mai") -> dict:
    code = code or f"bv-{uuid.uuid4().hex[:8]}"
    bhyt_code = f"{int(uuid.uuid4().int % 100000):05d}"
    return dict(await store.insert_facility(conn, code=code, name=name, kind="hospital", bhyt_code=bhyt_code))


async def record(client, conn, personal_id: str = RESIDENT, bhyt: str | None = BHYT) -> dict:
    """The resident (created if new) and their health record."""
    resident = await identity.resident_for_personal_id(client.app.state.identity, conn, personal_id, create=True)
    return dict(await store.ensure_patient(conn, cipher_of(client), resident["id"], bhyt=bhyt))


def at(days_ago: float, hour: int = 9) -> dt.datetime:
    base = dt.datetime.now(dt.UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return base - dt.timedelta(days=days_ago)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def write(client, conn, patient: dict, fac: dict | None, resource: dict, *, effective_at: dt.datetime,
                encounter_id: uuid.UUID | None = None,
                source: str | None = None) -> store.StoredResource:
    # indexed exactly as the core's FHIR transaction indexes it (status, codes, category)
    terms = fhir.index_terms(resource["resourceType"], resource, effective_at)
    terms.pop("encounter")
    index = store.Index(**(terms | {"effective_at": effective_at}), encounter_id=encounter_id)
    stored, _ = await store.upsert_resource(
        conn, cipher_of(client), resource_type=resource["resourceType"], patient_id=patient["id"],
        facility_id=fac["id"] if fac else None, source_key=source or f"urn:test|{uuid.uuid4().hex}",
        resource=resource, index=index)
    return stored


async def visit(client, conn, patient: dict, fac: dict, *, days_ago: float = 3, status: str = "finished",
                source: str | None = None) -> store.StoredResource:
    start = at(days_ago)
    body = {"resourceType": "Encounter", "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "Khám ngoại trú"},
            "type": [{"text": "Khám nội tổng quát"}], "reasonCode": [{"text": "Sốt, đau họng hai ngày"}],
            "period": {"start": iso(start), "end": iso(start + dt.timedelta(minutes=40))}}
    return await write(client, conn, patient, fac, body, effective_at=start, source=source)


async def full_visit(client, conn, patient: dict, fac: dict, days_ago: float = 3) -> store.StoredResource:
    """A finished outpatient visit with a diagnosis, a prescription and a lab result, as a facility would send."""
    encounter = await visit(client, conn, patient, fac, days_ago=days_ago)
    when = at(days_ago)
    await write(client, conn, patient, fac, {
        "resourceType": "Condition", "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": ICD10, "code": "J02.9", "display": "Viêm họng cấp"}], "text": "Viêm họng cấp"},
        "onsetDateTime": iso(when)}, effective_at=when, encounter_id=encounter.id)
    await write(client, conn, patient, fac, {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "Amoxicillin 500 mg"}, "authoredOn": iso(when),
        "dosageInstruction": [{"text": "Uống 1 viên × 3 lần/ngày, sau ăn, trong 7 ngày"}]},
        effective_at=when, encounter_id=encounter.id)
    await write(client, conn, patient, fac, {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7", "display": "Đường huyết"}], "text": "Đường huyết"},
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"}, "effectiveDateTime": iso(when)},
        effective_at=when, encounter_id=encounter.id)
    return encounter


async def display_app(client, conn, *, roles=("health_display",)) -> tuple[str, dict[str, str]]:
    """A machine client (the VNeID display), signed in with private_key_jwt; (client id, headers)."""
    private = ec.generate_private_key(ec.SECP256R1())
    client_id = f"vneid-display-{uuid.uuid4().hex[:6]}"
    await identity.add_client(conn, client_id=client_id, name="VNeID – Sổ sức khỏe điện tử", roles=list(roles),
                              scope="health", public_jwk=msgspec.json.decode(ECAlgorithm.to_jwk(private.public_key())))
    claims = {"iss": client_id, "sub": client_id, "aud": "http://ihanoi.test/oauth/token", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    response = await client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion": jwt.encode(claims, private, algorithm="ES256"),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code == 200, response.text
    return client_id, {"Authorization": f"Bearer {response.json()['access_token']}"}


async def access_rows(conn, patient: dict) -> list[dict]:
    rows = await conn.fetch("SELECT actor, actor_kind, action, purpose, what FROM health_access_log "
                            "WHERE patient_id = $1 ORDER BY seq", patient["id"])
    return [dict(r) for r in rows]
