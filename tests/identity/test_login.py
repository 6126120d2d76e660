"""VNeID sign-in through the real OIDC flow against the local stand-in, and every refusal."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from app.identity.devlogin import sign_in

AN = "001085012345"  # Nguyễn Văn An, born 1985, male, registered in Hà Nội
PROBLEM = "application/problem+json"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def test_sign_in_gives_tokens_and_a_resident(client, conn):
    response = await sign_in(client, AN, level=2)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 600
    claims = claims_of(pair["access_token"])
    assert claims["iss"] == "http://ihanoi.test" and claims["aud"] == "ihanoi-api"
    assert claims["level"] == 2 and claims["roles"] == [] and claims["sid"] == pair["session_id"]
    assert jwt.get_unverified_header(pair["access_token"])["alg"] == "ES256"
    # the personal ID never travels in our tokens, and is never stored in clear
    payload = base64.urlsafe_b64decode(pair["access_token"].split(".")[1] + "==").decode()
    assert AN not in json.dumps(claims) and AN not in payload
    row = await conn.fetchrow("SELECT * FROM resident WHERE id = $1::uuid", claims["sub"])
    assert row["full_name"] == "Nguyễn Văn An" and str(row["birth_date"]) == "1985-03-12"
    assert row["identity_level"] == 2 and row["sex"] == "male"
    assert AN.encode() not in row["personal_id_enc"] and AN.encode() not in row["personal_id_hash"]
    assert all(AN not in str(v) for v in row.values())

    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200
    assert me.json()["personal_id"] == "001******345"
    assert me.json()["full_name"] == "Nguyễn Văn An" and me.json()["identity_level"] == 2


async def test_sign_in_again_updates_the_profile(client, conn):
    first = (await sign_in(client, AN, level=1)).json()
    second = (await sign_in(client, AN, level=2, full_name="Nguyễn Văn An Khang")).json()
    sub = claims_of(first["access_token"])["sub"]
    assert claims_of(second["access_token"])["sub"] == sub  # same resident
    assert first["session_id"] != second["session_id"]  # a session per sign-in
    row = await conn.fetchrow("SELECT full_name, identity_level FROM resident WHERE id = $1::uuid", sub)
    assert (row["full_name"], row["identity_level"]) == ("Nguyễn Văn An Khang", 2)
    assert await conn.fetchval("SELECT count(*) FROM resident WHERE id = $1::uuid", sub) == 1


async def test_decomposed_name_is_stored_nfc(client, conn):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Trần Thị Bình")
    pair = (await sign_in(client, "001192034567", full_name=decomposed)).json()
    stored = await conn.fetchval("SELECT full_name FROM resident WHERE id = $1::uuid",
                                 claims_of(pair["access_token"])["sub"])
    assert stored == unicodedata.normalize("NFC", "Trần Thị Bình") and stored != decomposed


def assert_refused(response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "urn:ihanoi:problem:login-refused"
    assert fragment in body["detail"]


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    [
        ("expired", "has expired"),
        ("not-yet-valid", "not valid yet"),
        ("wrong-issuer", "another issuer"),
        ("wrong-audience", "another client"),
        ("bad-signature", "signature is not valid"),
        ("alg-none", "algorithm 'none' is not accepted"),
        ("hs256-public-key", "algorithm 'HS256' is not accepted"),
        # an ID token minted for another login (a replayed token) carries another nonce
        ("wrong-nonce", "nonce does not match"),
    ],
)
async def test_bad_id_tokens_are_refused(client, conn, scenario, fragment):
    before = await conn.fetchval("SELECT count(*) FROM session")
    assert_refused(await sign_in(client, AN, scenario=scenario), fragment)
    assert await conn.fetchval("SELECT count(*) FROM session") == before  # nothing written


async def test_unknown_kid_refetches_once_then_refuses(client):
    provider = client.app.state.identity.provider
    assert (await sign_in(client, AN)).status_code == 200  # JWKS cached now
    fetches = provider.jwks_fetches
    assert_refused(await sign_in(client, AN, scenario="unknown-kid"), "unknown key")
    assert provider.jwks_fetches == fetches + 1  # looked once: the provider might have rotated
    assert_refused(await sign_in(client, AN, scenario="unknown-kid"), "unknown key")
    assert provider.jwks_fetches == fetches + 1  # and not again at once: forged kids cannot make us hammer


async def test_rotated_provider_key_is_found_by_one_refetch(client):
    provider = client.app.state.identity.provider
    assert (await sign_in(client, AN)).status_code == 200
    fetches = provider.jwks_fetches
    assert (await client.post("/stand-in/vneid/rotate")).status_code == 200
    assert (await sign_in(client, AN)).status_code == 200
    assert provider.jwks_fetches == fetches + 1


async def test_code_and_state_are_single_use(client):
    from urllib.parse import parse_qs, urlsplit

    from app.identity.devlogin import persona

    started = (await client.post("/v1/auth/vneid/start", json={"device_name": "Máy", "platform": "ios"})).json()
    url = urlsplit(started["authorization_url"])
    form = {k: v[0] for k, v in parse_qs(url.query).items()} | persona(AN) | {"level": "2"}
    location = (await client.post(url.path, data=form)).headers["location"]
    back = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert (await client.post("/v1/auth/vneid/complete", json=back)).status_code == 200
    # the same state again: this login is over
    assert_refused(await client.post("/v1/auth/vneid/complete", json=back), "already completed")
    # the same code under a fresh login: the provider will not honour a code twice
    fresh = (await client.post("/v1/auth/vneid/start", json={"device_name": "Máy", "platform": "ios"})).json()
    replay = {"state": fresh["state"], "code": back["code"]}
    assert_refused(await client.post("/v1/auth/vneid/complete", json=replay), "refused the code")


@pytest.mark.parametrize(
    ("personal_id", "details", "fragment"),
    [
        ("099085012345", {}, "unknown province code"),
        ("00108501234", {}, "12 digits"),
        ("001085012345", {"birth_date": "1986-03-12"}, "do not match birth year"),
        ("001085012345", {"birth_date": "2085-03-12"}, "does not match birth year"),
        ("001085012345", {"sex": "female"}, "sex"),
    ],
)
async def test_invalid_personal_id_is_refused(client, conn, personal_id, details, fragment):
    before = await conn.fetchval("SELECT count(*) FROM resident")
    response = await sign_in(client, personal_id, **details)
    assert_refused(response, "personal ID number is not valid")
    assert fragment in response.json()["detail"]
    assert personal_id not in response.text  # not even echoed back
    assert await conn.fetchval("SELECT count(*) FROM resident") == before


async def test_bad_start_body_names_the_field(client):
    response = await client.post("/v1/auth/vneid/start", json={"device_name": "", "platform": "nokia"})
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} <= {"device_name", "platform"}


async def test_login_rate_limit_answers_429_with_retry_after(make_client, settings):
    import msgspec

    limited = msgspec.structs.replace(settings, rate_login="3/60")
    async with make_client(limited) as client:
        body = {"device_name": "Máy", "platform": "android"}
        codes = [(await client.post("/v1/auth/vneid/start", json=body)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = await client.post("/v1/auth/vneid/start", json=body)
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert refused.json()["type"] == "urn:ihanoi:problem:too-many-requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_personal_id_never_reaches_the_logs(client):
    import io
    import logging

    from app.logs import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        assert (await sign_in(client, AN)).status_code == 200
        assert_refused(await sign_in(client, "099085012345"), "unknown province")
        await client.post("/v1/admin/residents/lookup", json={"personal_id": AN})
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
    text = stream.getvalue()
    assert "ihanoi.access" in text and "login" in text  # the logs were written
    assert AN not in text and "099085012345" not in text


async def test_the_stand_in_authorize_page_offers_demo_residents(client):
    started = (await client.post("/v1/auth/vneid/start", json={"device_name": "Máy", "platform": "web"})).json()
    page = await client.get(started["authorization_url"].replace("http://ihanoi.test", ""))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Nguyễn Văn An" in page.text and started["state"] in page.text


def test_the_stand_in_is_not_mounted_in_production(settings):
    import msgspec

    from app.asgi import create_app

    paths = {route.path for route in create_app(msgspec.structs.replace(settings, env="prod"), modules=[]).routes}
    assert "/v1/auth/vneid/start" in paths
    assert not any(path.startswith("/stand-in") for path in paths)
    dev_paths = {route.path for route in create_app(settings, modules=[]).routes}
    assert "/stand-in/vneid/token" in dev_paths
