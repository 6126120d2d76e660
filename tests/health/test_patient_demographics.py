"""Two facilities writing the same person's Patient: neither overwrites the other. Identifiers of every facility
are kept, demographics VNeID verified win, any other element comes from the facility that sent it last, and a
facility leaving an element out erases nobody's."""

from __future__ import annotations

import datetime as dt

from app.identity.devlogin import sign_in
from health import fhir
from tests.health.support import PATIENT, PATIENT_BHYT, bundle, facility, fhir_get, patient, send


async def share(client, headers, code: str) -> None:
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    response = await client.post("/v1/health/consents", json={"facility": code, "expires_at": until}, headers=headers)
    assert response.status_code == 201, response.text


async def test_facilities_patients_are_merged_not_overwritten(client, conn):
    code_a, his_a = await facility(client, conn, name="Bệnh viện Bạch Mai")
    code_b, his_b = await facility(client, conn, name="Bệnh viện Việt Đức")
    mrn_a = {"system": "urn:his:bach-mai:mrn", "value": "BM-0001"}
    mrn_b = {"system": "urn:his:viet-duc:mrn", "value": "VD-7788"}
    sent_a = patient(telecom=[{"system": "phone", "value": "0912345678"}],
                     address=[{"text": "12 Hàng Bạc, Hoàn Kiếm, Hà Nội"}])
    sent_a["identifier"].append(mrn_a)
    answer = await send(client, his_a, bundle(("urn:uuid:p1", sent_a)))
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    # the second facility spells the name its own way, has its own record number and a newer address, no phone
    sent_b = patient(name=[{"text": "Nguyen Van An"}], address=[{"text": "5 Lý Thường Kiệt, Hà Nội"}],
                     maritalStatus={"text": "Đã kết hôn"})
    sent_b["identifier"].append(mrn_b)
    await send(client, his_b, bundle(("urn:uuid:p1", sent_b)))

    # both wrote before the resident ever signed in (nothing verified yet); A reads the merge, with consent
    signed = await sign_in(client, PATIENT, full_name="Trần Văn Minh", birth_date="1990-06-15")
    resident = {"Authorization": f"Bearer {signed.json()['access_token']}"}
    await share(client, resident, code_a)
    merged = await fhir_get(client, his_a, f"Patient/{patient_id}")
    pairs = {(i["system"], i["value"]) for i in merged["identifier"]}
    assert pairs == {(fhir.PERSONAL_ID_SYSTEM, PATIENT), (fhir.BHYT_SYSTEM, PATIENT_BHYT),
                     (mrn_a["system"], mrn_a["value"]), (mrn_b["system"], mrn_b["value"])}
    assert merged["telecom"] == [{"system": "phone", "value": "0912345678"}]  # B left it out: A's stays
    assert merged["address"] == [{"text": "5 Lý Thường Kiệt, Hà Nội"}]  # sent by both: the newest
    assert merged["maritalStatus"] == {"text": "Đã kết hôn"}
    # name and birthDate: each facility wrote before VNeID verified anything; the newest facility's for now
    assert merged["name"] == [{"text": "Nguyen Van An"}] and merged["birthDate"] == "1990-01-01"

    # A writes again, after the resident's sign-in: VNeID's name and birth date win over both facilities'
    await send(client, his_a, bundle(("urn:uuid:p1", sent_a)))
    merged = await fhir_get(client, his_a, f"Patient/{patient_id}")
    assert merged["name"] == [{"use": "official", "text": "Trần Văn Minh"}]
    assert merged["birthDate"] == "1990-06-15" and merged["gender"] == "male"
    assert (mrn_b["system"], mrn_b["value"]) in {(i["system"], i["value"]) for i in merged["identifier"]}
    assert merged["address"] == [{"text": "12 Hàng Bạc, Hoàn Kiếm, Hà Nội"}]  # A's is now the newest
    assert merged["maritalStatus"] == {"text": "Đã kết hôn"}  # B's, never sent by A
    assert merged["meta"]["versionId"] == "3"
    # each facility's own Patient is kept, sealed, one row each
    rows = await conn.fetch("SELECT facility_id, content FROM health_patient_source WHERE patient_id = $1::uuid",
                            patient_id)
    assert len(rows) == 2 and all(b"0912345678" not in bytes(r["content"]) for r in rows)


async def test_a_new_bhyt_card_replaces_the_old_one_in_the_merge(client, conn):
    _, his_a = await facility(client, conn)
    code_b, his_b = await facility(client, conn)
    answer = await send(client, his_a, bundle(("urn:uuid:p1", patient())))
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    await send(client, his_b, bundle(("urn:uuid:p1", patient(bhyt="DN4010999999999"))))
    signed = await sign_in(client, PATIENT)
    await share(client, {"Authorization": f"Bearer {signed.json()['access_token']}"}, code_b)
    merged = await fhir_get(client, his_b, f"Patient/{patient_id}")
    cards = [i["value"] for i in merged["identifier"] if i["system"] == fhir.BHYT_SYSTEM]
    assert cards == ["DN4010999999999"]
