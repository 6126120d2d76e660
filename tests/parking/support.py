"""Helpers for the parking tests: an operator, lots made over HTTP, a gate that is a real machine client."""

from __future__ import annotations

import datetime as dt
import io
import time
import uuid

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from PIL import Image

from app.identity import service as identity
from tests.payments.support import bearer, grant, key, operator, resident_id, topup  # noqa: F401

RESIDENT, OTHER, ADMIN, OFFICER, OPERATOR_STAFF = ("001090012345", "001190054321", "001080033333", "001175022222",
                                                   "001085011111")
LAT, LNG = 21.0287, 105.8524


def camera_jpeg(color=(30, 90, 160)) -> bytes:
    """A gate camera's JPEG carrying EXIF a stored photo must not keep: the camera's make and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = "GateCam Model X"  # Make
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 43.32), 3: "E", 4: (105.0, 51.0, 8.64)}  # GPSInfo
    out = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(out, format="JPEG", exif=exif)
    return out.getvalue()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def gate(client, conn, operator_slug: str) -> dict[str, str]:
    """A gate registered as a machine client of the operator, signed in with private_key_jwt."""
    private = ec.generate_private_key(ec.SECP256R1())
    client_id = f"gate-{uuid.uuid4().hex[:8]}"
    await identity.add_client(conn, client_id=client_id, name="Cổng bãi xe", roles=[f"parking_gate:{operator_slug}"],
                              scope="parking", public_jwk=msgspec.json.decode(ECAlgorithm.to_jwk(private.public_key())))
    claims = {"iss": client_id, "sub": client_id, "aud": "http://ihanoi.test/oauth/token", "iat": int(time.time()),
              "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex}
    response = await client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion": jwt.encode(claims, private, algorithm="ES256"),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def admin(client, conn) -> dict[str, str]:
    await grant(client, conn, ADMIN, "parking_admin")
    return await bearer(client, ADMIN)


async def make_lot(client, headers, operator_slug: str, **extra) -> dict:
    body = {"code": f"lot-{uuid.uuid4().hex[:8]}", "name": "Bãi xe Hàng Bạc", "kind": "lot", "operator": operator_slug,
            "latitude": LAT, "longitude": LNG, "capacity_motorbike": 50, "capacity_car": 2} | extra
    response = await client.post("/v1/parking/lots", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def check_in(client, gate_headers, lot: str, expect: int = 201, **body):
    body = {"lot": lot, "device_time": now_iso()} | body
    response = await client.post("/v1/parking/gate/check-in", json=body, headers=gate_headers)
    assert response.status_code == expect, response.text
    return response.json()


async def check_out(client, gate_headers, lot: str, expect: int = 200, **body):
    body = {"lot": lot, "device_time": now_iso()} | body
    response = await client.post("/v1/parking/gate/check-out", json=body, headers=gate_headers)
    assert response.status_code == expect, response.text
    return response.json()


async def backdate(conn, session_id: int, **delta) -> None:
    """Move a session's start into the past, as if the vehicle had been parked that long."""
    await conn.execute("UPDATE parking_session SET started_at = started_at - $2::interval WHERE id = $1", session_id,
                       dt.timedelta(**delta))


async def counts(conn) -> tuple[int, int, int]:
    row = await conn.fetchrow("SELECT (SELECT count(*) FROM parking_session) s, (SELECT count(*) FROM parking_debt) d, "
                              "(SELECT count(*) FROM payment_transaction) t")
    return row["s"], row["d"], row["t"]
