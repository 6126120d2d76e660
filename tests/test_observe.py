"""Structured logs with personal data redacted, and Prometheus metrics by route template."""

from __future__ import annotations

import io
import json
import logging
import re

from app.logs import JsonFormatter, configure_logging, redact


def capture_logs():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    return stream


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_personal_data_is_redacted_in_messages():
    text = redact("resident 001099012345 phone 0912345678 mail an.nguyen@example.vn token Bearer abc.def")
    assert "001099012345" not in text and "0912345678" not in text and "an.nguyen@example.vn" not in text
    assert "abc.def" not in text
    assert "[personal-id]" in text and "[phone]" in text and "[email]" in text


def test_sensitive_fields_never_reach_the_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ihanoi.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            "login for %s", "079203001234",
            extra={"personal_id": "079203001234", "diagnosis": "J45 hen phế quản", "ward": "Phường Hàng Trống",
                   "nested": {"id_token": "eyJhbGciOi.eyJzdWIi.sig"}, "count": 3},
        )
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    raw = stream.getvalue()
    assert "079203001234" not in raw and "J45" not in raw and "eyJhbGciOi" not in raw
    assert entry["msg"] == "login for [personal-id]"
    assert entry["personal_id"] == "[redacted]" and entry["diagnosis"] == "[redacted]"
    assert entry["nested"] == {"id_token": "[redacted]"}
    assert entry["ward"] == "Phường Hàng Trống" and entry["count"] == 3


async def test_access_log_line_has_request_id_and_route_not_raw_path(client):
    stream = capture_logs()
    try:
        response = await client.get("/v1/fixture/items/001099012345", headers={"X-Request-ID": "req-1"})
        boom = await client.get("/v1/fixture/boom")
    finally:
        logging.getLogger().handlers[:] = []
    assert response.status_code == 404 and boom.status_code == 500
    entries = lines(stream)
    access = [e for e in entries if e["logger"] == "ihanoi.access"]
    first = access[0]
    assert first["request_id"] == "req-1"
    assert first["route"] == "/v1/fixture/items/{item_id}"
    assert first["status"] == 404 and first["method"] == "GET" and first["ms"] >= 0
    errors = [e for e in entries if e["logger"] == "ihanoi.errors"]
    assert errors and errors[0]["request_id"] == boom.headers["x-request-id"]
    assert "RuntimeError" in errors[0]["exc"]
    assert "001099012345" not in stream.getvalue()  # neither the path nor the exception text leaks it


async def test_metrics_count_by_route_and_status(client):
    def count(text: str, route: str, status: str) -> float:
        pattern = rf'http_requests_total\{{method="GET",route="{re.escape(route)}",status="{status}"\}} (\S+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    before = (await client.get("/metrics")).text
    for item_id in (1, 2, 3):
        await client.get(f"/v1/fixture/items/{item_id}")
    await client.get("/nowhere")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = "/v1/fixture/items/{item_id}"
    assert count(after, route, "404") - count(before, route, "404") == 3
    assert count(after, "unmatched", "404") - count(before, "unmatched", "404") == 1
    assert f'http_request_duration_seconds_bucket{{le="0.005",method="GET",route="{route}"}}' in after
    assert re.search(r"^db_pool_connections_in_use \S+$", after, re.M)


async def test_openapi_document_and_docs_page(client):
    spec = await client.get("/schema/openapi.json")
    assert spec.status_code == 200
    document = spec.json()
    assert document["openapi"].startswith("3.1")
    assert {"/healthz", "/readyz", "/v1/modules", "/v1/fixture/items"} <= set(document["paths"])
    page = await client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/schema/openapi.json" in page.text
    assert "http://" not in page.text.split("<script", 1)[0]  # no CDN: the page works offline
    assert "cdn" not in page.text.lower()


async def test_metrics_are_not_public_outside_dev(conn, redis, settings):
    import httpx
    import msgspec

    from app.asgi import create_app
    from tests.conftest import TEST_MODULES, TransactionPool, running

    prod = msgspec.structs.replace(settings, env="prod", metrics_token="scrape-secret-1234")
    app = create_app(prod, modules=TEST_MODULES, pool=TransactionPool(conn), redis=redis)
    async with running(app):
        async def scrape(address: str, **headers: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://ihanoi.test") as client:
                return (await client.get("/metrics", headers=headers)).status_code

        assert await scrape("203.0.113.9") == 404
        assert await scrape("203.0.113.9", Authorization="Bearer wrong-token") == 404
        assert await scrape("203.0.113.9", Authorization="Bearer scrape-secret-1234") == 200
        assert await scrape("127.0.0.1") == 200  # the pod's own sidecar


async def test_operations_show_their_security_and_problem_answers(client):
    document = (await client.get("/schema/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    me = document["paths"]["/v1/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    for status in ("400", "401", "403", "500", "503"):
        assert me["responses"][status]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"}
    public = document["paths"]["/v1/units"]["get"]
    assert "security" not in public and "403" not in public["responses"]
    assert "401" in public["responses"]  # a public route still refuses a bearer token that is not valid
    take = document["paths"]["/v1/fixture/items/{item_id}/take"]["post"]
    header = [p for p in take["parameters"] if p["in"] == "header"]
    assert [(p["name"], p["required"]) for p in header] == [("Idempotency-Key", False)]
    restock = document["paths"]["/v1/fixture/items/{item_id}/restocked"]["post"]
    assert [(p["name"], p["required"]) for p in restock["parameters"] if p["in"] == "header"] == [
        ("Idempotency-Key", True)]
    assert {"409", "422", "404"} <= set(take["responses"])
    item_id = [p for p in take["parameters"] if p["name"] == "item_id"][0]
    assert item_id["schema"]["type"] == "integer" and item_id["schema"]["format"] == "int64"


async def test_every_answer_with_a_body_names_its_schema(client):
    """Generated clients need a type for every success answer: only 204 (and redirects) have no body."""
    document = (await client.get("/schema/openapi.json")).json()
    missing = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, answer in operation["responses"].items():
                if status.startswith("2") and status != "204":
                    schemas = [media.get("schema") for media in (answer.get("content") or {}).values()]
                    if not schemas or not all(schemas):
                        missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing
    operations = sum(1 for item in document["paths"].values() for op in item.values() if isinstance(op, dict))
    assert operations > 60
