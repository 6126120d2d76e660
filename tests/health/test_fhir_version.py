"""The API is FHIR R4 (4.0.1) and says so; the R4B models that check structure let nothing R4B-only in; a search
without a patient is a 400 OperationOutcome saying why, as the CapabilityStatement documents."""

from __future__ import annotations

import datetime as dt

from fhir.resources.R4B import get_fhir_model_class

from health import fhir
from tests.health.support import PATIENT, bearer, bundle, condition, facility, fhir_get, patient, send, visit


async def test_metadata_says_r4_and_documents_the_patient_rule(client):
    body = (await client.get("/fhir/metadata")).json()
    assert body["fhirVersion"] == "4.0.1"
    get_fhir_model_class("CapabilityStatement").model_validate(body)
    rest = body["rest"][0]
    assert "patient parameter" in rest["documentation"] and "FHIR R4 (4.0.1)" in rest["documentation"]
    for resource in rest["resource"]:
        if resource["type"] in ("Patient", "AuditEvent"):
            continue
        patient_param = next(p for p in resource["searchParam"] if p["name"] == "patient")
        assert patient_param["documentation"].startswith("Required.")


async def test_r4b_only_content_is_refused_with_its_path(client, conn):
    _, his = await facility(client, conn)
    ratio_range = {"url": "urn:ext:range", "valueRatioRange": {"lowNumerator": {"value": 1},
                                                               "denominator": {"value": 2}}}
    reference = {"url": "urn:ext:reason", "valueCodeableReference": {"concept": {"text": "x"}}}
    cited = condition("r4b-1", contained=[{"resourceType": "Citation", "id": "c1", "status": "active"}])
    body = bundle(("urn:uuid:p1", patient()),
                  (None, condition("r4b-2", extension=[ratio_range])),
                  (None, condition("r4b-3") | {"code": {"coding": [{"system": fhir.ICD10_SYSTEMS[0], "code": "I10",
                                                                      "extension": [reference]}]}}),
                  (None, cited))
    # the R4B models take all three (they are R4B), R4 has none of them
    outcome = await send(client, his, body, expect=422)
    where = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert where == {"Bundle.entry[1].resource.extension[0].valueRatioRange",
                     "Bundle.entry[2].resource.code.coding[0].extension[0].valueCodeableReference",
                     "Bundle.entry[3].resource.contained[0]"}
    assert all("R4" in issue["diagnostics"] for issue in outcome["issue"])
    assert await conn.fetchval("SELECT count(*) FROM health_resource WHERE resource_type = 'Condition'") == 0
    # contained resources R4 has are fine
    fine = condition("r4-1", contained=[{"resourceType": "Practitioner", "id": "dr", "name": [{"text": "BS An"}]}],
                     asserter={"reference": "#dr"})
    await send(client, his, bundle(("urn:uuid:p1", patient()), (None, fine)))


async def test_a_search_without_a_patient_is_a_400_saying_patient_is_required(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    resident = await bearer(client, PATIENT)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    assert (await client.post("/v1/health/consents", json={"facility": code, "expires_at": until},
                              headers=resident)).status_code == 201
    before = await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1::uuid", patient_id)
    for kind, params in (("Observation", {}), ("Condition", {"code": "I10"}), ("Encounter", {"date": "ge2026"})):
        outcome = await fhir_get(client, his, kind, expect=400, **params)
        get_fhir_model_class("OperationOutcome").model_validate(outcome)
        issue = outcome["issue"][0]
        assert issue["code"] == "required" and issue["expression"] == ["patient"]
        assert issue["diagnostics"] == fhir.PATIENT_REQUIRED
    # nothing was read, so nothing was logged; with the patient named, the same search answers (and is logged)
    assert await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1::uuid",
                               patient_id) == before
    assert (await fhir_get(client, his, "Condition", patient=patient_id, code="I10"))["total"] == 1
    assert await conn.fetchval("SELECT count(*) FROM health_access_log WHERE patient_id = $1::uuid",
                               patient_id) == before + 1
