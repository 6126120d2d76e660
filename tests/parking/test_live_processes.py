"""Live availability across API processes: a check-in at a gate talking to one API process reaches an app
streaming from another within a second (Redis pub/sub through the declared channel)."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from app import db
from app.identity import service as identity
from payments import service as payments
from tests.conftest import free_port, next_event

pytestmark = pytest.mark.e2e


async def test_a_check_in_on_one_process_reaches_a_stream_on_another(start_server, database_url, redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    port_a = free_port()
    env = {"IHANOI_PUBLIC_URL": f"http://127.0.0.1:{port_a}", "IHANOI_REDIS_PREFIX": prefix}
    base_a, _ = start_server(port=port_a, **env)
    base_b, _ = start_server(**env)
    slug, lot = f"op-{uuid.uuid4().hex[:8]}", f"lot-{uuid.uuid4().hex[:8]}"
    private = ec.generate_private_key(ec.SECP256R1())
    client_id = f"gate-{uuid.uuid4().hex[:8]}"
    conn = await db.connect(database_url)
    try:
        async with conn.transaction():  # committed: the servers are other processes
            await payments.ensure_operator(conn, slug, "Công ty bãi xe", "parking")
            await conn.execute("INSERT INTO parking_lot (code, name, kind, operator_slug, latitude, longitude, "
                               "capacity_car) VALUES ($1, 'Bãi xe', 'lot', $2, 21.03, 105.85, 10)", lot, slug)
            await identity.add_client(conn, client_id=client_id, name="Cổng", roles=[f"parking_gate:{slug}"],
                                      scope="parking",
                                      public_jwk=msgspec.json.decode(ECAlgorithm.to_jwk(private.public_key())))
    finally:
        await conn.close()
    claims = {"iss": client_id, "sub": client_id, "aud": f"{base_a}/oauth/token", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    async with httpx.AsyncClient(base_url=base_a, timeout=10) as gate, \
            httpx.AsyncClient(base_url=base_b, timeout=10) as app:
        token = await gate.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion": jwt.encode(claims, private, algorithm="ES256"),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        async with app.stream("GET", "/v1/parking/availability/stream", params={"lot": lot}) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            await next_event(lines, "ready")
            sent = time.monotonic()
            response = await gate.post("/v1/parking/gate/check-in", headers=headers, json={
                "lot": lot, "plate": f"30A-{uuid.uuid4().int % 900 + 100}.{uuid.uuid4().int % 90 + 10}",
                "vehicle": "car", "device_time": dt.datetime.now(dt.UTC).isoformat()})
            assert response.status_code == 201, response.text
            event = await next_event(lines, "availability")
            took = time.monotonic() - sent
    assert event == {"lot": lot, "free": {"car": 9}}
    assert took < 1.0, f"availability took {took:.2f} s to reach the other process's stream"
