"""A facility role revoked takes effect at the next request, not when the caller's token expires: the roles a
token names are checked against the database at every health read."""

from __future__ import annotations

import datetime as dt

from tests.health.support import CLINICIAN, PATIENT, bearer, facility, fhir_get, grant, key, visit

ADMIN = "001080033333"


async def reads_logged(conn, patient_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1::uuid AND "
                               "action <> 'write'", patient_id)


async def test_a_clinician_whose_role_is_revoked_is_refused_with_the_same_token(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    clinician_id = await grant(client, conn, CLINICIAN, "health_clinician", code)
    doctor = await bearer(client, CLINICIAN)  # its token names health_clinician:<code> for ten minutes
    resident = await bearer(client, PATIENT)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    shared = await client.post("/v1/health/consents", headers=resident | key(),
                               json={"facility": code, "clinician": str(clinician_id), "expires_at": until})
    assert shared.status_code == 201, shared.text
    found = await fhir_get(client, doctor, "Observation", patient=patient_id)
    observation = found["entry"][0]["resource"]["id"]
    await fhir_get(client, doctor, f"Observation/{observation}")
    # the city's admin revokes the role over HTTP
    await grant(client, conn, ADMIN, "admin")
    admin = await bearer(client, ADMIN)
    grants = (await client.get(f"/v1/admin/residents/{clinician_id}/roles", headers=admin)).json()
    grant_id = next(g["id"] for g in grants["grants"]
                    if g["role"] == "health_clinician" and g["scope"] == code)
    assert (await client.delete(f"/v1/admin/roles/{grant_id}", headers=admin)).status_code == 200
    before = await reads_logged(conn, patient_id)
    # the very next read with the same token is refused, as FHIR, and nothing is logged as read
    outcome = await fhir_get(client, doctor, f"Observation/{observation}", expect=403)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
    await fhir_get(client, doctor, "Observation", expect=403, patient=patient_id)
    await fhir_get(client, doctor, f"Patient/{patient_id}/$everything", expect=403)
    named = await client.get(f"/fhir/Observation/{observation}", headers=doctor | {"X-Facility": code})
    assert named.status_code == 403 and named.headers["content-type"].startswith("application/fhir+json")
    emergency = await client.post("/v1/health/emergency-access", headers=doctor | key(),
                                  json={"patient": patient_id, "reason": "Cấp cứu sau khi bị thu hồi quyền"})
    assert emergency.status_code == 403, emergency.text
    assert await reads_logged(conn, patient_id) == before
    # the clinician is still a resident: their own record stays theirs (they have none here: an empty answer)
    assert (await fhir_get(client, doctor, "AuditEvent"))["entry"] == []


async def test_a_facility_system_disabled_or_stripped_of_its_role_is_refused_at_once(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    assert (await client.post("/v1/health/consents", json={"facility": code, "expires_at": until},
                              headers=resident)).status_code == 201
    await fhir_get(client, his, "Observation", patient=patient_id)
    client_id = await conn.fetchval("SELECT id FROM machine_client WHERE $1 = ANY(roles)", f"health_facility:{code}")
    await conn.execute("UPDATE machine_client SET roles = '{}' WHERE id = $1", client_id)
    outcome = await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    assert "health_facility" in outcome["issue"][0]["diagnostics"]
    await conn.execute("UPDATE machine_client SET roles = $2, disabled_at = now() WHERE id = $1", client_id,
                       [f"health_facility:{code}"])
    await fhir_get(client, his, "Observation", expect=403, patient=patient_id)
    await conn.execute("UPDATE machine_client SET disabled_at = NULL WHERE id = $1", client_id)
    await fhir_get(client, his, "Observation", patient=patient_id)  # restored: the same token reads again
