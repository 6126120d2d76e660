"""A local stand-in for VNeID, mounted only when IHANOI_ENV is dev or test.

It speaks enough OpenID Connect for the relying party to run its real flow: discovery, JWKS,
an authorize page where a developer picks a demo resident and an identity level, and a token endpoint
that checks the client secret, the redirect URI, PKCE and single use of the code, then returns a
real signed ID token. Its keys live in Redis and can rotate. For tests, the authorize form also takes
a `scenario` that makes the ID token wrong in one precise way (expired, wrong issuer, `alg: none`...),
so every refusal of the relying party is exercised through the real HTTP flow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.params import URLEncodedBody

ACR = {1: "urn:vneid:level:1", 2: "urn:vneid:level:2"}
SCENARIOS = (
    "", "expired", "not-yet-valid", "wrong-issuer", "wrong-audience", "bad-signature", "alg-none",
    "hs256-public-key", "unknown-kid", "wrong-nonce",
)

DEMO_RESIDENTS = [
    {"personal_id": "001085012345", "full_name": "Nguyễn Văn An", "birth_date": "1985-03-12", "sex": "male"},
    {"personal_id": "001192034567", "full_name": "Trần Thị Bình", "birth_date": "1992-07-01", "sex": "female"},
    {"personal_id": "001301045678", "full_name": "Lê Minh Châu", "birth_date": "2001-11-20", "sex": "female"},
    {"personal_id": "001078056789", "full_name": "Phạm Quốc Dũng", "birth_date": "1978-01-05", "sex": "male"},
]

PREFIX = "/stand-in/vneid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class StandInKeys:
    """The stand-in's signing keys, in Redis so every process of a dev or test deployment agrees."""

    def __init__(self, redis) -> None:
        self.redis = redis

    async def rotate(self) -> str:
        private = ec.generate_private_key(ec.SECP256R1())
        kid = "vneid-" + secrets.token_hex(4)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        await self.redis.client.hset(self.redis.key("stand-in", "keys"), kid, pem)
        await self.redis.client.set(self.redis.key("stand-in", "current"), kid)
        return kid

    async def current(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        kid = await self.redis.client.get(self.redis.key("stand-in", "current"))
        if kid is None:
            kid = (await self.rotate()).encode()
        kid = kid.decode()
        pem = await self.redis.client.hget(self.redis.key("stand-in", "keys"), kid)
        return kid, serialization.load_pem_private_key(pem, password=None)

    async def jwks(self) -> dict[str, Any]:
        await self.current()
        keys = []
        for kid, pem in (await self.redis.client.hgetall(self.redis.key("stand-in", "keys"))).items():
            private = serialization.load_pem_private_key(pem, password=None)
            jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
            jwk.update({"kid": kid.decode(), "alg": "ES256", "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}


def issuer_of(state: State) -> str:
    return state.identity.provider_issuer


def _subject(personal_id: str) -> str:
    return "vneid-" + hashlib.sha256(b"stand-in:" + personal_id.encode()).hexdigest()[:24]


async def mint_id_token(keys: StandInKeys, grant: dict[str, Any], *, issuer: str, client_id: str) -> str:
    now = int(time.time())
    scenario = grant.get("scenario", "")
    claims = {
        "iss": issuer, "aud": client_id, "sub": _subject(grant["personal_id"]),
        "iat": now, "exp": now + 300, "auth_time": grant["auth_time"], "nonce": grant["nonce"],
        "acr": ACR[grant["level"]], "amr": ["pwd"] if grant["level"] == 1 else ["pwd", "face"],
        "personal_id": grant["personal_id"], "name": grant["full_name"],
        "birthdate": grant["birth_date"], "gender": grant["sex"],
    }
    if scenario == "expired":
        claims.update(iat=now - 900, exp=now - 120)
    elif scenario == "not-yet-valid":
        claims.update(iat=now + 600, nbf=now + 600, exp=now + 900)
    elif scenario == "wrong-issuer":
        claims["iss"] = "https://impostor.example"
    elif scenario == "wrong-audience":
        claims["aud"] = "another-client"
    elif scenario == "wrong-nonce":
        claims["nonce"] = secrets.token_urlsafe(16)
    kid, private = await keys.current()
    if scenario == "alg-none":
        return jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    if scenario == "hs256-public-key":
        # the classic confusion attack: HMAC keyed with the provider's *public* key, which anyone has
        public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"
    if scenario == "unknown-kid":
        stranger = ec.generate_private_key(ec.SECP256R1())
        return jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "unpublished-" + secrets.token_hex(3)})
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})
    if scenario == "bad-signature":
        head, body, signature = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
        raw[5] ^= 0x01
        token = f"{head}.{body}.{_b64(bytes(raw))}"
    return token


@get("/.well-known/openid-configuration", include_in_schema=False)
async def discovery(state: State) -> dict[str, Any]:
    issuer = issuer_of(state)
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "jwks_uri": issuer + "/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": list(ACR.values()),
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "claims_supported": ["sub", "personal_id", "name", "birthdate", "gender", "acr", "auth_time"],
    }


@get("/jwks", include_in_schema=False)
async def jwks(state: State) -> dict[str, Any]:
    return await StandInKeys(state.redis).jwks()


_PAGE = """<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>VNeID (giả lập)</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}}
label{{display:block;margin:.6rem 0 .2rem}} input,select{{width:100%;padding:.4rem}}
button{{margin-top:1rem;padding:.6rem 1.2rem}}</style></head><body>
<h1>VNeID (giả lập)</h1><p>Chỉ dùng khi phát triển và kiểm thử. For development and tests only.</p>
<form method="post" action="{action}">{hidden}
<label>Cư dân mẫu / demo resident</label><select name="demo"><option value="">(nhập bên dưới)</option>{options}</select>
<label>Số định danh cá nhân</label><input name="personal_id" inputmode="numeric" maxlength="12">
<label>Họ và tên</label><input name="full_name">
<label>Ngày sinh (YYYY-MM-DD)</label><input name="birth_date">
<label>Giới tính</label><select name="sex"><option value="male">Nam</option><option value="female">Nữ</option></select>
<label>Mức định danh</label>
<select name="level"><option value="2">Mức 2</option><option value="1">Mức 1</option></select>
<button type="submit">Đăng nhập</button></form></body></html>"""


@get("/authorize", include_in_schema=False)
async def authorize_page(request: Request) -> Response[str]:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in request.query_params.items()
        if k in ("client_id", "redirect_uri", "state", "nonce", "code_challenge", "code_challenge_method")
    )
    options = "".join(
        f'<option value="{i}">{html.escape(r["full_name"])} ({r["birth_date"]})</option>'
        for i, r in enumerate(DEMO_RESIDENTS)
    )
    return Response(_PAGE.format(action=PREFIX + "/authorize", hidden=hidden, options=options),
                    media_type="text/html")


@post("/authorize", include_in_schema=False, status_code=302)
async def authorize(
    state: State, data: URLEncodedBody[dict[str, str]]
) -> Response[None]:
    form = {k: (v if isinstance(v, str) else v[0]) for k, v in data.items()}
    if form.get("demo", "") != "":
        form.update(DEMO_RESIDENTS[int(form["demo"])])
    missing = [f for f in ("redirect_uri", "state", "nonce", "code_challenge", "personal_id") if not form.get(f)]
    if missing or form.get("client_id") != state.identity.settings_client_id:
        return Response(content=None, status_code=400, headers={"X-Error": "invalid_request " + ",".join(missing)})
    scenario = form.get("scenario", "")
    if scenario not in SCENARIOS:
        return Response(content=None, status_code=400, headers={"X-Error": "unknown scenario"})
    code = secrets.token_urlsafe(24)
    grant = {
        "client_id": form["client_id"], "redirect_uri": form["redirect_uri"], "nonce": form["nonce"],
        "code_challenge": form["code_challenge"], "personal_id": form["personal_id"].strip(),
        "full_name": form.get("full_name", ""), "birth_date": form.get("birth_date", ""),
        "sex": form.get("sex", "male"), "level": int(form.get("level", "2")),
        "auth_time": int(time.time()), "scenario": scenario,
    }
    await state.redis.client.set(state.redis.key("stand-in", "code", code), json.dumps(grant), ex=120)
    location = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form["state"]})
    return Response(content=None, status_code=302, headers={"Location": location})


@post("/token", include_in_schema=False, status_code=200)
async def token(
    request: Request, state: State, data: URLEncodedBody[dict[str, str]]
) -> Response[dict[str, Any]]:
    def refuse(error: str, status: int = 400) -> Response[dict[str, Any]]:
        return Response({"error": error}, status_code=status)

    identity = state.identity
    auth = request.headers.get("authorization", "")
    expected = "Basic " + base64.b64encode(
        f"{identity.settings_client_id}:{identity.settings_client_secret}".encode()).decode()
    if not hmac.compare_digest(auth, expected):
        return refuse("invalid_client", 401)
    form = {k: (v if isinstance(v, str) else v[0]) for k, v in data.items()}
    if form.get("grant_type") != "authorization_code":
        return refuse("unsupported_grant_type")
    raw = await state.redis.client.getdel(state.redis.key("stand-in", "code", form.get("code", "")))
    if raw is None:  # unknown, expired or already used: a code is good once
        return refuse("invalid_grant")
    grant = json.loads(raw)
    verifier = form.get("code_verifier", "")
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    if form.get("redirect_uri") != grant["redirect_uri"] or not hmac.compare_digest(challenge, grant["code_challenge"]):
        return refuse("invalid_grant")
    id_token = await mint_id_token(StandInKeys(state.redis), grant, issuer=issuer_of(state),
                                   client_id=identity.settings_client_id)
    return Response({"id_token": id_token, "access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                     "expires_in": 300})


@post("/rotate", include_in_schema=False, status_code=200)
async def rotate(state: State) -> dict[str, str]:
    return {"kid": await StandInKeys(state.redis).rotate()}


router = Router(path=PREFIX, route_handlers=[discovery, jwks, authorize_page, authorize, token, rotate],
                include_in_schema=False)
