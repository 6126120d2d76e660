"""The VNeID display: a machine client with `health_display` reads a resident's summary only while the resident's
grant to that app is in force; every read is in the resident's access log."""

from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle

from tests.feedback.support import key
from tests.health.resident_support import (
    OTHER,
    RESIDENT,
    access_rows,
    bearer,
    display_app,
    facility,
    full_visit,
    record,
)


async def ask(client, headers, personal_id: str = RESIDENT, path: str = "/v1/health/display/summary"):
    return await client.post(path, json={"personal_id": personal_id}, headers=headers)


async def test_an_app_reads_the_summary_only_while_the_resident_grants_it(client, conn):
    patient = await record(client, conn)
    await full_visit(client, conn, patient, await facility(conn))
    app_id, app = await display_app(client, conn)
    resident = await bearer(client, RESIDENT)

    refused = await ask(client, app)
    assert refused.status_code == 404
    assert "personal_id" not in refused.text and RESIDENT not in refused.text

    granted = await client.post("/v1/health/apps", json={"client_id": app_id, "days": 30}, headers=resident | key())
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    assert grant["in_force"] and grant["app_name"] == "VNeID – Sổ sức khỏe điện tử"
    assert grant["expires_at"].endswith("+07:00")

    response = await ask(client, app)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient_id"] == str(patient["id"])
    assert next(s for s in body["sections"] if s["key"] == "problems")["entries"][0]["text"] == "Viêm họng cấp"
    english = await client.post("/v1/health/display/summary", json={"personal_id": RESIDENT},
                                headers=app | {"Accept-Language": "en"})
    assert english.json()["sections"][0]["title"] == "Allergies and intolerances"
    document = await ask(client, app, path="/v1/health/display/summary/document")
    assert document.status_code == 200 and document.headers["content-type"].startswith("application/fhir+json")
    Bundle.model_validate(document.json())
    assert document.json()["entry"][0]["resource"]["type"]["coding"][0]["code"] == "60591-5"

    # the resident sees each of the app's reads in their access log, as the app
    reads = [r for r in await access_rows(conn, patient) if r["actor"] == f"client:{app_id}"]
    assert [(r["actor_kind"], r["purpose"], r["what"]) for r in reads] == [
        ("app", "app-grant", "summary"), ("app", "app-grant", "summary"), ("app", "app-grant", "summary document")]

    listed = (await client.get("/v1/health/apps", headers=resident)).json()["items"]
    assert [(g["client_id"], g["in_force"]) for g in listed] == [(app_id, True)]
    revoked = await client.post(f"/v1/health/apps/{app_id}/revoke", headers=resident)
    assert revoked.status_code == 200 and revoked.json()["in_force"] is False
    assert (await ask(client, app)).status_code == 404  # at once
    assert (await client.post(f"/v1/health/apps/{app_id}/revoke", headers=resident)).status_code == 404
    listed = (await client.get("/v1/health/apps", headers=resident)).json()["items"]
    assert listed[0]["revoked_at"] is not None


async def test_an_expired_grant_and_another_residents_grant_read_nothing(client, conn):
    mine = await record(client, conn)
    await record(client, conn, OTHER, bhyt="HC4010987654321")
    app_id, app = await display_app(client, conn)
    other_app_id, other_app = await display_app(client, conn)
    resident = await bearer(client, RESIDENT)
    assert (await client.post("/v1/health/apps", json={"client_id": app_id}, headers=resident)).status_code == 201
    # granted to one app: not to another, and not for another resident
    assert (await ask(client, other_app)).status_code == 404
    assert (await ask(client, app, OTHER)).status_code == 404
    assert (await ask(client, app, "001099000001")).status_code == 404  # nobody by that number: the same answer
    assert (await ask(client, app)).status_code == 200
    await conn.execute("UPDATE health_app_grant SET granted_at = now() - interval '2 days', "
                       "expires_at = now() - interval '1 second' WHERE patient_id = $1", mine["id"])
    assert (await ask(client, app)).status_code == 404
    assert (await client.get("/v1/health/apps", headers=resident)).json()["items"][0]["in_force"] is False
    # granting again replaces the old grant: one in force
    assert (await client.post("/v1/health/apps", json={"client_id": app_id}, headers=resident)).status_code == 201
    assert (await client.post("/v1/health/apps", json={"client_id": app_id}, headers=resident)).status_code == 201
    assert await conn.fetchval("SELECT count(*) FROM health_app_grant WHERE patient_id = $1 AND revoked_at IS NULL",
                               mine["id"]) == 1
    assert (await ask(client, app)).status_code == 200
    assert other_app_id != app_id


async def test_only_display_apps_may_ask_and_be_granted(client, conn):
    await record(client, conn)
    gate_id, gate = await display_app(client, conn, roles=("health_facility:bv-x",))
    resident = await bearer(client, RESIDENT)
    # a well-formed id that names no display app: 422 (the document's form; the app does not exist), never a 400
    response = await client.post("/v1/health/apps", json={"client_id": gate_id}, headers=resident)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "client_id"
    response = await client.post("/v1/health/apps", json={"client_id": "no-such-app"}, headers=resident)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "client_id"
    assert response.json()["type"].endswith(":unknown-reference")
    response = await client.post("/v1/health/apps", json={"client_id": "x", "days": 0}, headers=resident)
    assert response.status_code == 400  # outside the document's bounds
    # inside them, but beyond this deployment's setting (IHANOI_HEALTH_DISPLAY_GRANT_MAX_DAYS, 366): 422
    _, _ = await display_app(client, conn)
    response = await client.post("/v1/health/apps", json={"client_id": gate_id, "days": 3000}, headers=resident)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "days"
    assert await conn.fetchval("SELECT count(*) FROM health_app_grant") == 0
    # a client without the role, and a resident, are refused before anything is looked up
    assert (await ask(client, gate)).status_code == 403
    assert (await ask(client, resident)).status_code == 403
    assert (await client.post("/v1/health/display/summary", json={"personal_id": RESIDENT})).status_code == 401
    _, app = await display_app(client, conn)
    response = await client.post("/v1/health/display/summary", json={"personal_id": "abc"}, headers=app)
    assert response.status_code == 400


async def test_the_resident_sees_their_own_reads_and_the_apps_in_the_access_log(client, conn):
    patient = await record(client, conn)
    await full_visit(client, conn, patient, await facility(conn))
    app_id, app = await display_app(client, conn)
    resident = await bearer(client, RESIDENT)
    assert (await client.post("/v1/health/apps", json={"client_id": app_id}, headers=resident)).status_code == 201
    assert (await client.get("/v1/health/summary", headers=resident)).status_code == 200
    assert (await ask(client, app)).status_code == 200
    response = await client.get("/v1/health/access-log", headers=resident)  # the core's endpoint
    assert response.status_code == 200, response.text
    log = response.json()
    assert log["intact"] is True
    seen = [(i["who"], i["purpose"], i["what"]) for i in log["items"]]
    assert seen[:2] == [("app", "app-grant", "summary"), ("resident", "own", "summary")]
