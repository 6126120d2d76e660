"""OpenID Connect relying party for the national identity provider (VNeID), behind a small interface.

No public VNeID integration specification exists, so this is standard OIDC: discovery, the
authorization-code flow with PKCE (S256), state and nonce, and ID-token checks. The JWKS is fetched
asynchronously and cached with a TTL; a token whose `kid` is unknown triggers one refetch, at most one
per `unknown_kid_interval` seconds, so a stream of forged kids cannot make us hammer the provider.
Only RS256, ES256 and EdDSA are accepted: `none` and every HMAC algorithm are refused before any key
is used, and the key's type must match the algorithm, which closes the public-key-as-HMAC-secret hole.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALLOWED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_KEY_TYPE = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
LEEWAY = 30


class LoginRefused(Exception):
    """The identity provider's answer cannot be trusted; `reason` says why (safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityProvider(Protocol):
    issuer: str

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str) -> str: ...

    async def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> dict[str, Any]: ...

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]: ...


def pkce_pair() -> tuple[str, str]:
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _public_key(jwk: dict[str, Any]):
    text = json.dumps(jwk)
    kty = jwk.get("kty")
    if kty == "RSA":
        return RSAAlgorithm.from_jwk(text)
    if kty == "EC":
        return ECAlgorithm.from_jwk(text)
    if kty == "OKP":
        return OKPAlgorithm.from_jwk(text)
    raise LoginRefused(f"unsupported key type {kty!r}")


class OIDCProvider:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        jwks_ttl: float = 300.0,
        unknown_kid_interval: float = 30.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = http
        self.jwks_ttl = jwks_ttl
        self.unknown_kid_interval = unknown_kid_interval
        self._discovery: dict[str, Any] | None = None
        self._discovery_at = 0.0
        self._jwks: dict[str, dict[str, Any]] = {}
        self._jwks_at = 0.0
        self._last_forced_refetch = -1e9
        self.jwks_fetches = 0

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url, timeout=10)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginRefused(f"the identity provider did not answer properly ({type(exc).__name__})") from None

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovery_at > self.jwks_ttl:
            document = await self._get_json(self.issuer + "/.well-known/openid-configuration")
            if document.get("issuer", "").rstrip("/") != self.issuer:
                raise LoginRefused("the discovery document names another issuer")
            self._discovery, self._discovery_at = document, time.monotonic()
        return self._discovery

    async def _fetch_jwks(self) -> None:
        document = await self._get_json((await self.discovery())["jwks_uri"])
        self._jwks = {k["kid"]: k for k in document.get("keys", []) if "kid" in k}
        self._jwks_at = time.monotonic()
        self.jwks_fetches += 1

    async def _key(self, kid: str | None) -> dict[str, Any]:
        if not kid:
            raise LoginRefused("the ID token has no key id")
        if not self._jwks or time.monotonic() - self._jwks_at > self.jwks_ttl:
            await self._fetch_jwks()
        if kid not in self._jwks and time.monotonic() - self._last_forced_refetch >= self.unknown_kid_interval:
            self._last_forced_refetch = time.monotonic()  # the provider may have rotated: look once
            await self._fetch_jwks()
        if kid not in self._jwks:
            raise LoginRefused("the ID token was signed by an unknown key")
        return self._jwks[kid]

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str) -> str:
        endpoint = (await self.discovery())["authorization_endpoint"]
        query = urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
            "scope": "openid profile", "state": state, "nonce": nonce,
            "code_challenge": code_challenge, "code_challenge_method": "S256",
        })
        return f"{endpoint}?{query}"

    async def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> dict[str, Any]:
        endpoint = (await self.discovery())["token_endpoint"]
        try:
            response = await self.http.post(
                endpoint,
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                      "code_verifier": code_verifier},
                auth=(self.client_id, self.client_secret),
                timeout=10,
            )
        except httpx.HTTPError as exc:
            raise LoginRefused(f"the identity provider did not answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            try:
                error = response.json().get("error", "error")
            except ValueError:
                error = f"status {response.status_code}"
            raise LoginRefused(f"the identity provider refused the code ({error})")
        body = response.json()
        if "id_token" not in body:
            raise LoginRefused("the identity provider gave no ID token")
        return body

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise LoginRefused("the ID token is malformed") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise LoginRefused(f"the ID token's algorithm {alg!r} is not accepted")
        jwk = await self._key(header.get("kid"))
        if jwk.get("kty") != _KEY_TYPE[alg] or jwk.get("alg", alg) != alg:
            raise LoginRefused("the ID token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                id_token, _public_key(jwk), algorithms=[alg], audience=self.client_id, issuer=self.issuer,
                leeway=LEEWAY, options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
            )
        except jwt.ExpiredSignatureError:
            raise LoginRefused("the ID token has expired") from None
        except jwt.ImmatureSignatureError:
            raise LoginRefused("the ID token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise LoginRefused("the ID token comes from another issuer") from None
        except jwt.InvalidAudienceError:
            raise LoginRefused("the ID token is meant for another client") from None
        except jwt.InvalidSignatureError:
            raise LoginRefused("the ID token's signature is not valid") from None
        except jwt.PyJWTError as exc:
            raise LoginRefused(f"the ID token is not valid ({exc})") from None
        if claims["iat"] > time.time() + LEEWAY:
            raise LoginRefused("the ID token is not valid yet")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise LoginRefused("the ID token is meant for another client")
        if claims["nonce"] != nonce:
            raise LoginRefused("the ID token's nonce does not match this login")
        return claims
