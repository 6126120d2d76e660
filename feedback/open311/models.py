"""Bodies of the Open311 client administration endpoints, and a parsed GET requests query."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

CLIENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,62}$"
MAX_ROWS = 1000  # the most a GET requests answers at once (the spec's default cap)


class ClientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # a slug: reports it sends carry source "open311:<name>"
    name: Annotated[str, msgspec.Meta(pattern=CLIENT_NAME_PATTERN)]


class ClientKey(msgspec.Struct):
    name: str
    api_key: str  # shown once; only its SHA-256 is kept


class ClientRevoked(msgspec.Struct):
    name: str
    revoked: int  # how many active keys were revoked


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """GET requests: public reports by id, or by category, time window and Open311 status."""

    ids: list[int] | None = None  # overrides every other filter
    codes: list[str] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    open: bool | None = None  # Open311's status: open (True), closed (False), either (None)
    page: int = 1
    page_size: int = MAX_ROWS


# ---- Open311's own shapes: JSON as below, XML the same tree (see api.render) ------------------------------------


class Endpoint(msgspec.Struct):
    specification: str
    url: str
    changeset: str
    type: str  # production or test
    formats: list[str]


class Discovery(msgspec.Struct):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[Endpoint]


class Service(msgspec.Struct):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str  # realtime, batch or blackbox
    keywords: str
    group: str


class AttributeValue(msgspec.Struct):
    key: str
    name: str


class Attribute(msgspec.Struct):
    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str
    order: int
    description: str
    values: list[AttributeValue]


class ServiceDefinition(msgspec.Struct):
    service_code: str
    attributes: list[Attribute]


class ServiceRequest(msgspec.Struct):
    service_request_id: int
    status: str  # open or closed
    status_notes: str
    service_name: str
    service_code: str
    description: str
    agency_responsible: str
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float
    long: float
    media_url: str | None


class RequestCreated(msgspec.Struct):
    service_request_id: int
    service_notice: str
    account_id: str | None


class Open311Error(msgspec.Struct):
    code: int
    description: str
