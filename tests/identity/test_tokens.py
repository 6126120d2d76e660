"""The backend's own tokens: refresh rotation and reuse, sessions, logout, JWKS, key rotation, step-up."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import jwt
import msgspec
import pytest

from app.identity.devlogin import sign_in
from app.identity.tokens import rotate_keys

AN, BINH = "001085012345", "001192034567"


def bearer(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def signed_in(client, personal_id=AN, **kw) -> dict:
    response = await sign_in(client, personal_id, **kw)
    assert response.status_code == 200, response.text
    return response.json()


async def test_refresh_rotates_and_a_reused_token_ends_the_session(make_client, settings, conn):
    quick = msgspec.structs.replace(settings, refresh_grace=0)
    async with make_client(quick) as client:
        first = await signed_in(client)
        second = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        assert rotated["session_id"] == first["session_id"]
        await asyncio.sleep(1.1)  # past the (zero) grace
        reuse = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert "already used" in reuse.json()["detail"]
        # the whole family is gone: the newest refresh token and the access tokens too
        newest = await client.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert newest.status_code == 401
        assert (await client.get("/v1/me", headers=bearer(rotated))).status_code == 401
        assert (await client.get("/v1/me", headers=bearer(first))).status_code == 401
        reason = await conn.fetchval("SELECT revoked_reason FROM session WHERE id = $1::uuid", first["session_id"])
        assert reason == "refresh token reused"


async def test_a_retried_refresh_within_the_grace_is_not_a_theft(client):
    first = await signed_in(client)
    answer = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    retry = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert answer.status_code == 200 and retry.status_code == 200
    # the retry gets the same successor, so whichever answer the phone kept is the live token
    assert retry.json()["refresh_token"] == answer.json()["refresh_token"] != first["refresh_token"]
    assert retry.json()["access_token"] != answer.json()["access_token"]
    for pair in (answer.json(), retry.json()):
        assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 200
    latest = retry.json()
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": latest["refresh_token"]})).status_code == 200


async def test_a_late_retry_within_the_grace_gets_the_live_end_of_the_chain(client, conn):
    first = await signed_in(client)
    second = (await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    third = (await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()
    # a request with the first token that arrives late (the phone already moved on twice)
    late = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert late.status_code == 200, late.text
    assert late.json()["refresh_token"] == third["refresh_token"]
    assert 0 < late.json()["refresh_expires_in"] <= 30 * 24 * 3600
    assert (await client.get("/v1/me", headers=bearer(late.json()))).status_code == 200
    assert await conn.fetchval("SELECT revoked_at IS NULL FROM session WHERE id = $1::uuid", first["session_id"])
    # once the grace is over, the encrypted successors are not kept
    await conn.execute("UPDATE refresh_token SET spent_at = spent_at - interval '1 minute' "
                       "WHERE session_id = $1::uuid AND spent_at IS NOT NULL", first["session_id"])
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})).status_code == 200
    kept = await conn.fetchval("SELECT count(*) FROM refresh_token WHERE session_id = $1::uuid "
                               "AND successor_enc IS NOT NULL", first["session_id"])
    assert kept == 1  # only the rotation just made


async def test_unknown_refresh_token_is_refused(client):
    response = await client.post("/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert response.status_code == 401 and response.json()["type"] == "urn:ihanoi:problem:unauthorized"


async def test_logout_refuses_the_access_token_at_once(client):
    pair = await signed_in(client)
    assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 200
    assert (await client.post("/v1/auth/logout", headers=bearer(pair))).status_code == 204
    refused = await client.get("/v1/me", headers=bearer(pair))
    assert refused.status_code == 401 and refused.json()["detail"] == "the session has ended"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401


def fresh_personal_id() -> str:
    """A well-formed personal ID no other test signs in with (male, born 1987, a random serial).

    For a test that counts a resident's sessions: tests driving real processes commit to the run's database
    (test_stream.py and the console's browser test sign AN in and leave the session live), and an in-process
    test's rolled-back transaction still sees what they committed.
    """
    return f"001087{secrets.randbelow(10**6):06d}"


async def test_sessions_are_listed_and_revoked_per_device(client):
    resident = fresh_personal_id()
    phone = await signed_in(client, resident, device_name="Điện thoại", platform="android")
    tablet = await signed_in(client, resident, device_name="Máy tính bảng", platform="ios")
    listed = (await client.get("/v1/me/sessions", headers=bearer(phone))).json()["sessions"]
    assert {(s["device_name"], s["platform"], s["current"]) for s in listed} == {
        ("Điện thoại", "android", True), ("Máy tính bảng", "ios", False)}
    revoked = await client.delete(f"/v1/me/sessions/{tablet['session_id']}", headers=bearer(phone))
    assert revoked.status_code == 204
    assert (await client.get("/v1/me", headers=bearer(tablet))).status_code == 401
    assert (await client.get("/v1/me", headers=bearer(phone))).status_code == 200


async def test_a_resident_cannot_touch_another_residents_session(client):
    an = await signed_in(client, AN)
    binh = await signed_in(client, BINH)
    response = await client.delete(f"/v1/me/sessions/{binh['session_id']}", headers=bearer(an))
    assert response.status_code == 404
    assert (await client.get("/v1/me", headers=bearer(binh))).status_code == 200
    assert (await client.delete("/v1/me/sessions/not-a-uuid", headers=bearer(an))).status_code == 400


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), "not valid"),
        (lambda t: "garbage", "malformed"),
    ],
)
async def test_tampered_access_tokens_are_refused(client, mutate, fragment):
    pair = await signed_in(client)
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {mutate(pair['access_token'])}"})
    assert response.status_code == 401 and fragment in response.json()["detail"]


async def test_foreign_and_expired_tokens_are_refused(client):
    from cryptography.hazmat.primitives.asymmetric import ec

    pair = await signed_in(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": kid})
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    keys = client.app.state.identity.keys
    expired = keys.sign(claims | {"exp": int(time.time()) - 120, "iat": int(time.time()) - 800})
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and response.json()["detail"] == "the access token has expired"
    other_audience = keys.sign(claims | {"aud": "someone-else"})
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {other_audience}"})).status_code == 401
    hs = jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": kid})
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {hs}"})).status_code == 401


async def test_jwks_lets_others_verify_offline_and_rotation_keeps_old_tokens(client, conn):
    pair = await signed_in(client)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    verified = jwt.decode(pair["access_token"], key, algorithms=["ES256"], audience="ihanoi-api")
    assert verified["sid"] == pair["session_id"]

    rt = client.app.state.identity
    new_kid, retiring = await rotate_keys(conn, rt.vault, keep_old_for=660)
    assert kid in retiring
    await rt.keys.load(client.app.state.pool)
    rotated_jwks = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {kid, new_kid} <= rotated_jwks  # the old key still verifies until its tokens are dead
    fresh = await signed_in(client)
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
    assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 200
    # once retired it is gone from the JWKS and its tokens are refused
    await conn.execute("UPDATE signing_key SET retire_after = now() - interval '1 second' WHERE kid = $1", kid)
    await rt.keys.load(client.app.state.pool)
    assert kid not in {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 401


async def test_level_1_on_a_level_2_action_asks_for_step_up(client):
    low = await signed_in(client, level=1)
    response = await client.get("/v1/fixture/sensitive", headers=bearer(low))
    assert response.status_code == 403
    body = response.json()
    assert body["type"].endswith("step-up-required")
    assert body["extra"]["required_level"] == 2 and body["extra"]["current_level"] == 1
    high = await signed_in(client, level=2)
    assert (await client.get("/v1/fixture/sensitive", headers=bearer(high))).json() == {"level": 2}
    assert (await client.get("/v1/fixture/sensitive")).status_code == 401


async def test_an_old_sign_in_asks_for_step_up_on_sensitive_actions(client):
    pair = await signed_in(client, level=2)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    stale = client.app.state.identity.keys.sign(claims | {"auth_time": int(time.time()) - 3600})
    response = await client.get("/v1/fixture/sensitive", headers={"Authorization": f"Bearer {stale}"})
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")
    assert "within the last 300 seconds" in response.json()["detail"]


async def test_a_revocation_only_in_the_database_is_caught_up_within_seconds(client, conn):
    # another process revoked the session but could not tell Redis: the database is the truth
    pair = await signed_in(client)
    assert (await client.get("/v1/me", headers=bearer(pair))).status_code == 200
    await conn.execute("UPDATE session SET revoked_at = now(), revoked_reason = 'logout' WHERE id = $1::uuid",
                       pair["session_id"])
    revoked = client.app.state.identity.revoked
    started = time.monotonic()
    while (await client.get("/v1/me", headers=bearer(pair))).status_code == 200:
        assert time.monotonic() - started < revoked.CATCH_UP_EVERY + 1, "the revocation was never caught up"
        await asyncio.sleep(0.05)
    assert not await client.app.state.redis.client.zscore(revoked.key, pair["session_id"])
