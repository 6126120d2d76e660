"""Helpers for the health tests: facilities whose systems are real machine clients, residents, FHIR bundles."""

from __future__ import annotations

import itertools
import time
import uuid

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from app.identity import service as identity
from health import fhir, store
from tests.feedback.support import bearer, grant, key  # noqa: F401 - re-exported for the health tests

# Hanoi-born residents: a man of 1990 and a woman of 1990 (digit 4: century and sex), their BHYT cards
PATIENT, OTHER = "001090012345", "001190054321"
PATIENT_BHYT, OTHER_BHYT = "DN4010123456789", "HT3010987654321"
CLINICIAN = "001085011111"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
_BHYT_CODES = itertools.count(50000)  # unique in the run (the demo's and the CLI test's are below 02000)


async def facility(client, conn, code: str | None = None, name: str = "Bệnh viện Bạch Mai") -> tuple[str, dict]:
    """A facility and its system, a machine client holding health_facility:<code>, signed in."""
    code = code or f"bv-{uuid.uuid4().hex[:8]}"
    bhyt_code = f"{next(_BHYT_CODES):05d}"
    await store.insert_facility(conn, code=code, name=name, kind="hospital", bhyt_code=bhyt_code)
    private = ec.generate_private_key(ec.SECP256R1())
    client_id = f"his-{uuid.uuid4().hex[:8]}"
    await identity.add_client(conn, client_id=client_id, name=name, roles=[f"health_facility:{code}"], scope="health",
                              public_jwk=msgspec.json.decode(ECAlgorithm.to_jwk(private.public_key())))
    claims = {"iss": client_id, "sub": client_id, "aud": "http://ihanoi.test/oauth/token", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    response = await client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion": jwt.encode(claims, private, algorithm="ES256"),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code == 200, response.text
    return code, {"Authorization": f"Bearer {response.json()['access_token']}"}


def patient(personal_id: str = PATIENT, bhyt: str | None = PATIENT_BHYT, **extra) -> dict:
    year = 1900 + int(personal_id[4:6]) + 100 * (int(personal_id[3]) // 2)
    identifiers = [{"system": fhir.PERSONAL_ID_SYSTEM, "value": personal_id}] if personal_id else []
    if bhyt:
        identifiers.append({"system": fhir.BHYT_SYSTEM, "value": bhyt})
    return {"resourceType": "Patient", "identifier": identifiers, "name": [{"text": "Nguyễn Văn An"}],
            "gender": "female" if int(personal_id[3]) % 2 else "male", "birthDate": f"{year}-01-01"} | extra


def encounter(ident: str, subject: str = "urn:uuid:p1", **extra) -> dict:
    return {"resourceType": "Encounter", "identifier": [{"system": "urn:his:encounter", "value": ident}],
            "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                            "code": "AMB"},
            "subject": {"reference": subject},
            "period": {"start": "2026-05-01T08:00:00+07:00", "end": "2026-05-01T09:00:00+07:00"}} | extra


def observation(ident: str, subject: str = "urn:uuid:p1", *, when: str = "2026-05-01T08:30:00+07:00",
                category: str = "vital-signs", code: str = "8867-4", value: float = 72, **extra) -> dict:
    return {"resourceType": "Observation", "identifier": [{"system": "urn:his:obs", "value": ident}],
            "status": "final", "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": subject},
            "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "/min"}} | extra


def condition(ident: str, subject: str = "urn:uuid:p1", code: str = "I10", **extra) -> dict:
    return {"resourceType": "Condition", "identifier": [{"system": "urn:his:cond", "value": ident}],
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": ICD10, "code": code}], "text": "Tăng huyết áp"},
            "subject": {"reference": subject}, "recordedDate": "2026-05-01"} | extra


def bundle(*resources: tuple[str | None, dict]) -> dict:
    """A transaction Bundle of (fullUrl, resource) pairs."""
    entries = []
    for full_url, resource in resources:
        entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def send(client, headers, body: dict, expect: int = 200) -> dict:
    response = await client.post("/fhir", content=msgspec.json.encode(body), headers=headers | FHIR_JSON)
    assert response.status_code == expect, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()


async def visit(client, headers, personal_id: str = PATIENT, bhyt: str | None = PATIENT_BHYT,
                prefix: str = "v1") -> str:
    """A visit: the patient, an encounter, a pulse and a diagnosis; returns the Patient id."""
    answer = await send(client, headers, bundle(
        ("urn:uuid:p1", patient(personal_id, bhyt)),
        ("urn:uuid:e1", encounter(f"{prefix}-enc")),
        (None, observation(f"{prefix}-obs", encounter={"reference": "urn:uuid:e1"})),
        (None, condition(f"{prefix}-cond", encounter={"reference": "urn:uuid:e1"})),
    ))
    return answer["entry"][0]["response"]["location"].split("/")[1]


async def fhir_get(client, headers, path: str, expect: int = 200, **params) -> dict:
    response = await client.get(f"/fhir/{path}", params=params, headers=headers)
    assert response.status_code == expect, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()
