"""Request and response bodies of the transit endpoints."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
B64 = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/_-]*={0,2}$", max_length=400,
                                  description="base64 (standard or URL-safe)")]
Note = Annotated[str, msgspec.Meta(max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]


class FareMedia(msgspec.Struct):
    fare_media_id: str
    fare_media_name: str
    fare_media_type: int


class RiderCategory(msgspec.Struct):
    rider_category_id: str
    rider_category_name: dict[str, str]
    is_default_fare_category: bool
    eligibility: str
    eligibility_url: str | None


class FareProduct(msgspec.Struct):
    fare_product_id: str
    code: int
    operator: str
    fare_product_name: dict[str, str]
    kind: str
    network: bool
    min_km: float | None
    max_km: float | None
    rider_category_id: str
    amount: int
    currency: str
    fare_media_id: str
    effective_from: dt.date
    effective_to: dt.date | None


class Route(msgspec.Struct):
    id: int
    operator: str
    short_name: str
    name: str
    mode: str
    length_km: float
    tap_off: bool


class Fares(msgspec.Struct):
    on: dt.date
    fare_media: list[FareMedia]
    rider_categories: list[RiderCategory]
    fare_products: list[FareProduct]
    routes: list[Route]


class Eligibility(msgspec.Struct):
    rider_category_id: str
    why: str
    valid_until: dt.date | None


class ApplicationView(msgspec.Struct):
    id: int
    rider_category_id: str
    operator: str
    status: str
    note: str | None
    valid_until: dt.date | None
    created_at: dt.datetime
    decided_at: dt.datetime | None
    card_id: int | None = None


class CardCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    holder_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100,
                                             pattern=r"^[^\x00-\x1f\x7f]*$")]
    birth_date: dt.date


class Card(msgspec.Struct):
    id: int
    holder_name: str
    birth_date: dt.date
    created_at: dt.datetime


class CardList(msgspec.Struct):
    cards: list[Card]


class ApplicationList(msgspec.Struct):
    applications: list[ApplicationView]


class Decision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["approve", "refuse"]
    valid_until: dt.date | None = None
    note: Note | None = None


class DeviceCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # the compressed P-256 point, 33 bytes: 44 base64 characters (standard or URL-safe)
    public_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/_-]{44}$",
                                            description="a compressed P-256 point, 33 bytes, base64")]


class Device(msgspec.Struct):
    id: int
    created_at: dt.datetime


class Purchase(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    product_id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,60}$")]
    route_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    starts_on: dt.date | None = None  # a renewal starts when the current pass ends
    card_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None  # a family member's card


class TicketView(msgspec.Struct):
    id: int
    operator: str
    product_id: str
    kind: str
    route_id: int | None
    rider_category_id: str
    amount_vnd: int
    valid_from: dt.datetime
    valid_until: dt.datetime
    status: str
    charge_id: int | None
    paper: bool
    card_id: int | None = None


class TicketList(msgspec.Struct):
    tickets: list[TicketView]


class Credential(msgspec.Struct):
    """Level 1 for this phone: the app appends a signed timestamp every 15-30 s (transit/credential.py)."""

    ticket_id: int
    level1: str  # base64
    key_id: int
    refresh_seconds: int


class PaperSale(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    product_id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,60}$")]
    route_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None


class PaperTicket(msgspec.Struct):
    ticket: TicketView
    code: str  # base64 of the QR's bytes
    png_url: str
    svg_url: str


class CheckRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: B64
    route_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    vehicle: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,40}$")] = "gate"


class CheckResult(msgspec.Struct, omit_defaults=True):
    accepted: bool
    reason: str | None = None
    ticket_id: int | None = None
    rider_category: int | None = None


class IssuerKey(msgspec.Struct):
    key_id: int
    public_key: str  # base64 compressed point
    signs: bool
    verify_until: dt.datetime | None


class SyncView(msgspec.Struct):
    operator: str
    operator_code: int
    at: dt.datetime
    keys: list[IssuerKey]
    revoked_tickets: list[int]
    revoked_devices: list[str]  # base64 compressed points
    fare_products: list[FareProduct]
    routes: list[Route]
    freshness_seconds: int
    clock_skew_seconds: int


class Tap(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tap_id: uuid.UUID
    ticket_id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    route_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    vehicle: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,40}$")]
    direction: Literal["on", "off"] = "on"
    at: dt.datetime
    accepted: bool
    reason: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,40}$")] | None = None
    fingerprint: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]


class TapBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    taps: Annotated[list[Tap], msgspec.Meta(min_length=1, max_length=1000)]


class TapReceipt(msgspec.Struct):
    received: int
    stored: int
    duplicates: int
    flagged: int


class Flag(msgspec.Struct):
    id: int
    ticket_id: int
    reason: str
    first_tap: uuid.UUID
    second_tap: uuid.UUID
    created_at: dt.datetime


class FlagList(msgspec.Struct):
    flags: list[Flag]


class RideRow(msgspec.Struct):
    route_id: int
    product_id: str
    rides: int


class RevenueRow(msgspec.Struct):
    product_id: str
    tickets: int
    revenue_vnd: int


class Report(msgspec.Struct):
    operator: str
    date_from: dt.date
    date_to: dt.date
    rides: list[RideRow]
    revenue: list[RevenueRow]
    flags: int


class KeyRotation(msgspec.Struct):
    key_id: int
    retired: list[int]
