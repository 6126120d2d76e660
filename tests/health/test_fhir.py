"""FHIR for facilities: transactions all or nothing, resends update, validation answered as OperationOutcome,
read, search with paging, $everything; a facility without consent reads nothing."""

from __future__ import annotations

import datetime as dt

import msgspec

from tests.health.support import (
    FHIR_JSON,
    PATIENT,
    PATIENT_BHYT,
    bearer,
    bundle,
    condition,
    encounter,
    facility,
    fhir_get,
    observation,
    patient,
    send,
    visit,
)


async def consent(client, facility_code: str, personal_id: str = PATIENT, days: int = 30) -> dict:
    headers = await bearer(client, personal_id)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()
    response = await client.post("/v1/health/consents", json={"facility": facility_code, "expires_at": until},
                                 headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_metadata_is_a_capability_statement(client):
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert {r["type"] for r in body["rest"][0]["resource"]} >= {"Patient", "Observation", "AuditEvent"}


async def test_a_transaction_stores_a_visit_and_a_resend_updates_it(client, conn):
    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    counts = await conn.fetchval("SELECT count(*) FROM health_resource WHERE patient_id = $1::uuid", patient_id)
    assert counts == 4
    again = await send(client, his, bundle(
        ("urn:uuid:p1", patient()), ("urn:uuid:e1", encounter("v1-enc", status="finished")),
        (None, observation("v1-obs", value=80, encounter={"reference": "urn:uuid:e1"})),
        (None, condition("v1-cond", encounter={"reference": "urn:uuid:e1"}))))
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * 4
    assert await conn.fetchval("SELECT count(*) FROM health_resource WHERE patient_id = $1::uuid", patient_id) == 4
    # the urn:uuid reference became the stored Encounter's id; the pulse is the new value
    await consent(client, code)
    found = await fhir_get(client, his, "Observation", patient=patient_id)
    assert found["total"] == 1
    obs = found["entry"][0]["resource"]
    assert obs["valueQuantity"]["value"] == 80 and obs["meta"]["versionId"] == "2"
    assert obs["encounter"]["reference"] == again["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]


async def test_the_patient_is_matched_by_personal_id_and_bhyt(client, conn):
    _, his = await facility(client, conn)
    first = await visit(client, his, prefix="a")
    # a second facility names the same person by BHYT card only
    _, other = await facility(client, conn, name="Phòng khám Đa khoa Hà Nội")
    answer = await send(client, other, bundle(
        ("urn:uuid:p1", {"resourceType": "Patient",
                         "identifier": [{"system": "https://ihanoi.hanoi.gov.vn/fhir/sid/bhyt",
                                         "value": PATIENT_BHYT}]}),
        (None, observation("b-obs"))))
    assert answer["entry"][0]["response"]["location"].split("/")[1] == first
    assert await conn.fetchval("SELECT count(*) FROM health_patient") >= 1
    assert await conn.fetchval("SELECT count(*) FROM health_resource WHERE patient_id = $1::uuid "
                               "AND resource_type = 'Observation'", first) == 2


async def test_invalid_resources_are_refused_with_each_problem_named_and_nothing_stored(client, conn):
    _, his = await facility(client, conn)
    before = await conn.fetchval("SELECT count(*) FROM health_resource")
    bad = bundle(
        ("urn:uuid:p1", patient(gender="mail")),
        (None, observation("x1", status="bogus")),
        (None, observation("x2", effectiveDateTime="2026-13-45")),
        (None, condition("x3", code="not-icd")),
        (None, observation("x4", subject="urn:uuid:nobody")),
        (None, {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "unknown": 1,
                "subject": {"reference": "urn:uuid:p1"}, "identifier": [{"system": "s", "value": "v"}]}),
    )
    response = await client.post("/fhir", content=msgspec.json.encode(bad), headers=his | FHIR_JSON)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    where = {e for issue in outcome["issue"] for e in issue["expression"]}
    assert "Bundle.entry[0].resource.gender" in where
    assert "Bundle.entry[1].resource.status" in where
    assert "Bundle.entry[2].resource.effectiveDateTime" in where
    assert "Bundle.entry[3].resource.code.coding[0].code" in where
    assert "Bundle.entry[5].resource.unknown" in where
    assert await conn.fetchval("SELECT count(*) FROM health_resource") == before


async def test_a_transaction_is_all_or_nothing(client, conn):
    """The last entry names a resource that does not exist: nothing of the first ones is kept."""
    _, his = await facility(client, conn)
    before = await conn.fetchval("SELECT (SELECT count(*) FROM health_resource) + (SELECT count(*) FROM "
                                 "health_patient) + (SELECT count(*) FROM health_access_log)")
    body = bundle(("urn:uuid:p1", patient("001190054321", "HT3010987654321")), ("urn:uuid:e1", encounter("e")),
                  (None, observation("o", encounter={"reference": "Encounter/5b0e7f0e-8d6e-4c47-9d1e-0c0a7f1f2a3b"})),
                  (None, observation("o2", subject="urn:uuid:missing")))
    outcome = await send(client, his, body, expect=422)
    problems = {(i["expression"][0], i["code"]) for i in outcome["issue"]}
    assert ("Bundle.entry[2].resource.encounter", "not-found") in problems
    assert ("Bundle.entry[3].resource.subject", "not-found") in problems
    after = await conn.fetchval("SELECT (SELECT count(*) FROM health_resource) + (SELECT count(*) FROM "
                                "health_patient) + (SELECT count(*) FROM health_access_log)")
    assert after == before


async def test_an_unknown_patient_and_oversized_bundles_are_refused(client, conn):
    _, his = await facility(client, conn)
    unknown = bundle(("urn:uuid:p1", {"resourceType": "Patient", "identifier": [
        {"system": "https://ihanoi.hanoi.gov.vn/fhir/sid/bhyt", "value": "GD4790000000001"}]}),
        (None, observation("u")))
    outcome = await send(client, his, unknown, expect=422)
    assert outcome["issue"][0]["code"] == "not-found" and "unknown patient" in outcome["issue"][0]["diagnostics"]
    many = bundle(*[(None, observation(f"m{i}")) for i in range(10_000)])
    outcome = await send(client, his, many, expect=413)
    assert outcome["issue"][0]["expression"] == ["Bundle.entry"]
    assert "10000 entries" in outcome["issue"][0]["diagnostics"]
    huge = bundle(("urn:uuid:p1", patient()), (None, observation("h", note=[{"text": "x" * (10 * 1024 * 1024)}])))
    response = await client.post("/fhir", content=msgspec.json.encode(huge), headers=his | FHIR_JSON)
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    not_json = await client.post("/fhir", content=b"{not json", headers=his | FHIR_JSON)
    assert not_json.status_code == 400 and not_json.json()["resourceType"] == "OperationOutcome"


async def test_a_facility_without_consent_reads_nothing(client, conn):
    _, his = await facility(client, conn)
    patient_id = await visit(client, his)
    written = await send(client, his, bundle(("urn:uuid:p1", patient()), (None, observation("z"))))
    obs_location = written["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
    for path, params in ((obs_location, {}), ("Observation", {"patient": patient_id}),
                         (f"Patient/{patient_id}/$everything", {}), ("Patient", {"_id": patient_id}),
                         (f"Patient/{patient_id}", {})):
        outcome = await fhir_get(client, his, path, expect=403, **params)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
        assert "entry" not in outcome


async def test_search_pages_with_next_links_and_filters(client, conn):
    code, his = await facility(client, conn)
    observations = [(None, observation(f"s{i}", when=f"2026-04-{i + 1:02d}T08:00:00+07:00",
                                       category="laboratory" if i % 2 else "vital-signs",
                                       code="2345-7" if i % 2 else "8867-4")) for i in range(25)]
    answer = await send(client, his, bundle(("urn:uuid:p1", patient()), *observations))
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    await consent(client, code)
    seen, page, pages = [], await fhir_get(client, his, "Observation", patient=patient_id, _count=10), 1
    while True:
        seen += [e["resource"]["effectiveDateTime"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        path = following[0].split("/fhir/", 1)[1]
        page = (await client.get(f"/fhir/{path}", headers=his)).json()
        pages += 1
    assert pages == 3 and len(seen) == 25 and len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)  # newest first
    labs = await fhir_get(client, his, "Observation", patient=patient_id, category="laboratory")
    assert labs["total"] == 12
    by_code = await fhir_get(client, his, "Observation", patient=patient_id, code="http://loinc.org|2345-7")
    assert by_code["total"] == 12
    april_first_week = await fhir_get(client, his, "Observation", patient=patient_id,
                                      date=["ge2026-04-01", "lt2026-04-08"])
    assert april_first_week["total"] == 7
    def hour(delta: int) -> str:
        return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")

    for bound, total in ((f"ge{hour(1)}", 0), (f"ge{hour(-1)}", 25), (f"lt{hour(-1)}", 0)):
        since = await fhir_get(client, his, "Observation", patient=patient_id, _lastUpdated=bound)
        assert since["total"] == total, bound
    everything = await fhir_get(client, his, f"Patient/{patient_id}/$everything", _count=20)
    assert everything["entry"][0]["resource"]["resourceType"] == "Patient"
    assert len(everything["entry"]) == 21 and any(link["relation"] == "next" for link in everything["link"])
    bad = await fhir_get(client, his, "Observation", expect=400, patient=patient_id, date="xx2026")
    assert bad["issue"][0]["expression"] == ["date"]


async def test_a_record_shared_before_any_visit_takes_writes_by_patient_id(client, conn):
    """The resident shows a share code first; the facility then writes by the Patient id it was given."""
    code, his = await facility(client, conn)
    resident = await bearer(client, "001190054321")
    shown = (await client.post("/v1/health/share-codes", json={}, headers=resident)).json()
    redeemed = await client.post("/v1/health/share-codes/redeem", json={"code": shown["code"]}, headers=his)
    patient_id = redeemed.json()["patient"]
    answer = await send(client, his, bundle((None, observation("first", subject=f"Patient/{patient_id}"))))
    assert answer["entry"][0]["response"]["status"] == "201 Created"
    found = await fhir_get(client, his, "Observation", patient=f"Patient/{patient_id}")
    assert found["total"] == 1


async def test_answers_are_valid_fhir_r4b(client, conn):
    from fhir.resources.R4B import get_fhir_model_class

    code, his = await facility(client, conn)
    patient_id = await visit(client, his)
    await consent(client, code)
    get_fhir_model_class("CapabilityStatement").model_validate((await client.get("/fhir/metadata")).json())
    for path, params in (("Observation", {"patient": patient_id}), (f"Patient/{patient_id}/$everything", {})):
        get_fhir_model_class("Bundle").model_validate(await fhir_get(client, his, path, **params))
    outcome = await fhir_get(client, his, "Observation", expect=400)
    get_fhir_model_class("OperationOutcome").model_validate(outcome)
    # the kernel's own refusals leave as OperationOutcome too: no token, a bad token
    for headers, status in (({}, 401), ({"Authorization": "Bearer nonsense"}, 401)):
        response = await client.get("/fhir/Observation", params={"patient": patient_id}, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/fhir+json")
        get_fhir_model_class("OperationOutcome").model_validate(response.json())


async def test_odd_bundles_are_outcomes_never_500(client, conn):
    _, his = await facility(client, conn)
    await visit(client, his)  # PATIENT holds PATIENT_BHYT from now on
    before = await conn.fetchval("SELECT count(*) FROM health_resource")
    good_obs = observation("odd")
    odd = [
        b"", b"[]", b"null", b'"Bundle"', b'{"resourceType": "Bundle"}',
        {"resourceType": "Bundle", "type": "batch", "entry": []},
        {"resourceType": "Bundle", "type": "transaction", "entry": "x"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [1, "two", None]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": "x", "request": {}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": 7}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Practitioner"}, "request": {"method": "POST", "url": "Practitioner"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": good_obs, "request": {"method": "DELETE", "url": "Observation/1"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "http://elsewhere/Patient/1", "resource": good_obs,
             "request": {"method": "POST", "url": "Observation"}}]},
        bundle((None, good_obs | {"subject": {"reference": 12}})),
        bundle((None, good_obs | {"subject": {"reference": "Patient/not-a-uuid"}})),
        bundle((None, good_obs | {"subject": {"reference": "Encounter/5b0e7f0e-8d6e-4c47-9d1e-0c0a7f1f2a3b"}})),
        bundle((None, good_obs | {"identifier": [{"system": "s"}]})),
        bundle((None, good_obs | {"valueQuantity": {"value": 10**30}})),
        bundle(("urn:uuid:p1", patient()), ("urn:uuid:p1", patient())),
        bundle(("urn:uuid:p1", patient()), (None, observation("dup")), (None, observation("dup"))),
        bundle(("urn:uuid:p1", patient(personal_id="001090012346", bhyt=PATIENT_BHYT)), (None, observation("o"))),
        bundle(("urn:uuid:p1", patient() | {"identifier": [{"system": "https://ihanoi.hanoi.gov.vn/fhir/sid/"
                                                                      "personal-id", "value": "12345"}]}),),
    ]
    for body in odd:
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        response = await client.post("/fhir", content=raw, headers=his | FHIR_JSON)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], outcome
        assert all(i["diagnostics"] and i["severity"] == "error" for i in outcome["issue"])
    wrong_type = await client.post("/fhir", content=b"<Bundle/>", headers=his | {"Content-Type": "application/xml"})
    assert wrong_type.status_code == 415 and wrong_type.json()["resourceType"] == "OperationOutcome"
    assert await conn.fetchval("SELECT count(*) FROM health_resource") == before


async def test_everything_filters_by_type_and_dates(client, conn):
    code, his = await facility(client, conn)
    answer = await send(client, his, bundle(
        ("urn:uuid:p1", patient()), ("urn:uuid:e1", encounter("f-enc")),
        (None, observation("f-old", when="2025-01-15T08:00:00+07:00")),
        (None, observation("f-new", when="2026-06-15T08:00:00+07:00")),
        (None, condition("f-cond", encounter={"reference": "urn:uuid:e1"}))))
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    await consent(client, code)

    async def kinds(**params) -> list[str]:
        found = await fhir_get(client, his, f"Patient/{patient_id}/$everything", **params)
        return sorted(e["resource"]["resourceType"] for e in found["entry"])

    assert await kinds() == ["Condition", "Encounter", "Observation", "Observation", "Patient"]
    assert await kinds(_type="Condition,Patient") == ["Condition", "Patient"]
    assert await kinds(_type="Observation", start="2026-01-01") == ["Observation"]
    assert await kinds(_type="Observation", end="2025-12") == ["Observation"]
    assert await kinds(_type="Observation", start="2027") == []
    bad = await fhir_get(client, his, f"Patient/{patient_id}/$everything", expect=400, _type="Practitioner")
    assert bad["issue"][0]["expression"] == ["_type"]
    assert (await fhir_get(client, his, f"Encounter/{patient_id}/$everything", expect=404))["issue"]


async def test_everything_answers_each_resource_as_a_read_does_paged_by_cursor(client, conn):
    """$everything passes each stored resource's JSON through unparsed, with its id and meta written in front; a
    resource sent with a meta of its own (a profile) keeps it beside versionId and lastUpdated."""
    code, his = await facility(client, conn)
    profile = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    observations = [(None, observation(f"ev{i}", when=f"2026-03-{i + 1:02d}T08:00:00+07:00",
                                       **({"meta": {"profile": [profile]}} if i == 3 else {}))) for i in range(7)]
    answer = await send(client, his, bundle(("urn:uuid:p1", patient()), *observations))
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    await consent(client, code)
    first = await fhir_get(client, his, f"Patient/{patient_id}/$everything", _count=3)
    assert first["entry"][0]["resource"]["resourceType"] == "Patient" and len(first["entry"]) == 4
    entries, page = [], first
    while True:
        entries += [e for e in page["entry"] if e["resource"]["resourceType"] != "Patient"]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = (await client.get(f"/fhir/{following[0].split('/fhir/', 1)[1]}", headers=his)).json()
        assert page["entry"] and page["entry"][0]["resource"]["resourceType"] == "Observation"  # Patient once
    assert [e["resource"]["effectiveDateTime"][:10] for e in entries] == [f"2026-03-{d:02d}" for d in range(7, 0, -1)]
    for entry in entries:
        resource = entry["resource"]
        assert entry["fullUrl"].endswith(f"/Observation/{resource['id']}")
        assert resource == await fhir_get(client, his, f"Observation/{resource['id']}")
        assert resource["meta"]["versionId"] == "1" and resource["meta"]["lastUpdated"]
    profiled = [e["resource"] for e in entries if e["resource"]["meta"].get("profile")]
    assert [r["meta"]["profile"] for r in profiled] == [[profile]]
    only_patient = await fhir_get(client, his, f"Patient/{patient_id}/$everything", _count=0)
    assert [e["resource"]["resourceType"] for e in only_patient["entry"]] == ["Patient"]
