"""The resident's patient summary (IPS sections and the FHIR document), through HTTP and the database."""

from __future__ import annotations

import time

import jwt
from fhir.resources.R4B.bundle import Bundle

from tests.health.resident_support import (
    ICD10,
    OTHER,
    RESIDENT,
    access_rows,
    at,
    bearer,
    facility,
    full_visit,
    iso,
    record,
    write,
)


def section(body: dict, key: str) -> dict:
    return next(s for s in body["sections"] if s["key"] == key)


async def test_summary_sections_in_vietnamese_with_an_empty_reason_and_hanoi_times(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    await full_visit(client, conn, patient, fac)
    # a problem now resolved is history, not a current problem
    await write(client, conn, patient, fac, {
        "resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "code": {"coding": [{"system": ICD10, "code": "A09"}], "text": "Tiêu chảy"}}, effective_at=at(400))
    await write(client, conn, patient, fac, {
        "resourceType": "AllergyIntolerance", "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"text": "Dị ứng penicillin"}, "recordedDate": iso(at(30))}, effective_at=at(30))
    headers = await bearer(client, RESIDENT)

    response = await client.get("/v1/health/summary", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["patient_id"] == str(patient["id"]) and body["language"] == "vi"
    assert [s["code"] for s in body["sections"]] == ["48765-2", "11450-4", "10160-0", "11369-6", "30954-2", "46240-8"]
    problems = section(body, "problems")
    assert problems["title"] == "Bệnh, vấn đề sức khỏe"
    assert [e["text"] for e in problems["entries"]] == ["Viêm họng cấp"]
    assert problems["entries"][0]["code"] == f"{ICD10}|J02.9" and problems["entries"][0]["facility"] == fac["name"]
    assert problems["entries"][0]["date"].endswith("+07:00")
    meds = section(body, "medications")["entries"]
    assert meds[0]["text"] == "Amoxicillin 500 mg" and "3 lần/ngày" in meds[0]["detail"]
    assert section(body, "results")["entries"][0]["detail"] == "5.4 mmol/L"
    assert section(body, "allergies")["entries"][0]["text"] == "Dị ứng penicillin"
    assert section(body, "visits")["entries"][0]["type"] == "Encounter"
    immunizations = section(body, "immunizations")
    assert immunizations["entries"] == []
    assert immunizations["empty_reason"] == {"code": "unavailable", "text": "Chưa có thông tin trong hồ sơ"}
    assert problems.get("empty_reason") is None

    english = (await client.get("/v1/health/summary", headers=headers | {"Accept-Language": "en"})).json()
    assert english["language"] == "en" and section(english, "problems")["title"] == "Problems"
    assert section(english, "immunizations")["empty_reason"]["text"] == "No information available"
    # each read of one's own record is in the access log, as the resident
    rows = await access_rows(conn, patient)
    assert rows[-2:] == [{"actor": f"resident:{patient['resident_id']}", "actor_kind": "resident", "action": "read",
                          "purpose": "own", "what": "summary"}] * 2


async def test_the_summary_as_a_fhir_document_bundle(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    await full_visit(client, conn, patient, fac)
    response = await client.get("/v1/health/summary/document", headers=await bearer(client, RESIDENT))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    Bundle.model_validate(body)  # a valid R4 (4.3 models) Bundle: required fields, types, no unknown keys
    assert body["type"] == "document"
    composition = body["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["type"]["coding"][0] == {"system": "http://loinc.org", "code": "60591-5",
                                                "display": "Patient summary Document"}
    assert composition["subject"] == {"reference": f"Patient/{patient['id']}"}
    sections = {s["code"]["coding"][0]["code"]: s for s in composition["section"]}
    assert {"10160-0", "48765-2", "11450-4", "11369-6"} <= set(sections)
    assert sections["48765-2"]["emptyReason"]["coding"][0]["code"] == "unavailable" and "entry" not in sections[
        "48765-2"]
    # every reference of a section is a resource of the bundle
    present = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body["entry"]}
    referenced = {ref["reference"] for s in composition["section"] for ref in s.get("entry", [])}
    assert referenced and referenced <= present
    assert body["entry"][1]["resource"]["resourceType"] == "Patient"


async def test_a_resident_sees_only_their_own_record(client, conn):
    mine = await record(client, conn)
    theirs = await record(client, conn, OTHER, bhyt="HC4010987654321")
    fac = await facility(conn)
    their_visit = await full_visit(client, conn, theirs, fac)
    body = (await client.get("/v1/health/summary", headers=await bearer(client, RESIDENT))).json()
    assert body["patient_id"] == str(mine["id"])
    assert all(s["entries"] == [] for s in body["sections"])
    timeline = (await client.get("/v1/health/timeline", headers=await bearer(client, RESIDENT))).json()
    assert timeline["items"] == []
    # someone else's visit answers as no visit does
    response = await client.get(f"/v1/health/visits/{their_visit.id}/summary.pdf",
                                headers=await bearer(client, RESIDENT))
    assert response.status_code == 404
    assert await access_rows(conn, theirs) == []


async def test_a_resident_without_a_record_sees_empty_sections(client, conn):
    body = (await client.get("/v1/health/summary", headers=await bearer(client, "001095067890"))).json()
    assert body["patient_id"] is None and all(s["empty_reason"]["code"] == "unavailable" for s in body["sections"])
    response = await client.get("/v1/health/summary/document", headers=await bearer(client, "001095067890"))
    assert response.status_code == 404


async def test_level_2_and_a_sign_in_within_15_minutes(client, conn):
    await record(client, conn)
    low = await bearer(client, RESIDENT, level=1)
    response = await client.get("/v1/health/summary", headers=low)
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")
    fresh = (await bearer(client, RESIDENT))["Authorization"].split()[1]
    claims = jwt.decode(fresh, options={"verify_signature": False})
    for path in ("/v1/health/summary", "/v1/health/timeline", "/v1/health/apps"):
        stale = client.app.state.identity.keys.sign(claims | {"auth_time": int(time.time()) - 16 * 60})
        response = await client.get(path, headers={"Authorization": f"Bearer {stale}"})
        assert response.status_code == 403, path
        assert "within the last 900 seconds" in response.json()["detail"]
    recent = client.app.state.identity.keys.sign(claims | {"auth_time": int(time.time()) - 14 * 60})
    assert (await client.get("/v1/health/summary", headers={"Authorization": f"Bearer {recent}"})).status_code == 200
    assert (await client.get("/v1/health/summary")).status_code == 401


async def test_the_summary_shows_what_is_current_and_recent_the_timeline_everything(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    visits = [await write(client, conn, patient, fac, {
        "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "type": [{"text": f"Khám lần {n}"}]}, effective_at=at(n + 1)) for n in range(12)]
    await write(client, conn, patient, fac, {"resourceType": "Encounter", "status": "cancelled",
                                             "class": {"code": "AMB"}, "type": [{"text": "Lịch hủy"}]},
                effective_at=at(0))
    stopped = {"resourceType": "MedicationRequest", "status": "stopped", "intent": "order",
               "medicationCodeableConcept": {"text": "Thuốc đã ngừng"}}
    await write(client, conn, patient, fac, stopped, effective_at=at(2))
    await write(client, conn, patient, fac, {"resourceType": "Observation", "status": "entered-in-error",
                                             "code": {"text": "Ghi nhầm"}, "valueString": "x"}, effective_at=at(2))
    headers = await bearer(client, RESIDENT)
    body = (await client.get("/v1/health/summary", headers=headers)).json()
    shown = section(body, "visits")["entries"]
    assert [e["id"] for e in shown] == [str(v.id) for v in visits[:10]]  # the ten newest, the cancelled one left out
    assert section(body, "medications")["empty_reason"]["code"] == "unavailable"
    assert section(body, "results")["entries"] == []
    items = (await client.get("/v1/health/timeline", params={"limit": 100}, headers=headers)).json()["items"]
    assert {"Lịch hủy", "Thuốc đã ngừng", "Ghi nhầm"} <= {i["text"] for i in items} and len(items) == 15
