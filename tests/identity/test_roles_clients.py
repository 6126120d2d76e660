"""Roles scoped to units, granted by admins (audited), and machine clients with private_key_jwt."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.identity import service
from app.identity.devlogin import sign_in
from app.identity.models import GrantRequest

ADMIN, CLERK, RESIDENT = "001078056789", "001192034567", "001085012345"


def bearer(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def grant(client, conn, personal_id: str, role: str, scope: str = "") -> None:
    rt = client.app.state.identity
    resident = await service.resident_for_personal_id(rt, conn, personal_id, create=True)
    await service.grant_role(rt, conn, actor="test", resident_id=resident["id"],
                             request=GrantRequest(resident_id=str(resident["id"]), role=role, scope=scope),
                             request_id=None)


async def signed_in(client, personal_id: str, **kw) -> dict:
    response = await sign_in(client, personal_id, **kw)
    assert response.status_code == 200, response.text
    return response.json()


async def test_admin_grants_and_revokes_roles_with_an_audit_trail(client, conn):
    await grant(client, conn, ADMIN, "admin")
    admin = await signed_in(client, ADMIN)
    clerk = await signed_in(client, CLERK)
    clerk_id = jwt.decode(clerk["access_token"], options={"verify_signature": False})["sub"]

    found = await client.post("/v1/admin/residents/lookup", json={"personal_id": CLERK}, headers=bearer(admin))
    assert found.status_code == 200
    assert found.json() == {"resident_id": clerk_id, "full_name": "Trần Thị Bình", "personal_id": "001******567"}

    body = {"resident_id": clerk_id, "role": "staff", "scope": "phuong-hoan-kiem"}
    created = await client.post("/v1/admin/roles", json=body, headers=bearer(admin))
    assert created.status_code == 201
    again = await client.post("/v1/admin/roles", json=body, headers=bearer(admin))
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]  # a retry is harmless

    # the role reaches the clerk's next token, and with it the unit's queue, and only that unit's
    clerk = await signed_in(client, CLERK)
    assert "staff:phuong-hoan-kiem" in jwt.decode(clerk["access_token"], options={"verify_signature": False})["roles"]
    assert (await client.get("/v1/fixture/units/phuong-hoan-kiem/queue", headers=bearer(clerk))).status_code == 200
    other = await client.get("/v1/fixture/units/phuong-ba-dinh/queue", headers=bearer(clerk))
    assert other.status_code == 403 and "phuong-ba-dinh" in other.json()["detail"]

    revoked = await client.delete(f"/v1/admin/roles/{created.json()['id']}", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.delete(f"/v1/admin/roles/{created.json()['id']}", headers=bearer(admin))).status_code == 404
    listed = (await client.get(f"/v1/admin/residents/{clerk_id}/roles", headers=bearer(admin))).json()["grants"]
    assert [(g["role"], g["scope"], g["revoked_at"] is not None) for g in listed] == [
        ("staff", "phuong-hoan-kiem", True)]

    admin_id = jwt.decode(admin["access_token"], options={"verify_signature": False})["sub"]
    audit = await conn.fetch("SELECT actor, action, role, scope, request_id FROM role_audit "
                             "WHERE resident_id = $1::uuid ORDER BY id", clerk_id)
    assert [(a["actor"], a["action"], a["role"], a["scope"]) for a in audit] == [
        (f"resident:{admin_id}", "grant", "staff", "phuong-hoan-kiem"),
        (f"resident:{admin_id}", "revoke", "staff", "phuong-hoan-kiem"),
    ]
    assert all(a["request_id"] for a in audit)


async def test_city_wide_staff_cover_every_ward(client, conn):
    await grant(client, conn, CLERK, "staff", "hanoi")
    clerk = await signed_in(client, CLERK)
    assert (await client.get("/v1/fixture/units/phuong-ba-dinh/queue", headers=bearer(clerk))).status_code == 200


async def test_only_admins_at_level_2_may_grant(client, conn):
    resident = await signed_in(client, RESIDENT)
    body = {"resident_id": str(uuid.uuid4()), "role": "admin"}
    assert (await client.post("/v1/admin/roles", json=body, headers=bearer(resident))).status_code == 403
    assert (await client.post("/v1/admin/roles", json=body)).status_code == 401
    await grant(client, conn, ADMIN, "admin")
    low_admin = await signed_in(client, ADMIN, level=1)
    response = await client.post("/v1/admin/roles", json=body, headers=bearer(low_admin))
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"role": "staff", "scope": "phuong-khong-co"}, "scope", 422),  # well-formed, names no unit
        ({"role": "staff"}, "scope", 400),
        ({"role": "admin", "scope": "hanoi"}, "scope", 400),
        ({"role": "mayor"}, "role", 422),
        # roles are what the kernel and the loaded modules declare (the test module brings fixture_keeper)
        ({"role": "weather_radar_operator", "scope": "bai-xe"}, "role", 422),
        ({"role": "fixture_keeper", "scope": "Bãi Xe"}, "scope", 400),
        ({"role": "fixture_keeper"}, "scope", 400),
    ],
)
async def test_bad_grants_name_the_field(client, conn, body, field, status):
    await grant(client, conn, ADMIN, "admin")
    admin = await signed_in(client, ADMIN)
    target = jwt.decode((await signed_in(client, RESIDENT))["access_token"], options={"verify_signature": False})
    response = await client.post("/v1/admin/roles", json={"resident_id": target["sub"], **body},
                                 headers=bearer(admin))
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM role_grant WHERE resident_id = $1::uuid", target["sub"]) == 0


async def test_units_directory_is_public(client):
    units = (await client.get("/v1/units")).json()["units"]
    by_code = {u["code"]: u for u in units}
    assert by_code["phuong-hoan-kiem"]["name"] == {"vi": "Phường Hoàn Kiếm", "en": "Hoan Kiem Ward"}
    assert by_code["phuong-hoan-kiem"]["parent_code"] == "hanoi"
    assert sum(u["kind"] == "ward" for u in units) == 51


# ---- machine clients ----------------------------------------------------------------------------------------


async def register(conn, key, client_id="validator-bus-0042", roles=("validator:hanoibus",)) -> str:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm

    algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else OKPAlgorithm
    jwk = msgspec.json.decode(algorithm.to_jwk(key.public_key()))
    await service.add_client(conn, client_id=client_id, name="Máy soát vé xe 42", roles=list(roles), scope="tickets",
                             public_jwk=jwk)
    return client_id


def assertion(key, client_id: str, *, aud="http://ihanoi.test/oauth/token", lifetime=60, alg="ES256", **extra):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
              "jti": uuid.uuid4().hex} | extra
    return jwt.encode(claims, key, algorithm=alg)


def form(token: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion": token,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}


async def test_client_credentials_give_a_short_token_with_the_clients_roles(client, conn):
    key = ec.generate_private_key(ec.SECP256R1())
    client_id = await register(conn, key)
    response = await client.post("/oauth/token", data=form(assertion(key, client_id)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 300 and body["scope"] == "tickets"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == f"client:{client_id}" and claims["roles"] == ["validator:hanoibus"]
    assert claims["exp"] - claims["iat"] == 300 and "sid" not in claims
    # a machine is not a resident
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})).status_code == 403


async def test_eddsa_clients_work_too(client, conn):
    key = ed25519.Ed25519PrivateKey.generate()
    client_id = await register(conn, key, client_id="gate-lot-7", roles=("parking_gate:lot-7",))
    response = await client.post("/oauth/token", data=form(assertion(key, client_id, alg="EdDSA")))
    assert response.status_code == 200, response.text


async def test_a_replayed_client_assertion_is_refused(client, conn):
    key = ec.generate_private_key(ec.SECP256R1())
    client_id = await register(conn, key)
    token = assertion(key, client_id)
    assert (await client.post("/oauth/token", data=form(token))).status_code == 200
    replay = await client.post("/oauth/token", data=form(token))
    assert replay.status_code == 401
    assert replay.json()["extra"]["error"] == "invalid_client" and "already used" in replay.json()["detail"]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda key, cid: assertion(key, cid, lifetime=600), "at most 120 seconds"),
        (lambda key, cid: assertion(key, cid, aud="https://elsewhere.example/token"), "not valid"),
        (lambda key, cid: assertion(key, cid, exp=int(time.time()) - 100, iat=int(time.time()) - 150), "not valid"),
        (lambda key, cid: assertion(ec.generate_private_key(ec.SECP256R1()), cid), "not valid"),
        (lambda key, cid: assertion(key, "nobody-here"), "unknown client"),
        (lambda key, cid: assertion(key, cid, sub="someone-else"), "sub must be the client id"),
        (lambda key, cid: jwt.encode({"iss": cid, "sub": cid}, "k" * 32, algorithm="HS256"), "algorithm"),
    ],
)
async def test_bad_client_assertions_are_refused(client, conn, make, fragment):
    key = ec.generate_private_key(ec.SECP256R1())
    client_id = await register(conn, key)
    response = await client.post("/oauth/token", data=form(make(key, client_id)))
    assert response.status_code == 401, response.text
    assert fragment in response.json()["detail"]


async def test_client_token_rate_limit(make_client, settings, conn):
    limited = msgspec.structs.replace(settings, rate_client_token="2/60")
    async with make_client(limited) as client:
        key = ec.generate_private_key(ec.SECP256R1())
        client_id = await register(conn, key)
        codes = [(await client.post("/oauth/token", data=form(assertion(key, client_id)))).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]


def from_address(client, host: str) -> httpx.AsyncClient:
    """Another caller of the same app, from its own address."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app, client=(host, 40000)),
                             base_url="http://ihanoi.test")


async def test_forged_assertions_lock_out_the_forger_not_the_client(make_client, settings, conn):
    limited = msgspec.structs.replace(settings, rate_client_token="5/60")
    async with make_client(limited) as client, from_address(client, "203.0.113.66") as stranger:
        key = ec.generate_private_key(ec.SECP256R1())
        client_id = await register(conn, key)
        stranger_key = ec.generate_private_key(ec.SECP256R1())
        forged = [await stranger.post("/oauth/token", data=form(assertion(stranger_key, client_id)))
                  for _ in range(8)]
        assert [r.status_code for r in forged] == [401] * 5 + [429] * 3
        assert int(forged[-1].headers["retry-after"]) >= 1
        assert "failed client-token requests" in forged[-1].json()["detail"]
        # the client named in the forgeries, from its own address, keeps its whole budget
        codes = [(await client.post("/oauth/token", data=form(assertion(key, client_id)))).status_code
                 for _ in range(6)]
        assert codes == [200] * 5 + [429]
        # and the forger stays refused even with a genuine-looking request of its own
        assert (await stranger.post("/oauth/token", data=form(assertion(key, client_id)))).status_code == 429


async def test_malformed_client_requests_count_against_the_address(make_client, settings, conn):
    limited = msgspec.structs.replace(settings, rate_client_token="4/60")
    async with make_client(limited) as client, from_address(client, "198.51.100.9") as prober:
        key = ec.generate_private_key(ec.SECP256R1())
        client_id = await register(conn, key)
        bad = [form("not-a-jwt"), form("a.b.c"), {"grant_type": "client_credentials"},
               {"grant_type": "password"}, form("x.y.z")]
        codes = [(await prober.post("/oauth/token", data=body)).status_code for body in bad]
        assert codes == [401, 401, 401, 400, 429]
        assert (await client.post("/oauth/token", data=form(assertion(key, client_id)))).status_code == 200
