"""Demo data for `ihanoi dev` / `ihanoi seed`: a few facilities, and the record of the stand-in's first demo
resident (Nguyễn Văn An, 001085012345), written through the same FHIR transaction a facility sends.

Idempotent: facilities have fixed codes and every resource the facility's identifier, so seeding again
updates what is there and creates nothing new. The facilities' BHYT codes are demo values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace

import asyncpg
import msgspec

from app.identity.crypto import Vault, load_master_key
from health import config, fhir, service, store
from health.crypto import cipher_of

# (code, name, kind, BHYT facility code)
FACILITIES = [
    ("bach-mai", "Bệnh viện Bạch Mai", "hospital", "01901"),
    ("viet-duc", "Bệnh viện Hữu nghị Việt Đức", "hospital", "01902"),
    ("tram-y-te-hang-bac", "Trạm Y tế phường Hàng Bạc", "health_station", "01903"),
    ("phong-kham-hoan-kiem", "Phòng khám Đa khoa Hoàn Kiếm", "clinic", "01904"),
]
DEMO_PERSONAL_ID = "001085012345"  # the stand-in's Nguyễn Văn An: sign in as him to see this record
DEMO_BHYT = "GD4010185012345"
HIS = "https://his.bachmai.demo/fhir/sid"


def _visit() -> dict:
    icd10, loinc = "http://hl7.org/fhir/sid/icd-10", "http://loinc.org"
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    subject = {"reference": "urn:uuid:patient"}
    encounter = {"reference": "urn:uuid:visit"}

    def obs(ident: str, code: str, text: str, value: float, unit: str, kind: str, when: str) -> tuple[str, dict]:
        return f"urn:uuid:{ident}", {
            "resourceType": "Observation", "identifier": [{"system": f"{HIS}/obs", "value": ident}],
            "status": "final", "category": [{"coding": [{"system": category, "code": kind}]}],
            "code": {"coding": [{"system": loinc, "code": code}], "text": text}, "subject": subject,
            "encounter": encounter, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    entries: list[tuple[str, dict]] = [
        ("urn:uuid:patient", {
            "resourceType": "Patient", "name": [{"text": "Nguyễn Văn An", "family": "Nguyễn", "given": ["Văn An"]}],
            "identifier": [{"system": fhir.PERSONAL_ID_SYSTEM, "value": DEMO_PERSONAL_ID},
                           {"system": fhir.BHYT_SYSTEM, "value": DEMO_BHYT}],
            "gender": "male", "birthDate": "1985-03-12",
            "address": [{"text": "Phường Hàng Bạc, Hà Nội", "city": "Hà Nội", "country": "VN"}]}),
        ("urn:uuid:visit", {
            "resourceType": "Encounter", "identifier": [{"system": f"{HIS}/encounter", "value": "KB-2026-000123"}],
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "ambulatory"},
            "type": [{"text": "Khám tim mạch ngoại trú"}], "subject": subject,
            "period": {"start": "2026-03-10T08:15:00+07:00", "end": "2026-03-10T09:40:00+07:00"},
            "reasonCode": [{"text": "Đau đầu, chóng mặt"}]}),
        ("urn:uuid:hypertension", {
            "resourceType": "Condition", "identifier": [{"system": f"{HIS}/condition", "value": "CD-000123-1"}],
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": icd10, "code": "I10"}], "text": "Tăng huyết áp vô căn (nguyên phát)"},
            "subject": subject, "encounter": encounter, "recordedDate": "2026-03-10"}),
        obs("bp-sys", "8480-6", "Huyết áp tâm thu", 150, "mm[Hg]", "vital-signs", "2026-03-10T08:20:00+07:00"),
        obs("bp-dia", "8462-4", "Huyết áp tâm trương", 95, "mm[Hg]", "vital-signs", "2026-03-10T08:20:00+07:00"),
        obs("glucose", "2345-7", "Glucose máu", 6.1, "mmol/L", "laboratory", "2026-03-10T08:50:00+07:00"),
        obs("ldl", "13457-7", "LDL-Cholesterol", 3.9, "mmol/L", "laboratory", "2026-03-10T08:50:00+07:00"),
        ("urn:uuid:labs", {
            "resourceType": "DiagnosticReport", "identifier": [{"system": f"{HIS}/report", "value": "XN-000123"}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": {"coding": [{"system": loinc, "code": "24323-8"}], "text": "Sinh hóa máu"},
            "subject": subject, "encounter": encounter, "effectiveDateTime": "2026-03-10T08:50:00+07:00",
            "result": [{"reference": "urn:uuid:glucose"}, {"reference": "urn:uuid:ldl"}],
            "conclusion": "Glucose máu giới hạn trên; LDL tăng nhẹ."}),
        ("urn:uuid:amlodipine", {
            "resourceType": "MedicationRequest", "identifier": [{"system": f"{HIS}/rx", "value": "DT-000123-1"}],
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "C08CA01"}],
                                          "text": "Amlodipin 5 mg"},
            "subject": subject, "encounter": encounter, "authoredOn": "2026-03-10",
            "dosageInstruction": [{"text": "Uống 1 viên mỗi sáng sau ăn, trong 30 ngày"}]}),
        ("urn:uuid:penicillin", {
            "resourceType": "AllergyIntolerance", "identifier": [{"system": f"{HIS}/allergy", "value": "DU-000123"}],
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-"
                                                     "clinical", "code": "active"}]},
            "type": "allergy", "category": ["medication"], "criticality": "high",
            "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J01CE"}], "text": "Penicillin"},
            "patient": subject, "recordedDate": "2026-03-10",
            "reaction": [{"manifestation": [{"text": "Nổi mề đay, khó thở"}]}]}),
        ("urn:uuid:covid", {
            "resourceType": "Immunization", "identifier": [{"system": f"{HIS}/vaccine", "value": "TC-2021-0456"}],
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}],
                            "text": "Vắc xin COVID-19 (Pfizer-BioNTech)"},
            "patient": subject, "occurrenceDateTime": "2021-09-15", "doseQuantity": {"value": 0.3, "unit": "mL"}}),
        ("urn:uuid:appointment", {
            "resourceType": "DocumentReference",
            "identifier": [{"system": f"{HIS}/document", "value": "GH-000123"}], "status": "current",
            "type": {"coding": [{"system": loinc, "code": "56446-8"}], "text": "Giấy hẹn khám lại"},
            "subject": subject, "date": "2026-03-10T09:40:00+07:00",
            "description": "Hẹn khám lại ngày 10/04/2026 tại Khoa Tim mạch",
            "content": [{"attachment": {"contentType": "text/plain", "language": "vi",
                                        "title": "Giấy hẹn khám lại",
                                        "url": "https://his.bachmai.demo/documents/GH-000123"}}],
            "context": {"encounter": [encounter]}}),
    ]
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": url, "resource": resource,
                       "request": {"method": "POST", "url": resource["resourceType"]}} for url, resource in entries]}


async def seed(conn: asyncpg.Connection, progress: Callable[[str], None], *, settings=None) -> Mapping[str, int]:
    created = 0
    async with conn.transaction():
        for code, name, kind, bhyt_code in FACILITIES:
            row = await conn.fetchrow(
                """INSERT INTO health_facility (code, name, kind, bhyt_code) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING RETURNING id""", code, name, kind, bhyt_code)
            created += row is not None
    progress(f"{created} facilities")
    if settings is None:  # without the settings there is no key to seal a record with
        progress("no settings given: the demo record is not written")
        return {"facilities": created}
    vault = Vault(load_master_key(settings.master_key, env=settings.env, data_dir=settings.data_path))
    facility = await store.facility_by_code(conn, "bach-mai")
    actor = service.Actor(kind="facility", label="system:seed", facility=facility, resident_id=None)
    async with conn.transaction():
        answer = await service.transaction(conn, SimpleNamespace(vault=vault), cipher_of(settings),
                                           config.of(settings), actor, msgspec.json.encode(_visit()),
                                           settings.base_url() + "/fhir")
    resources = sum(1 for e in answer["entry"] if e["response"]["status"].startswith("201"))
    progress(f"{resources} resources in the record of the demo resident 001******345")
    return {"facilities": created, "resources": resources}
