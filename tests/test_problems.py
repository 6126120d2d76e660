"""Every error reaches the client as RFC 9457 problem details, never a bare 500 or half-written data."""

from __future__ import annotations

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:ihanoi:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_a_404_problem(client):
    body = assert_problem(await client.get("/v1/no-such-thing"), 404, "not-found")
    assert body["title"] == "Không tìm thấy"  # Vietnamese first


async def test_titles_follow_accept_language(client):
    response = await client.get("/v1/no-such-thing", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert assert_problem(response, 404, "not-found")["title"] == "Not found"


async def test_domain_not_found_carries_detail(client):
    body = assert_problem(await client.get("/v1/fixture/items/999999"), 404, "not-found")
    assert body["detail"] == "item 999999 does not exist"


async def test_wrong_method_is_a_405_problem(client):
    response = await client.delete("/healthz")
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers.get("allow", "")


async def test_wrong_type_names_the_field(client):
    response = await client.post("/v1/fixture/items", json={"name": "ghế", "quantity": "nhiều"})
    body = assert_problem(response, 400, "validation-error")
    assert body["errors"] == [{"field": "quantity", "message": "Expected `int`, got `str`", "source": "body"}]


async def test_missing_and_unknown_fields_are_named(client):
    missing = assert_problem(await client.post("/v1/fixture/items", json={"name": "bàn"}), 400, "validation-error")
    assert [e["field"] for e in missing["errors"]] == ["quantity"]
    unknown = assert_problem(
        await client.post("/v1/fixture/items", json={"name": "bàn", "quantity": 1, "colour": "đỏ"}),
        400, "validation-error",
    )
    assert [e["field"] for e in unknown["errors"]] == ["colour"]


async def test_constraint_violation_names_the_field(client):
    body = assert_problem(await client.post("/v1/fixture/items", json={"name": "", "quantity": 1}),
                          400, "validation-error")
    assert body["errors"][0]["field"] == "name"
    assert "length" in body["errors"][0]["message"]


async def test_malformed_json_is_a_400_problem(client):
    response = await client.post("/v1/fixture/items", content=b'{"name": "x", ',
                                 headers={"content-type": "application/json"})
    body = assert_problem(response, 400, "validation-error")
    assert body["errors"][0]["field"] == "$"


async def test_domain_rule_names_the_field(client, conn):
    body = assert_problem(await client.post("/v1/fixture/items", json={"name": "ô", "quantity": -1}),
                          400, "validation-error")
    assert body["errors"] == [{"field": "quantity", "message": "must not be negative", "source": "body"}]
    assert await conn.fetchval("SELECT count(*) FROM fixture_item WHERE name = 'ô'") == 0


async def test_duplicate_is_a_409_and_nothing_half_written(client, conn):
    created = await client.post("/v1/fixture/items", json={"name": "xe đạp", "quantity": 3})
    assert created.status_code == 201
    item = created.json()
    assert_problem(await client.post("/v1/fixture/items", json={"name": "xe đạp", "quantity": 1}), 409, "conflict")
    # the copy's first write (quantity - 1) must roll back with its failed second write
    body = assert_problem(await client.post(f"/v1/fixture/items/{item['id']}/copies"), 409, "conflict")
    assert "xe đạp" in body["detail"]
    assert await conn.fetchval("SELECT quantity FROM fixture_item WHERE id = $1", item["id"]) == 3
    assert (await client.get(f"/v1/fixture/items/{item['id']}")).json()["quantity"] == 3


async def test_unhandled_error_is_a_500_problem_without_internals(client):
    response = await client.get("/v1/fixture/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "detail" not in body
    assert "001099012345" not in response.text and "RuntimeError" not in response.text


async def test_request_id_is_echoed_when_sane(client):
    ok = await client.get("/healthz", headers={"X-Request-ID": "app-7f3a.1"})
    assert ok.headers["x-request-id"] == "app-7f3a.1"
    hostile = await client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert len(hostile.headers["x-request-id"]) == 20  # replaced by one of ours
    assert hostile.headers["x-request-id"] != (await client.get("/healthz")).headers["x-request-id"]
