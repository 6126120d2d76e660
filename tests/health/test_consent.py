"""Consent decides what a facility reads: expired and revoked consents stop it at once; a share code shown at a
visit opens the record for a while; emergency access is recorded and reaches the resident's inbox; the resident
sees every access, as a list and as FHIR AuditEvents, and a broken chain is reported."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from app.logs import JsonFormatter
from health import crypto, store
from tests.health.support import (
    CLINICIAN,
    PATIENT,
    PATIENT_BHYT,
    bearer,
    bundle,
    facility,
    fhir_get,
    grant,
    key,
    observation,
    patient,
    send,
    visit,
)


def later(**delta) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


async def share(client, headers, facility_code: str, expect: int = 201, **body) -> dict:
    response = await client.post("/v1/health/consents", json={"facility": facility_code, "expires_at": later(days=30)}
                                 | body, headers=headers | key())
    assert response.status_code == expect, response.text
    return response.json()


async def test_consent_opens_the_record_and_revocation_closes_it_at_once(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    given = await share(client, resident, code)
    assert given["state"] == "active" and given["facility"] == code
    assert (await fhir_get(client, his, "Observation", patient=patient_id))["total"] == 1
    revoked = await client.post(f"/v1/health/consents/{given['id']}/revoke", headers=resident)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    await fhir_get(client, his, f"Patient/{patient_id}/$everything", expect=403)
    # another resident cannot revoke (or see) this consent
    other = await bearer(client, "001190054321")
    assert (await client.post(f"/v1/health/consents/{given['id']}/revoke", headers=other)).status_code == 404


async def test_an_expired_consent_reads_nothing(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    given = await share(client, resident, code)
    await conn.execute("UPDATE health_consent SET starts_at = now() - interval '2 days', "
                       "expires_at = now() - interval '1 second' WHERE id = $1", given["id"])
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    listed = (await client.get("/v1/health/consents", headers=resident)).json()["items"]
    assert [c["state"] for c in listed] == ["expired"]
    # a consent for another facility opens nothing for this one
    other_code, _ = await facility(client, conn)
    await share(client, resident, other_code)
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)


async def test_consent_needs_level_2_and_a_recent_sign_in(client, conn):
    code, _ = await facility(client, conn)
    level_1 = await bearer(client, PATIENT, level=1)
    response = await client.post("/v1/health/consents", json={"facility": code, "expires_at": later(days=1)},
                                 headers=level_1)
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")
    resident = await bearer(client, PATIENT)
    await share(client, resident, code, expect=400, expires_at=later(days=400))
    await share(client, resident, "no-such-facility", expect=422)


async def test_a_clinician_reads_what_was_shared_with_them_or_their_facility(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    clinician_id = await grant(client, conn, CLINICIAN, "health_clinician", code)
    doctor = await bearer(client, CLINICIAN)
    await fhir_get(client, doctor, "Observation", expect=403, patient=patient_id)
    resident = await bearer(client, PATIENT)
    listed = (await client.get(f"/v1/health/facilities/{code}/clinicians", headers=resident)).json()["items"]
    assert [c["id"] for c in listed] == [str(clinician_id)]
    await share(client, resident, code, clinician=str(clinician_id))
    assert (await fhir_get(client, doctor, "Observation", patient=patient_id))["total"] == 1
    # shared with the clinician, not the facility: its system still reads nothing
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    # a clinician never writes over FHIR
    outcome = await send(client, doctor, bundle(("urn:uuid:p1", patient()), (None, observation("d"))), expect=403)
    assert outcome["issue"][0]["code"] == "forbidden"


async def test_a_share_code_shown_at_a_visit_is_redeemed_once(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    shown = await client.post("/v1/health/share-codes", json={"access_minutes": 60}, headers=resident)
    assert shown.status_code == 201, shown.text
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    redeemed = await client.post("/v1/health/share-codes/redeem", json={"code": shown.json()["qr"]}, headers=his)
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["patient"] == patient_id
    assert (await fhir_get(client, his, "Observation", patient=patient_id))["total"] == 1
    again = await client.post("/v1/health/share-codes/redeem", json={"code": shown.json()["code"]}, headers=his)
    assert again.status_code == 400
    # an expired code opens nothing
    late = await client.post("/v1/health/share-codes", json={}, headers=resident)
    await conn.execute("UPDATE health_share_code SET expires_at = now() - interval '1 second' "
                       "WHERE redeemed_at IS NULL")
    other_code, other = await facility(client, conn)
    refused = await client.post("/v1/health/share-codes/redeem", json={"code": late.json()["code"]}, headers=other)
    assert refused.status_code == 400


async def test_emergency_access_is_recorded_and_told_to_the_resident(client, conn):
    code, his = await facility(client, conn, name="Bệnh viện Việt Đức")
    patient_id = await visit(client, his)
    response = await client.post("/v1/health/emergency-access", headers=his | key(), json={
        "personal_id": PATIENT, "reason": "Bệnh nhân bất tỉnh sau tai nạn giao thông, cấp cứu"})
    assert response.status_code == 201, response.text
    assert response.json()["patient"] == patient_id
    assert (await fhir_get(client, his, f"Patient/{patient_id}/$everything"))["entry"]
    resident = await bearer(client, PATIENT)
    inbox = (await client.get("/v1/notifications", headers=resident)).json()["items"]
    notice = [n for n in inbox if n["category"] == "health"]
    assert len(notice) == 1
    assert "Bệnh viện Việt Đức" in notice[0]["body"] and "tai nạn giao thông" in notice[0]["body"]
    log = (await client.get("/v1/health/access-log", headers=resident)).json()
    emergency = [e for e in log["items"] if e["action"] == "emergency-access"]
    assert emergency[0]["reason"].startswith("Bệnh nhân bất tỉnh") and emergency[0]["facility"] == code
    assert any(e["action"] == "everything" and e["purpose"] == "emergency" for e in log["items"])
    # a reason is required, and the window ends
    short = await client.post("/v1/health/emergency-access", headers=his | key(),
                              json={"personal_id": PATIENT, "reason": "x"})
    assert short.status_code == 400
    await conn.execute("UPDATE health_emergency_access SET expires_at = now() - interval '1 second'")
    await fhir_get(client, his, f"Patient/{patient_id}/$everything", expect=403)


async def test_the_resident_sees_every_access_and_a_broken_chain(client, conn, settings):
    code, his = await facility(client, conn, name="Bệnh viện Bạch Mai")
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    await share(client, resident, code)
    obs = await fhir_get(client, his, "Observation", patient=patient_id)
    await fhir_get(client, his, obs["entry"][0]["resource"]["resourceType"] + "/" + obs["entry"][0]["resource"]["id"])
    await fhir_get(client, his, f"Patient/{patient_id}/$everything")
    await fhir_get(client, his, "Patient", identifier=f"https://ihanoi.hanoi.gov.vn/fhir/sid/bhyt|{PATIENT_BHYT}")
    log = (await client.get("/v1/health/access-log", headers=resident)).json()
    assert log["intact"] is True
    actions = [e["action"] for e in reversed(log["items"])]
    assert actions == ["write", "search", "read", "everything", "search"]
    assert {e["facility_name"] for e in log["items"]} == {"Bệnh viện Bạch Mai"}
    assert all(e["purpose"] in ("visit", "consent") for e in log["items"])
    # the same as FHIR AuditEvents, valid R4B resources
    events = await fhir_get(client, resident, "AuditEvent")
    assert len(events["entry"]) == 5
    from fhir.resources.R4B import get_fhir_model_class

    for entry in events["entry"]:
        get_fhir_model_class("AuditEvent").model_validate(entry["resource"])
    assert events["entry"][0]["resource"]["agent"][0]["who"]["display"] == "Bệnh viện Bạch Mai"
    # a facility never reads the access log
    await fhir_get(client, his, "AuditEvent", expect=403)
    # someone edits a row in the database: the resident is told the chain is broken, and where
    await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.execute("UPDATE health_access_log SET purpose = 'emergency' WHERE patient_id = $1::uuid AND seq = 3",
                       patient_id)
    await conn.execute("SET LOCAL session_replication_role = origin")
    log = (await client.get("/v1/health/access-log", headers=resident)).json()
    assert log["intact"] is False and log["broken_at"] == 3
    assert await store.verify_chain(conn, crypto.cipher_of(settings), patient_id_uuid(patient_id)) == 3


def patient_id_uuid(text: str):
    import uuid

    return uuid.UUID(text)


async def test_the_access_log_refuses_updates_and_deletes(client, conn):
    _, his = await facility(client, conn)
    patient_id = await visit(client, his)
    import asyncpg

    with pytest.raises(asyncpg.RaiseError):
        async with conn.transaction():
            await conn.execute("DELETE FROM health_access_log WHERE patient_id = $1::uuid", patient_id)
    with pytest.raises(asyncpg.RaiseError):
        async with conn.transaction():
            await conn.execute("UPDATE health_access_log SET actor = 'x' WHERE patient_id = $1::uuid", patient_id)


async def test_bhyt_and_personal_id_numbers_stay_out_of_logs_and_storage(client, conn, caplog):
    caplog.set_level(logging.DEBUG)
    _, his = await facility(client, conn)
    await visit(client, his)
    bad = await send(client, his, bundle(("urn:uuid:p1", patient(bhyt="DN6010123456789")), (None, observation("q"))),
                     expect=422)
    assert "DN6010123456789" not in json.dumps(bad)
    await client.post("/v1/health/emergency-access", headers=his | key(),
                      json={"bhyt": PATIENT_BHYT, "reason": "cấp cứu ngừng tuần hoàn " + PATIENT_BHYT})
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines and not [line for line in lines if PATIENT_BHYT in line or PATIENT in line]
    assert formatter.format(logging.LogRecord("t", logging.INFO, "", 0, f"card {PATIENT_BHYT}", (), None)).find(
        PATIENT_BHYT) == -1
    for table, column in (("health_patient", "bhyt_enc"), ("health_resource", "content"),
                          ("health_emergency_access", "reason_enc"), ("health_access_log", "reason_enc")):
        blobs = await conn.fetch(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
        assert blobs and not [b for (b,) in blobs if PATIENT_BHYT.encode() in bytes(b) or PATIENT.encode() in bytes(b)]


async def test_the_resident_reads_their_own_record_only_after_a_recent_sign_in(client, conn):
    import time

    import jwt

    _, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    own = await fhir_get(client, resident, "Observation", patient=patient_id)
    assert own["total"] == 1
    log = (await client.get("/v1/health/access-log", headers=resident)).json()
    assert [e["action"] for e in log["items"]] == ["write"]  # the resident's own reads are not "accesses"
    # someone else's record is not theirs
    await fhir_get(client, await bearer(client, "001190054321"), "Observation", expect=403, patient=patient_id)
    # signed in an hour ago: step up, for the FHIR read and the consent screens alike
    token = resident["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    stale = {"Authorization": "Bearer " + client.app.state.identity.keys.sign(
        claims | {"auth_time": int(time.time()) - 3600})}
    outcome = await fhir_get(client, stale, "Observation", expect=403, patient=patient_id)
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "step-up-required"
    response = await client.get("/v1/health/consents", headers=stale)
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")


async def test_the_city_registers_facilities_and_a_clinician_opens_an_emergency(client, conn):
    admin = "001080033333"
    await grant(client, conn, admin, "health_admin")
    headers = await bearer(client, admin)
    body = {"code": "bv-thanh-nhan", "name": "Bệnh viện Thanh Nhàn", "kind": "hospital", "bhyt_code": "01777"}
    created = await client.post("/v1/health/facilities", json=body, headers=headers | key())
    assert created.status_code == 201, created.text
    assert (await client.post("/v1/health/facilities", json=body, headers=headers | key())).status_code == 400
    resident = await bearer(client, PATIENT)
    assert (await client.post("/v1/health/facilities", json=body | {"code": "x-y"}, headers=resident | key())
            ).status_code == 403
    listed = (await client.get("/v1/health/facilities")).json()["items"]
    assert {"code": "bv-thanh-nhan", "name": "Bệnh viện Thanh Nhàn", "kind": "hospital",
            "bhyt_code": "01777"} in listed
    # a clinician of it opens a record in an emergency: the resident is told, and sees who
    _, his = await facility(client, conn)
    patient_id = await visit(client, his)
    await grant(client, conn, CLINICIAN, "health_clinician", "bv-thanh-nhan")
    doctor = await bearer(client, CLINICIAN)
    opened = await client.post("/v1/health/emergency-access", headers=doctor | key(),
                               json={"patient": patient_id, "reason": "Sốc phản vệ tại phòng cấp cứu"})
    assert opened.status_code == 201, opened.text
    assert (await fhir_get(client, doctor, "Observation", patient=patient_id))["total"] == 1
    log = (await client.get("/v1/health/access-log", headers=resident)).json()["items"]
    assert log[0]["who"] == "clinician" and log[0]["facility"] == "bv-thanh-nhan" and log[0]["purpose"] == "emergency"
    inbox = (await client.get("/v1/notifications", headers=resident)).json()["items"]
    assert any("Bệnh viện Thanh Nhàn" in n["body"] for n in inbox if n["category"] == "health")
