"""Helpers shared by the transit tests: riders with money, a phone's device key, validators as clients."""

from __future__ import annotations

import base64
import time
import uuid

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from app.identity import service as identity
from app.identity.devlogin import sign_in
from tests.feedback.support import grant  # noqa: F401 - re-exported
from tests.payments.support import topup
from transit import credential
from transit.validator import Validator

RIDER, SENIOR, STUDENT, STAFF, METRO_STAFF, ADMIN = (
    "001090012345", "001050011111", "001305022222", "001192034567", "001088077777", "001078056789")


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def session(client, personal_id: str, **details) -> dict:
    response = await sign_in(client, personal_id, **details)
    assert response.status_code == 200, response.text
    body = response.json()
    return {"Authorization": f"Bearer {body['access_token']}"} | {"_session": body["session_id"]}


def h(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if not k.startswith("_")}


async def funded(client, personal_id: str = RIDER, amount: int = 1_000_000, **details) -> dict:
    headers = await session(client, personal_id, **details)
    await topup(client, h(headers), amount)
    return headers


class Phone:
    """The app: a device key registered for the session, level 1 fetched, a fresh level 2 on demand."""

    def __init__(self, client, headers: dict) -> None:
        self.client, self.headers = client, h(headers)
        self.key = credential.new_key()
        self.device_id: int | None = None

    async def register(self) -> int:
        point = base64.b64encode(credential.compressed(self.key.public_key())).decode()
        response = await self.client.post("/v1/transit/devices", json={"public_key": point}, headers=self.headers)
        assert response.status_code == 201, response.text
        self.device_id = response.json()["id"]
        return self.device_id

    async def level1(self, ticket_id: int) -> bytes:
        response = await self.client.get(f"/v1/transit/tickets/{ticket_id}/credential",
                                         params={"device_id": self.device_id}, headers=self.headers)
        assert response.status_code == 200, response.text
        return base64.b64decode(response.json()["level1"])

    def code(self, level1: bytes, at: int | None = None) -> bytes:
        return credential.present(level1, self.key, int(time.time()) if at is None else at)


async def buy(client, headers, product_id: str, route_id: int | None = None, **extra) -> dict:
    body = {"product_id": product_id} | ({"route_id": route_id} if route_id else {}) | extra
    response = await client.post("/v1/transit/tickets", json=body, headers=h(headers) | key())
    assert response.status_code == 201, response.text
    return response.json()


async def validator_client(client, conn, operator: str = "hanoibus", client_id: str | None = None):
    """A registered machine client with transit_validator:<operator>; returns (client_id, key, bearer)."""
    from jwt.algorithms import ECAlgorithm

    client_id = client_id or f"validator-{uuid.uuid4().hex[:8]}"
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = msgspec.json.decode(ECAlgorithm.to_jwk(private.public_key()))
    await identity.add_client(conn, client_id=client_id, name="Máy soát vé", roles=[f"transit_validator:{operator}"],
                              scope="tickets", public_jwk=jwk)
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": "http://ihanoi.test/oauth/token", "iat": now,
                            "exp": now + 60, "jti": uuid.uuid4().hex}, private, algorithm="ES256")
    response = await client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code == 200, response.text
    return client_id, private, {"Authorization": f"Bearer {response.json()['access_token']}"}


async def offline_validator(client, conn, route_id: int, vehicle: str, operator: str = "hanoibus") -> Validator:
    client_id, private, _ = await validator_client(client, conn, operator)
    v = Validator(client_id=client_id, private_key=private, base_url="http://ihanoi.test", vehicle=vehicle,
                  route_id=route_id)
    await v.sync(client)
    return v


async def check(client, gate: dict, code: bytes, route_id: int, vehicle: str = "gate-1") -> dict:
    response = await client.post("/v1/transit/validator/check", headers=gate, json={
        "code": base64.b64encode(code).decode(), "route_id": route_id, "vehicle": vehicle})
    assert response.status_code == 200, response.text
    return response.json()


async def flush(client, conn) -> int:
    """Run the boarding flush (the worker's transit.flush_boardings job) on the app's Redis and the test's
    transaction: online boardings wait in Redis until then."""
    from transit import service

    return await service.flush_boardings(conn, client.app.state.redis)


async def rider_with_pass(client, product="bus-monthly-route", route=102):
    """A funded rider holding a pass, its phone registered, and the pass's level-1 credential."""
    rider = await funded(client, RIDER, 1_000_000)
    ticket = await buy(client, rider, product, route)
    phone = Phone(client, rider)
    await phone.register()
    return rider, ticket, phone, await phone.level1(ticket["id"])
