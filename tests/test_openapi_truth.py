"""The OpenAPI document states what the server enforces, so a client (or a fuzzer) that keeps to it is never refused
for its form: constraints of optional values where generators read them, text that refuses NUL, cursors and times
of day by their exact form, OPTIONS and 405 naming every method of a path, 404 where a query names something."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.feedback.support import CLERK, RESIDENT_A, bearer, grant

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
async def document(client) -> dict:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def _parameters(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            for parameter in (item.get(method) or {}).get("parameters", ()):
                yield path, method, parameter


async def test_no_parameter_hides_its_constraints_beside_a_null_branch(document):
    checked = 0
    for path, method, parameter in _parameters(document):
        schema = parameter["schema"]
        # constraints sit with the value's type, where a generator reads them; a query, path or header string is
        # never null (another type or format may be: Litestar reads "null" as None there)
        for branch in schema.get("oneOf", ()):
            assert branch.get("type") != "string" or "format" in branch, (path, method, parameter["name"], schema)
        assert not ({"pattern", "maximum", "minimum", "maxLength", "format"} & set(schema)) or "oneOf" not in schema
        schema = next((b for b in schema.get("oneOf", ()) if b.get("type") != "null"), schema)
        if schema.get("type") == "string":
            assert {"pattern", "format", "enum", "const"} & set(schema), (path, method, parameter["name"], schema)
        checked += 1
    assert checked > 100
    key = next(p for _, _, p in _parameters(document) if p["name"] == "Idempotency-Key")
    assert key["schema"]["pattern"] == r"^[\x21-\x7e]{8,128}$"


def _walk(schema, found: list):
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            _walk(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _walk(value, found)


async def test_body_text_says_it_refuses_nul_and_times_of_day_are_hh_mm_ss(document):
    found: list[dict] = []
    _walk(document["components"]["schemas"], found)
    strings = [s for s in found if s.get("type") == "string"]
    assert strings and all({"pattern", "format", "enum", "const"} & set(s) for s in strings)
    # Litestar's own mapping documents a datetime.time as a duration; msgspec reads "06:00:00"
    assert not any(s.get("format") == "duration" for s in strings)
    tariff = document["components"]["schemas"]["TariffCreate"]["properties"]["day_starts"]
    assert re.match(tariff["pattern"], "06:00:00") and not re.match(tariff["pattern"], "PT6H")
    push = document["components"]["schemas"]["Preferences"]["properties"]["push"]
    assert push["propertyNames"]["pattern"] == "^[a-z][a-z0-9_]{1,30}$"
    stream = document["paths"]["/v1/parking/availability/stream"]["get"]["responses"]["200"]["content"]
    assert set(stream["text/event-stream"]["schema"]["properties"]) >= {"event", "data"}


async def test_a_query_that_names_something_documents_404(document, client):
    responses = document["paths"]["/v1/parking/tariffs"]["get"]["responses"]
    assert "404" in responses
    assert (await client.get("/v1/parking/tariffs", params={"lot": "no-such-lot"})).status_code == 404


async def test_options_and_405_name_every_method_of_the_path(client, document):
    headers = await bearer(client, RESIDENT_A)
    for path in ("/v1/broadcasts", "/v1/transit/tickets", "/v1/notifications/devices"):
        documented = {m.upper() for m in METHODS if m in document["paths"][path]}
        assert len(documented) >= 2
        response = await client.options(path, headers=headers)
        assert response.status_code == 204
        assert set(response.headers["allow"].split(", ")) == documented | {"OPTIONS"}, path
        refused = await client.request("PATCH" if "PATCH" not in documented else "DELETE", path, headers=headers)
        assert refused.status_code == 405
        assert set(refused.headers["allow"].split(", ")) >= documented, path


async def test_every_cursor_of_the_documented_form_is_accepted(client, conn, document):
    headers = await bearer(client, RESIDENT_A)
    cases = (("/v1/feedback/public/reports", {}), ("/v1/notifications", headers),
             ("/v1/payments/wallet/history", headers))
    for path, auth in cases:
        pattern = next(p["schema"]["pattern"] for p in document["paths"][path]["get"]["parameters"]
                       if p["name"] == "cursor")
        parts = pattern.count(r"[0-9]{1,17}")
        for value in ("0", "1", "99999999999999999"):
            cursor = ".".join([value] * parts)
            assert re.match(pattern, cursor)
            response = await client.get(path, params={"cursor": cursor}, headers=auth)
            assert response.status_code == 200, (path, cursor, response.text)
        for bad in ("nonsense", ".".join(["1"] * (parts + 1)), "1" * 18):
            response = await client.get(path, params={"cursor": bad}, headers=auth)
            assert response.status_code == 400 and response.json()["errors"][0]["field"] == "cursor", (path, bad)


async def test_a_cursor_given_pages_on_where_it_left_off(client, conn):
    # the cursor's text form (digits) keeps the microseconds of the time it carries: no row twice, none lost
    from tests.feedback.support import report_body

    headers = await bearer(client, RESIDENT_A)
    sent = []
    for n in range(3):
        body = report_body(description=f"Ổ gà số {n} giữa đường", duplicates_checked=True)
        answer = await client.post("/v1/feedback/reports", json=body,
                                   headers=headers | {"Idempotency-Key": uuid.uuid4().hex})
        assert answer.status_code == 201, answer.text
        sent.append(answer.json()["id"])
    seen, cursor = [], None
    while True:
        page = (await client.get("/v1/feedback/me/reports", params={"limit": 1, **({"cursor": cursor} if cursor
                                                                                    else {})},
                                  headers=headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert re.fullmatch(r"[0-9]{1,17}\.[0-9]{1,17}", cursor)
    assert seen == sorted(sent, reverse=True)


async def test_a_map_box_is_read_with_its_corners_in_any_order_and_up_to_the_worlds_edges(client):
    ordered = await client.get("/v1/feedback/public/reports", params={"bbox": "105.80,21.00,105.90,21.05"})
    swapped = await client.get("/v1/feedback/public/reports", params={"bbox": "105.90,21.05,105.80,21.00"})
    assert ordered.status_code == swapped.status_code == 200
    assert ordered.json() == swapped.json()
    for box in ("0,0,0,0", "-999,-99,999,99", "999.5,0,0,-99"):
        assert (await client.get("/v1/feedback/public/reports", params={"bbox": box})).status_code == 200, box


async def test_ids_and_numbers_as_the_document_gives_them(client, conn, document):
    await grant(client, conn, CLERK, "admin")
    headers = await bearer(client, CLERK)
    grants = document["paths"]["/v1/admin/residents/{resident_id}/roles"]["get"]["parameters"]
    assert next(p for p in grants if p["name"] == "resident_id")["schema"]["format"] == "uuid"
    assert (await client.get(f"/v1/admin/residents/{uuid.uuid4()}/roles", headers=headers)).status_code == 200
    assert (await client.get("/v1/admin/residents/not-a-uuid/roles", headers=headers)).status_code == 400
    lookup = document["components"]["schemas"]["ResidentLookup"]["properties"]["personal_id"]["pattern"]
    assert re.match(lookup, "001080033333") and not re.match(lookup, "999080033333")
    # 2^63-1 written as a float is 2^63: an int64 id is stated by its format, not a maximum
    for _, _, parameter in _parameters(document):
        schema = next((b for b in parameter["schema"].get("oneOf", ()) if b.get("type") != "null"),
                      parameter["schema"])
        if schema.get("type") == "integer":
            assert schema.get("maximum", 0) < 2**63 - 1, parameter


async def test_a_query_parameter_taken_once_given_twice_is_a_400_naming_it(client):
    for path, name in (("/v1/transit/fares?on=2026-12-01&on=2026-12-02", "on"),
                       ("/v1/feedback/public/reports?limit=5&limit=6", "limit")):
        response = await client.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["errors"][0] == {"field": name, "message": "give this parameter once",
                                                 "source": "query"}
    # a parameter given once, beside others, is fine
    assert (await client.get("/v1/feedback/public/reports?limit=5&q=rac")).status_code == 200


async def test_an_optional_field_keeps_every_bound_a_zero_too(client, conn, document):
    """`capacity_car: Capacity | UNSET` (ge=0, le=100000): Litestar wrapped it in a one-branch oneOf and dropped the
    bound of 0 (falsy), so a client sent -1 and got a 400. Now the document states the bounds the server keeps."""
    from tests.parking.support import admin, make_lot, operator

    found: list[dict] = []
    _walk(document["components"]["schemas"], found)
    assert not [s for s in found if len(s.get("oneOf", ())) == 1]
    edit = document["components"]["schemas"]["LotEdit"]["properties"]
    assert edit["capacity_car"]["minimum"] == 0 and edit["capacity_car"]["maximum"] == 100_000
    assert edit["name"]["minLength"] == 1 and edit["name"]["maxLength"] == 200
    bounded = [s for s in found if s.get("type") in ("integer", "number") and "minimum" in s]
    assert any(s["minimum"] == 0 for s in bounded)

    headers = await admin(client, conn)
    lot = (await make_lot(client, headers, await operator(conn)))["code"]
    below = await client.patch(f"/v1/parking/lots/{lot}", json={"capacity_car": -1},
                               headers=headers | {"Idempotency-Key": uuid.uuid4().hex})
    assert below.status_code == 400 and below.json()["errors"][0]["field"] == "capacity_car"
    zero = await client.patch(f"/v1/parking/lots/{lot}", json={"capacity_car": 0},
                              headers=headers | {"Idempotency-Key": uuid.uuid4().hex})
    assert zero.status_code == 200, zero.text


async def test_a_raw_body_is_documented_with_its_media_types_and_its_refusals(client, document):
    """A route that reads its body itself (a photo, a FHIR Bundle) documents it, and what it answers when the body
    is not one it reads: 415 for another media type, 422 for bytes that are not a usable image."""
    applied = document["paths"]["/v1/transit/applications"]["post"]["requestBody"]["content"]
    assert set(applied) == {"image/jpeg", "image/png"}
    photo = document["paths"]["/v1/feedback/photos"]["post"]
    assert photo["requestBody"]["required"] is True
    assert set(photo["requestBody"]["content"]) == {"image/jpeg", "image/png"}
    assert photo["requestBody"]["content"]["image/png"]["schema"]["format"] == "binary"
    assert {"413", "422", "429"} <= set(photo["responses"])
    headers = await bearer(client, RESIDENT_A)
    for body in (b"", b"\x89PNG not really"):
        refused = await client.post("/v1/feedback/photos", content=body,
                                    headers=headers | {"Content-Type": "image/png"})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body", refused.text

    fhir = document["paths"]["/fhir"]["post"]
    assert set(fhir["requestBody"]["content"]) == {"application/fhir+json", "application/json"}
    bundle = fhir["requestBody"]["content"]["application/fhir+json"]["schema"]
    assert bundle["properties"]["type"]["enum"] == ["transaction"] and bundle["properties"]["entry"]["maxItems"] > 0
    assert "application/fhir+json" in fhir["responses"]["415"]["content"]
    for kind in (None, "text/plain"):
        answer = await client.post("/fhir", content=b"{}", headers=headers | ({"Content-Type": kind} if kind else {}))
        assert answer.status_code == 415 and answer.json()["resourceType"] == "OperationOutcome"


async def test_every_health_cursor_of_the_documented_form_is_accepted(client, conn, document):
    """The access log (a sequence number) and the timeline (a moment and a UUID) give cursors of the kernel's
    documented form: any text of that form is a page, anything else a 400 on `cursor`."""
    from tests.health.resident_support import RESIDENT, record

    await record(client, conn)
    headers = await bearer(client, RESIDENT)
    cases = {"/v1/health/access-log": ("0", "99999999999999999", "1"),
             "/v1/health/timeline": ("0." + "0" * 32, "-9999999999999999." + "f" * 32,
                                     f"1764547200000000.{uuid.uuid4().hex}")}
    for path, cursors in cases.items():
        pattern = next(p["schema"]["pattern"] for p in document["paths"][path]["get"]["parameters"]
                       if p["name"] == "cursor")
        for cursor in cursors:
            assert re.match(pattern, cursor), (path, cursor)
            response = await client.get(path, params={"cursor": cursor}, headers=headers)
            assert response.status_code == 200, (path, cursor, response.text)
        for bad in ("nonsense", "3UJH5-GUMHM", "1" * 18, "0." + "0" * 31):
            assert not re.match(pattern, bad)
            response = await client.get(path, params={"cursor": bad}, headers=headers)
            assert response.status_code == 400 and response.json()["errors"][0]["field"] == "cursor", (path, bad)


async def test_a_401_on_a_route_with_errors_of_its_own_is_documented_in_both_shapes(client, document):
    """Open311's reads answer errors in Open311's array, but a bearer token that is not valid may be answered by
    the kernel (a problem) or by the route's own handler (an expired token: Open311's array): both are documented,
    and what the server sends is one of them."""
    for path in ("/open311/v2/services.json", "/open311/v2/services.xml", "/open311/v2/requests.json"):
        documented = document["paths"][path]["get"]["responses"]["401"]["content"]
        own = "text/xml" if path.endswith(".xml") else "application/json"
        assert {"application/problem+json", own} <= set(documented), (path, documented)
        answer = await client.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert answer.status_code == 401
        assert answer.headers["content-type"].split(";")[0] in documented, (path, answer.headers)


async def test_a_free_form_body_states_what_the_kernel_refuses_in_it(client, document):
    """A FHIR resource has fields no schema lists: they are any JSON value the kernel accepts (no NUL in a string
    or a field name, no number beyond int64), and a NUL in a field name is refused (400) before the route runs."""
    value = document["components"]["schemas"]["JsonValue"]
    kinds = {branch.get("type") for branch in value["anyOf"]}
    assert kinds == {"string", "number", "boolean", "null", "array", "object"}
    assert next(b for b in value["anyOf"] if b.get("type") == "object")["propertyNames"]["pattern"] == r"^[^\x00]*$"
    bundle = document["paths"]["/fhir"]["post"]["requestBody"]["content"]["application/fhir+json"]["schema"]
    resource = bundle["properties"]["entry"]["items"]["properties"]["resource"]
    assert resource["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}
    headers = await bearer(client, RESIDENT_A)
    for body in (b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"a\\u0000b": 1}}]}',
                 b'{"resourceType": "Bundle", "x": "a\\u0000b"}'):
        refused = await client.post("/fhir", content=body,
                                    headers=headers | {"Content-Type": "application/fhir+json"})
        assert refused.status_code == 400, refused.text
