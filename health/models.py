"""Bodies of the health endpoints (msgspec Structs) and the FHIR answer's schema for the OpenAPI document."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from app.web import HumanText, Token

FHIR_JSON = "application/fhir+json"


class FhirResource(msgspec.Struct, kw_only=True):
    """A FHIR R4 resource (application/fhir+json); its fields are FHIR's, named by `resourceType`."""

    resourceType: str  # noqa: N815 - FHIR's own name

FacilityCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")]
FacilityKind = Literal["hospital", "clinic", "health_station", "pharmacy", "laboratory", "other"]
UUIDText = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                                               r"[0-9a-fA-F]{12}$")]


class FacilityCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: FacilityCode
    name: Annotated[HumanText, msgspec.Meta(min_length=1, max_length=200)]
    kind: FacilityKind
    bhyt_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5}$", description="mã cơ sở KCB BHYT, 5 digits")]


class Facility(msgspec.Struct):
    code: str
    name: str
    kind: str
    bhyt_code: str


class FacilityList(msgspec.Struct):
    items: list[Facility]


class Clinician(msgspec.Struct):
    id: str
    name: str | None


class ClinicianList(msgspec.Struct):
    items: list[Clinician]


class ConsentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    facility: FacilityCode
    expires_at: dt.datetime
    clinician: UUIDText | None = None  # one clinician of the facility; without it, the whole facility
    starts_at: dt.datetime | None = None


class Consent(msgspec.Struct):
    id: int
    facility: str
    facility_name: str
    clinician: str | None
    clinician_name: str | None
    via: str
    starts_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    state: Literal["active", "pending", "expired", "revoked"]


class ConsentList(msgspec.Struct):
    items: list[Consent]


class ShareCodeCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    access_minutes: Annotated[int, msgspec.Meta(ge=5, le=527_040)] | None = None


class ShareCode(msgspec.Struct):
    code: str
    qr: str
    expires_at: dt.datetime
    access_minutes: int


class ShareCodeRedeem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[Token, msgspec.Meta(min_length=6, max_length=64)]


class ShareRedeemed(msgspec.Struct):
    patient: str
    consent: int
    expires_at: dt.datetime


class EmergencyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[HumanText, msgspec.Meta(min_length=10, max_length=500)]
    patient: UUIDText | None = None
    personal_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{12}$")] | None = None
    bhyt: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}[1-5][0-9]{12}$")] | None = None


class EmergencyAccess(msgspec.Struct):
    id: int
    patient: str
    expires_at: dt.datetime


class AccessEntry(msgspec.Struct):
    seq: int
    at: dt.datetime
    who: str
    clinician_name: str | None
    facility: str | None
    facility_name: str | None
    action: str
    purpose: str
    what: str
    reason: str | None


class AccessLog(msgspec.Struct):
    items: list[AccessEntry]
    intact: bool
    broken_at: int | None
    next_cursor: str | None
