"""Identity endpoints: HTTP only; every rule is in service.py."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, JSONBody, URLEncodedBody

from app import openapi, web
from app.errors import InvalidInput
from app.identity import guards, service
from app.identity.models import (
    Account,
    ClientToken,
    Grant,
    GrantList,
    GrantRequest,
    LoginComplete,
    LoginStart,
    LoginStarted,
    Principal,
    RefreshRequest,
    ResidentLookup,
    ResidentRef,
    SessionList,
    TokenPair,
    UnitList,
    UnitView,
)
from app.logs import current_request_id

Conn = NamedDependency[asyncpg.Connection]
# A sign-in or a token exchange may be refused (401) or rate-limited (429) before any guard runs.
SIGN_IN_ERRORS = {401: openapi.problem(401), 429: openapi.problem(429)}
# Admin actions change who may do what: identity level 2, signed in within the last 15 minutes.
ADMIN_GUARDS = [guards.role("admin"), guards.level(2, max_auth_age=900)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput.field(field, "must be a UUID", source="path") from None


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["Identity"]

    @post("/vneid/start", operation_id="StartLogin", responses=SIGN_IN_ERRORS, status_code=200,
          summary="Start a VNeID sign-in: returns the provider URL to open")
    async def start(self, data: JSONBody[LoginStart], state: State, request: Request) -> LoginStarted:
        return await service.start_login(state.identity, state.redis, data, client_ip=client_ip(request))

    @post("/vneid/complete", operation_id="CompleteLogin", responses=SIGN_IN_ERRORS, status_code=200,
          summary="Finish a VNeID sign-in with the code the provider returned")
    async def complete(self, data: JSONBody[LoginComplete], state: State, request: Request, conn: Conn) -> TokenPair:
        return await service.complete_login(state.identity, conn, state.redis, state=data.state, code=data.code,
                                            client_ip=client_ip(request))

    @get("/vneid/callback", operation_id="LoginCallback", responses=SIGN_IN_ERRORS,
         summary="The provider's redirect target: finishes the sign-in (for browsers and tools)")
    async def callback(self, request: Request, conn: Conn) -> TokenPair:
        query = request.query_params
        return await service.complete_login(request.app.state.identity, conn, request.app.state.redis,
                                            state=query.get("state", ""), code=query.get("code", ""),
                                            client_ip=client_ip(request))

    @post("/refresh", operation_id="Refresh", responses=SIGN_IN_ERRORS, status_code=200,
          summary="Rotate a refresh token: the old one is spent, a new pair returned")
    async def refresh(self, data: JSONBody[RefreshRequest], state: State, request: Request, conn: Conn) -> TokenPair:
        return await service.refresh(state.identity, conn, state.redis, refresh_token=data.refresh_token,
                                     client_ip=client_ip(request))

    @post("/logout", operation_id="Logout", status_code=204, guards=[guards.resident],
          summary="End this session everywhere within a second")
    async def logout(self, state: State, conn: Conn, principal: NamedDependency[Principal]) -> None:
        await service.end_session(state.identity, conn, principal)


class MeController(Controller):
    path = "/v1/me"
    tags = ["Identity"]
    guards = [guards.resident]

    @get("/", operation_id="GetMe", summary="The signed-in resident, personal ID masked")
    async def get_me(self, state: State, conn: Conn, principal: NamedDependency[Principal]) -> Account:
        return await service.me(state.identity, conn, principal)

    @get("/sessions", operation_id="ListSessions", summary="The resident's signed-in devices")
    async def sessions(self, conn: Conn, principal: NamedDependency[Principal]) -> SessionList:
        return SessionList(sessions=await service.list_sessions(conn, principal))

    @delete("/sessions/{session_id:str}", operation_id="RevokeSession", status_code=204,
            summary="Sign a device out")
    async def revoke(self, session_id: web.UUIDPath, state: State, conn: Conn,
                     principal: NamedDependency[Principal]) -> None:
        await service.end_session(state.identity, conn, principal, session_id)


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["Identity administration"]
    guards = ADMIN_GUARDS

    @post("/residents/lookup", operation_id="LookupResident", status_code=200,
          summary="Find a resident by personal ID number (sent in the body, never in a URL)")
    async def lookup(self, data: JSONBody[ResidentLookup], state: State, conn: Conn) -> ResidentRef:
        return await service.lookup_resident(state.identity, conn, data.personal_id)

    @get("/residents/{resident_id:str}/roles", operation_id="ListGrants", summary="A resident's role grants")
    async def grants(self, resident_id: web.UUIDPath, conn: Conn) -> GrantList:
        return GrantList(grants=await service.list_grants(conn, resident_id))

    @post("/roles", operation_id="GrantRole", summary="Grant a role (audited; granting again returns the grant)")
    async def grant(self, data: JSONBody[GrantRequest], state: State, conn: Conn,
                    principal: NamedDependency[Principal]) -> Response[Grant]:
        grant, created = await service.grant_role(
            state.identity, conn, actor=service.actor_of(principal),
            resident_id=_parse_uuid(data.resident_id, "resident_id"), request=data, request_id=current_request_id(),
        )
        return Response(grant, status_code=201 if created else 200)

    @delete("/roles/{grant_id:int}", operation_id="RevokeRole", status_code=200, summary="Revoke a role (audited)")
    async def revoke(self, grant_id: FromPath[int], conn: Conn, principal: NamedDependency[Principal]) -> Grant:
        return await service.revoke_role(conn, actor=service.actor_of(principal), grant_id=grant_id,
                                         request_id=current_request_id())


@get("/.well-known/jwks.json", operation_id="Jwks", tags=["Identity"], cache_control=None,
     summary="Public keys of the backend's access tokens, for offline checks")
async def jwks(state: State) -> Response[dict[str, Any]]:
    return Response(state.identity.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


# The form /oauth/token reads itself (every refusal counted against the caller's address, malformed ones too),
# as the document shows it.
CLIENT_CREDENTIALS_FORM = Schema(
    type=OpenAPIType.OBJECT, required=["grant_type", "client_assertion_type", "client_assertion"],
    properties={
        "grant_type": Schema(type=OpenAPIType.STRING, enum=["client_credentials"]),
        "client_assertion_type": Schema(type=OpenAPIType.STRING, enum=[service.CLIENT_ASSERTION_TYPE]),
        "client_assertion": Schema(type=OpenAPIType.STRING, max_length=8192,
                                   pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                                   description="a JWT signed with the client's registered key (RFC 7523): iss and "
                                               "sub the client id, aud this endpoint, exp, iat and a new jti"),
    })


@post("/oauth/token", operation_id="ClientToken", responses=SIGN_IN_ERRORS, tags=["Identity"], status_code=200,
      summary="OAuth client credentials with private_key_jwt, for validators, gates and facility systems",
      opt={"form": CLIENT_CREDENTIALS_FORM})
async def oauth_token(
    state: State, conn: Conn, data: URLEncodedBody[dict[str, Any]], request: Request
) -> ClientToken:
    form = {k: (v if isinstance(v, str) else v[0]) for k, v in data.items()}
    return await service.client_token(state.identity, conn, state.redis, form, client_ip=client_ip(request))


@get("/v1/units", operation_id="ListUnits", tags=["Identity"],
     summary="The city's organisational units (departments, wards, communes)")
async def units(state: State) -> UnitList:
    return UnitList(units=[
        UnitView(code=u.code, kind=u.kind, name={"vi": u.name_vi, "en": u.name_en}, parent_code=u.parent_code)
        for u in state.identity.units
    ])


route_handlers = [AuthController, MeController, AdminController, jwks, oauth_token, units]
dependencies = {"principal": Provide(guards.provide_principal, sync_to_thread=False)}
