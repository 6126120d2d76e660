"""Parking's request and response bodies."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

Vehicle = Literal["motorbike", "car", "large"]
Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{1,62}$", description="a lot's code")]
Text = Annotated[str, msgspec.Meta(max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f\x7f]*$")]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60)]
Vnd = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class LotCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: Literal["lot", "street"]
    operator: Code
    latitude: float
    longitude: float
    address: Text = ""
    capacity_motorbike: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    capacity_car: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    capacity_large: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    opens_at: dt.time | None = None
    closes_at: dt.time | None = None


Capacity = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class TariffAssign(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Price the lot's `vehicle` with the rates of tariff `tariff_id` (the city's or another lot's) from
    `effective_from` on: a new tariff row of the lot; earlier rows and past sessions are untouched."""

    vehicle: Vehicle
    tariff_id: int
    effective_from: dt.datetime


class LotEdit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields given change. `opens_at` and `closes_at` null (both) make the lot always open."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    address: Text | msgspec.UnsetType = msgspec.UNSET
    capacity_motorbike: Capacity | msgspec.UnsetType = msgspec.UNSET
    capacity_car: Capacity | msgspec.UnsetType = msgspec.UNSET
    capacity_large: Capacity | msgspec.UnsetType = msgspec.UNSET
    opens_at: dt.time | None | msgspec.UnsetType = msgspec.UNSET
    closes_at: dt.time | None | msgspec.UnsetType = msgspec.UNSET
    tariffs: Annotated[list[TariffAssign], msgspec.Meta(max_length=3)] | msgspec.UnsetType = msgspec.UNSET


class LotChange(msgspec.Struct, kw_only=True):
    id: int
    changed_by: str
    changed_at: dt.datetime
    changes: dict[str, list]  # field -> [before, after]


class LotChangeList(msgspec.Struct):
    items: list[LotChange]


class Space(msgspec.Struct):
    vehicle: Vehicle
    capacity: int
    free: int


class Price(msgspec.Struct, kw_only=True):
    vehicle: Vehicle
    mode: Literal["turn", "hourly"]
    effective_from: dt.datetime
    day_vnd: int | None = None
    night_vnd: int | None = None
    day_night_vnd: int | None = None
    hour_rates_vnd: list[int] | None = None
    month_vnd: int | None = None
    day_starts: dt.time | None = None
    day_ends: dt.time | None = None


class Lot(msgspec.Struct, kw_only=True):
    code: str
    name: str
    kind: str
    operator: str
    address: str
    latitude: float
    longitude: float
    opens_at: dt.time | None
    closes_at: dt.time | None
    spaces: list[Space]
    prices: list[Price] = []
    distance_m: int | None = None
    quote_vnd: int | None = None


class LotList(msgspec.Struct):
    items: list[Lot]


class TariffCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    vehicle: Vehicle
    effective_from: dt.datetime
    mode: Literal["turn", "hourly"]
    lot: Code | None = None
    day_vnd: Vnd = 0
    night_vnd: Vnd = 0
    day_night_vnd: Vnd = 0
    hour_rates_vnd: Annotated[list[Vnd], msgspec.Meta(max_length=48)] = []
    month_vnd: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] | None = None
    day_starts: dt.time = dt.time(6)
    day_ends: dt.time = dt.time(18)


class Tariff(msgspec.Struct, kw_only=True):
    id: int
    lot: str | None
    price: Price


class TariffList(msgspec.Struct):
    items: list[Tariff]


class GateEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One of plate, rfid_tag or pass_code names the vehicle; device_time is the gate's clock."""

    lot: Code
    device_time: dt.datetime
    plate: Short | None = None
    rfid_tag: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{8,32}$")] | None = None
    pass_code: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{16,64}$")] | None = None
    vehicle: Vehicle | None = None
    photo_base64: Annotated[str, msgspec.Meta(max_length=700_000)] | None = None


class Session(msgspec.Struct, kw_only=True):
    id: int
    lot: str
    plate: str
    vehicle: str
    via: str
    started_at: dt.datetime
    paid_until: dt.datetime | None
    ended_at: dt.datetime | None
    fee_vnd: int | None
    charged_vnd: int
    debt_vnd: int = 0


class Overstay(msgspec.Struct, kw_only=True):
    session: Session
    days: int
    still_parked: bool


class OverstayList(msgspec.Struct):
    max_days: int
    items: list[Overstay]


class CheckOut(msgspec.Struct, kw_only=True):
    session: Session
    fee_vnd: int
    paid: bool
    debt_vnd: int
    transaction_id: int | None
    gate: Literal["open"] = "open"
    message: str
    overstay: bool = False  # longer than IHANOI_PARKING_GATE_MAX_STAY_DAYS: flagged for the operator's staff


class StreetStart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lot: Code
    plate: Short
    vehicle: Vehicle
    minutes: Minutes


class Extend(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    minutes: Minutes


class VehicleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plate: Short
    vehicle: Vehicle
    rfid_tag: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{8,32}$")] | None = None


class SavedVehicle(msgspec.Struct, kw_only=True):
    plate: str
    vehicle: str
    rfid_tag: str | None


class VehicleList(msgspec.Struct):
    items: list[SavedVehicle]


class PassCodeCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plate: Short


class PassCode(msgspec.Struct, kw_only=True):
    code: str
    plate: str
    expires_at: dt.datetime


class PermitCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lot: Code
    plate: Short
    vehicle: Vehicle
    month: Annotated[str, msgspec.Meta(pattern=r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])$", description="YYYY-MM")]


class Permit(msgspec.Struct, kw_only=True):
    id: int
    lot: str
    plate: str
    vehicle: str
    month: str
    amount_vnd: int
    transaction_id: int


class Lookup(msgspec.Struct, kw_only=True):
    plate: str
    valid: bool
    reason: Literal["session", "permit", "none", "expired"]
    session: Session | None = None
    permit: Permit | None = None
    open_debts_vnd: int = 0


class DayRow(msgspec.Struct, kw_only=True):
    lot: str
    day: dt.date
    sessions: int
    fees_vnd: int
    charged_vnd: int
    debts_open_vnd: int
    ledger_collected_vnd: int


class Gap(msgspec.Struct, kw_only=True):
    kind: Literal["fee-not-accounted", "ledger-mismatch", "not-remitted"]
    detail: str
    lot: str | None = None
    day: dt.date | None = None
    session_id: int | None = None
    amount_vnd: int


class Reconciliation(msgspec.Struct, kw_only=True):
    operator: str
    date_from: dt.date
    date_to: dt.date
    rows: list[DayRow]
    outstanding_vnd: int
    last_remitted_at: dt.datetime | None
    gaps: list[Gap]


class Figures(msgspec.Struct, kw_only=True):
    lot: str
    days: int
    since: dt.datetime
    sessions: int
    fees_vnd: int
    collected_vnd: int
    open_debts: int
    open_debts_vnd: int
