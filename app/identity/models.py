"""Request and response bodies of the identity endpoints, and the authenticated principal."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from app.identity.personal_id import PROVINCES

# A role declared by the kernel or a module (checked against the declarations when granted).
RoleName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,30}$")]
Platform = Literal["android", "ios", "web", "other"]
DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: a resident (through a session) or a machine client."""

    sub: str
    kind: Literal["resident", "client"]
    roles: tuple[str, ...] = ()  # "admin", "staff:phuong-hoan-kiem", "transit_operator:hanoibus"
    level: int = 0
    auth_time: int = 0
    session_id: str | None = None
    client_id: str | None = None
    jti: str = ""
    exp: int = 0

    def scopes_of(self, role: str) -> list[str]:
        """Scopes held for a role ("" for an unscoped role such as admin)."""
        found = []
        for entry in self.roles:
            name, _, scope = entry.partition(":")
            if name == role:
                found.append(scope)
        return found

    def has_role(self, role: str) -> bool:
        return bool(self.scopes_of(role))


class Profile(msgspec.Struct, frozen=True):
    """What other modules may know of a resident from VNeID: no name, no personal ID number."""

    birth_date: dt.date | None
    sex: Literal["male", "female"] | None
    identity_level: int | None


class LoginStart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    device_name: DeviceName
    platform: Platform
    redirect_uri: str | None = None


class LoginStarted(msgspec.Struct):
    authorization_url: str
    state: str
    expires_in: int


class LoginComplete(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    state: Annotated[str, msgspec.Meta(min_length=16, max_length=128)]
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class RefreshRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)]


class TokenPair(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str


class ClientToken(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class RoleView(msgspec.Struct):
    role: str
    scope: str


class Account(msgspec.Struct):
    """The signed-in resident's own account (GET /v1/me)."""

    id: str
    personal_id: str  # masked
    full_name: str | None
    birth_date: dt.date | None
    sex: str | None
    identity_level: int | None
    auth_time: dt.datetime | None
    roles: list[RoleView]
    session_id: str | None


class SessionView(msgspec.Struct):
    id: str
    device_name: str
    platform: str
    identity_level: int
    created_at: dt.datetime
    last_used_at: dt.datetime
    current: bool


class SessionList(msgspec.Struct):
    sessions: list[SessionView]


# A personal ID number as the document states it: a province code of personal_id.PROVINCES, then nine digits.
PersonalIdNumber = Annotated[str, msgspec.Meta(
    pattern=r"^\s*(" + "|".join(sorted(PROVINCES)) + r")[0-9]{9}\s*$",
    description="the 12-digit personal ID number (CCCD): a province code and nine digits")]


class ResidentLookup(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    personal_id: PersonalIdNumber


class ResidentRef(msgspec.Struct):
    resident_id: str
    full_name: str | None
    personal_id: str  # masked


class GrantRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    resident_id: Annotated[str, msgspec.Meta(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description="a UUID")]
    role: RoleName
    scope: Annotated[str, msgspec.Meta(max_length=64)] = ""


class Grant(msgspec.Struct):
    id: int
    resident_id: str
    role: str
    scope: str
    granted_by: str
    granted_at: dt.datetime
    revoked_at: dt.datetime | None = None


class GrantList(msgspec.Struct):
    grants: list[Grant]


class UnitView(msgspec.Struct):
    code: str
    kind: str
    name: dict[str, str]
    parent_code: str | None


class UnitList(msgspec.Struct):
    units: list[UnitView]
