"""No 5xx from input: ids beyond int64, NUL characters and deeply nested JSON are 400s (or 404s) naming the
field, on routes of every module, and a client's mistake never logs an ERROR."""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from tests.feedback.support import CLERK, RESIDENT_A, WARD, bearer, grant, report_body

INT64_OVERFLOW = "9223372036854775808"
DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture
def no_error_logs(caplog):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", f"/v1/feedback/reports/{INT64_OVERFLOW}", None),
    ("GET", f"/v1/feedback/reports/{INT64_OVERFLOW}/timeline", None),
    ("POST", f"/v1/notifications/{INT64_OVERFLOW}/read", None),
    ("GET", f"/v1/broadcasts/{INT64_OVERFLOW}", None),
    ("DELETE", f"/v1/admin/roles/{INT64_OVERFLOW}", None),
    ("POST", "/v1/feedback/reports/1/merge", {"into": 1e20}),
    ("POST", "/v1/feedback/reports/1/merge", {"into": 2**64}),
])
async def test_ids_beyond_int64_are_refused_by_name(client, conn, no_error_logs, method, path, body):
    await grant(client, conn, CLERK, "staff", WARD)
    await grant(client, conn, CLERK, "admin")
    headers = await bearer(client, CLERK)
    response = await client.request(method, path, json=body, headers=headers | {"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code in (400, 404), response.text
    assert response.headers["content-type"] == "application/problem+json"
    if response.status_code == 400:
        assert response.json()["errors"][0]["field"] in ("report_id", "notification_id", "broadcast_id", "grant_id",
                                                         "into", "$")


async def test_a_nul_in_a_body_a_query_or_a_path_is_a_400(client, conn, no_error_logs):
    headers = await bearer(client, RESIDENT_A)
    report = report_body(description="Ổ gà giữa đường\u0000 rất nguy hiểm")
    sent = await client.post("/v1/feedback/reports", json=report, headers=headers | {"Idempotency-Key": "nul-1234"})
    assert sent.status_code == 400 and sent.json()["errors"][0]["field"] == "description"
    device = await client.put("/v1/notifications/devices", headers=headers,
                              json={"fcm_token": "tok\u0000en-12345", "platform": "android", "locale": "vi-VN"})
    assert device.status_code == 400 and device.json()["errors"][0]["field"] == "fcm_token"
    searched = await client.get("/v1/feedback/public/reports?q=abc%00def")
    assert searched.status_code == 400 and searched.json()["errors"][0] == {
        "field": "q", "message": "a NUL character is not allowed", "source": "query"}
    service = await client.get("/open311/v2/services/abc%00def.json")
    assert service.status_code in (400, 404)
    assert await conn.fetchval("SELECT count(*) FROM report WHERE description LIKE '%nguy hiểm'") == 0


async def test_control_characters_in_text_people_write_are_refused(client, no_error_logs):
    headers = await bearer(client, RESIDENT_A)
    report = report_body(description="Ổ gà giữa đường \u0007 rất nguy hiểm")
    sent = await client.post("/v1/feedback/reports", json=report, headers=headers | {"Idempotency-Key": "bell-1234"})
    assert sent.status_code == 400
    assert sent.json()["errors"][0] == {"field": "description", "message": "control characters are not allowed here",
                                        "source": "body"}


@pytest.mark.parametrize("path", ["/v1/auth/vneid/start", "/v1/feedback/reports", "/v1/notifications/devices",
                                  "/v1/fixture/items"])
async def test_deeply_nested_json_is_refused_before_decoding(client, no_error_logs, path):
    headers = await bearer(client, RESIDENT_A)
    method = "PUT" if path.endswith("devices") else "POST"
    response = await client.request(method, path, content=DEEP, headers=headers | {
        "Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 400, response.text
    assert "nested deeper" in response.json()["errors"][0]["message"]


async def test_ordinary_nesting_and_large_bodies_still_pass(client):
    # the check must not refuse legitimate JSON: a realistic body with many brackets in strings and arrays
    response = await client.post("/v1/fixture/items", json={"name": "[[[{{{" * 5, "quantity": 2**30})
    assert response.status_code == 201, response.text


# ---- every operation of the OpenAPI document --------------------------------------------------------------

def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _kinds(schema: dict) -> set[str]:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


def _bad_value(schema: dict, components: dict):
    schema = _resolve(schema, components)
    kinds = _kinds(schema).union(*(_kinds(_resolve(s, components)) for s in schema.get("oneOf", [])))
    if "integer" in kinds:
        return 2**64
    return "a\u0000b"


def _nasty_body(schema: dict, components: dict) -> dict:
    schema = _resolve(schema, components)
    return {name: _bad_value(prop, components) for name, prop in schema.get("properties", {}).items()}


async def test_every_operation_survives_overflow_ids_nul_text_and_deep_json(client, conn, caplog):
    caplog.set_level(logging.WARNING)
    await grant(client, conn, CLERK, "staff", WARD)
    await grant(client, conn, CLERK, "admin")
    staff = await bearer(client, CLERK)
    document = (await client.get("/schema/openapi.json")).json()
    components = document.get("components", {}).get("schemas", {})
    failures, sent = [], 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch") or operation["operationId"] == "FixtureBoom":
                continue  # FixtureBoom is the kernel test's deliberate crash
            if any("text/event-stream" in (r.get("content") or {}) for r in operation.get("responses", {}).values()):
                continue  # a stream never ends: its inputs are the same path and token checks
            params = {p["name"]: p for p in operation.get("parameters", []) + item.get("parameters", [])}
            for variant in ("overflow", "nul", "deep"):
                url = path
                for name in re.findall(r"{([^}:]+)(?::[^}]*)?}", path):
                    schema = _resolve(params.get(name, {}).get("schema", {}), components)
                    value = INT64_OVERFLOW if "integer" in _kinds(schema) or variant == "overflow" else "abc%00def"
                    url = re.sub(r"{" + re.escape(name) + r"(?::[^}]*)?}", value, url)
                query = {p["name"]: "abc\u0000def" for p in params.values() if p.get("in") == "query"}
                body = None
                content = (operation.get("requestBody") or {}).get("content", {})
                if "application/json" in content:
                    body = DEEP if variant == "deep" else _nasty_body(content["application/json"]["schema"],
                                                                       components)
                for headers in ({}, staff):
                    kwargs = {"params": query if variant == "nul" else None,
                              "headers": headers | {"Idempotency-Key": uuid.uuid4().hex}}
                    if isinstance(body, str):
                        kwargs.update(content=body)
                        kwargs["headers"]["Content-Type"] = "application/json"
                    elif body is not None:
                        kwargs.update(json=body)
                    response = await client.request(method.upper(), url, **kwargs)
                    sent += 1
                    if response.status_code >= 500:
                        failures.append((method.upper(), url, variant, bool(headers), response.status_code,
                                         response.text[:200]))
    assert sent > 100
    assert not failures, failures
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
