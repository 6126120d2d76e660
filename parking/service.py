"""The rules of parking: who may do what at which lot, what a stay costs, and what each step writes.

Every step runs in the caller's transaction and raises before it has written anything it would have to
undo: a refused check-in or check-out leaves no row behind. Money moves only through payments; an empty
wallet at check-out is caught in a savepoint and becomes a recorded debt, and the gate opens anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import secrets
import unicodedata
import uuid
from typing import Any

import asyncpg
import msgspec

import payments
from app import images, web
from app.errors import Conflict, DomainError, FieldError, Forbidden, InvalidInput, NotFound, Unprocessable
from app.identity import Principal
from notifications import notify
from parking import plates, store, tariff
from parking.config import ParkingSettings
from parking.models import (
    CheckOut,
    DayRow,
    Extend,
    Figures,
    Gap,
    GateEvent,
    Lookup,
    Lot,
    LotChange,
    LotChangeList,
    LotCreate,
    LotEdit,
    Overstay,
    OverstayList,
    PassCode,
    PassCodeCreate,
    Permit,
    PermitCreate,
    Price,
    Reconciliation,
    SavedVehicle,
    Session,
    Space,
    StreetStart,
    Tariff,
    TariffCreate,
    VehicleCreate,
)

VEHICLES = ("motorbike", "car", "large")
PHOTO_MAX_BYTES = 512 * 1024
FIGURES_CACHE_SECONDS = 60


class AlreadyParked(DomainError):
    slug = "already-parked"


class NotParked(DomainError):
    slug = "not-parked"


class ClockSkew(DomainError):
    slug = "device-clock-skew"


class StayTooLong(DomainError):
    slug = "stay-too-long"


class LotFull(DomainError):
    slug = "lot-full"


class LotClosed(DomainError):
    slug = "lot-closed"


class NoTariff(DomainError):
    slug = "no-tariff"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _field(error: type[DomainError], field: str, message: str, **extra: Any) -> DomainError:
    return error(message, errors=[FieldError(field=field, message=message, source="body")], **extra)


def rates_of(row) -> tariff.Rates:
    return tariff.Rates(mode=row["mode"], day_vnd=row["day_vnd"], night_vnd=row["night_vnd"],
                        day_night_vnd=row["day_night_vnd"], hour_rates=tuple(row["hour_rates"] or ()),
                        day_starts=row["day_starts"], day_ends=row["day_ends"])


def price_of(row) -> Price:
    turn = row["mode"] == "turn"
    return Price(vehicle=row["vehicle"], mode=row["mode"], effective_from=web.local(row["effective_from"]),
                 day_vnd=row["day_vnd"] if turn else None, night_vnd=row["night_vnd"] if turn else None,
                 day_night_vnd=row["day_night_vnd"] if turn else None,
                 hour_rates_vnd=None if turn else list(row["hour_rates"]), month_vnd=row["month_vnd"],
                 day_starts=row["day_starts"] if turn else None, day_ends=row["day_ends"] if turn else None)


def session_view(row, lot_code: str | None = None, debt: int = 0) -> Session:
    return Session(id=row["id"], lot=lot_code or row["lot_code"], plate=row["plate"], vehicle=row["vehicle"],
                   via=row["via"], started_at=web.local(row["started_at"]),
                   paid_until=web.local(row["paid_until"]) if row["paid_until"] else None,
                   ended_at=web.local(row["ended_at"]) if row["ended_at"] else None, fee_vnd=row["fee_vnd"],
                   charged_vnd=row["charged_vnd"], debt_vnd=debt)


def _vnd_vi(amount: int) -> str:
    return f"{amount:,}".replace(",", ".")


def _money(amount: int) -> dict[str, str]:
    return {"amount_vi": _vnd_vi(amount), "amount_en": f"{amount:,}"}


# ---- who may act at a lot --------------------------------------------------------------------------------------


def may_manage(principal: Principal, operator: str) -> bool:
    return principal.has_role("parking_admin") or operator in principal.scopes_of("parking_operator")


def _check_gate(principal: Principal, lot) -> None:
    if lot["operator_slug"] not in principal.scopes_of("parking_gate"):
        raise Forbidden(f"this needs the parking_gate role for {lot['operator_slug']}")


async def _lot(conn: asyncpg.Connection, code: str, field: str = "lot"):
    row = await store.lot(conn, code)
    if row is None:
        raise NotFound(f"no parking lot {code!r}", errors=[FieldError(field=field, message="no such lot")])
    return row


# ---- lots and tariffs ------------------------------------------------------------------------------------------


async def lot_view(conn: asyncpg.Connection, row, at: dt.datetime | None = None) -> Lot:
    taken = await store.occupied(conn, row["id"])
    spaces = [Space(vehicle=v, capacity=row[f"capacity_{v}"], free=max(0, row[f"capacity_{v}"] - taken.get(v, 0)))
              for v in VEHICLES if row[f"capacity_{v}"]]
    prices = [price_of(p) for p in await store.prices_in_force(conn, row["id"], at or now())]
    return Lot(code=row["code"], name=row["name"], kind=row["kind"], operator=row["operator_slug"],
               address=row["address"], latitude=row["latitude"], longitude=row["longitude"], opens_at=row["opens_at"],
               closes_at=row["closes_at"], spaces=spaces, prices=prices)


async def create_lot(conn: asyncpg.Connection, principal: Principal, body: LotCreate) -> Lot:
    if not may_manage(principal, body.operator):
        raise Forbidden(f"this needs the parking_admin role or parking_operator for {body.operator}")
    if (body.opens_at is None) != (body.closes_at is None):
        raise InvalidInput.field("closes_at", "give both opening and closing times, or neither")
    if not (20.5 <= body.latitude <= 21.5 and 105.2 <= body.longitude <= 106.1):
        raise InvalidInput.field("latitude", "a place in Hanoi")
    if not any((body.capacity_motorbike, body.capacity_car, body.capacity_large)):
        raise InvalidInput.field("capacity_motorbike", "a lot has room for at least one vehicle")
    operator = await conn.fetchval("SELECT kind FROM payment_operator WHERE slug = $1", body.operator)
    if operator != "parking":
        raise InvalidInput.field("operator", "a parking operator of payments")
    values = msgspec.structs.asdict(body)
    values["name"] = web_text(body.name)
    values["address"] = web_text(body.address)
    if await store.insert_lot(conn, **values) is None:
        raise Conflict(f"a lot {body.code!r} exists")
    return await lot_view(conn, await store.lot(conn, body.code))


def web_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


async def get_lot(conn: asyncpg.Connection, code: str) -> Lot:
    row = await store.lot(conn, code)
    if row is None:
        raise NotFound(f"no parking lot {code!r}")
    return await lot_view(conn, row)


async def create_tariff(conn: asyncpg.Connection, principal: Principal, body: TariffCreate) -> Tariff:
    """A new price from `effective_from` on; never earlier than now, so no past session is repriced."""
    if not principal.has_role("parking_admin"):
        raise Forbidden("this needs the parking_admin role")
    if body.effective_from.tzinfo is None:
        raise InvalidInput.field("effective_from", "a time with its offset, e.g. 2027-01-01T00:00:00+07:00")
    if body.effective_from < now() - dt.timedelta(minutes=1):
        raise InvalidInput.field("effective_from", "a tariff takes effect from now on, never in the past")
    if body.mode == "hourly" and (not body.hour_rates_vnd or not all(body.hour_rates_vnd)):
        raise InvalidInput.field("hour_rates_vnd", "an hourly tariff names a positive rate for at least one hour")
    if body.mode == "turn" and not (body.day_vnd and body.night_vnd and body.day_night_vnd):
        raise InvalidInput.field("day_vnd", "a turn tariff names its day, night and day-and-night fees")
    if body.day_starts >= body.day_ends:
        raise InvalidInput.field("day_ends", "the day band ends after it starts")
    lot_id = (await _lot(conn, body.lot))["id"] if body.lot else None
    row = await store.insert_tariff(conn, lot_id, body)
    if row is None:
        raise Conflict("a tariff for this lot and vehicle takes effect at that moment already")
    return Tariff(id=row["id"], lot=body.lot, price=price_of(row))


async def list_tariffs(conn: asyncpg.Connection, lot: str | None) -> list[Tariff]:
    lot_id = (await _lot(conn, lot))["id"] if lot else None
    return [Tariff(id=r["id"], lot=r["lot_code"], price=price_of(r)) for r in await store.tariffs(conn, lot_id)]


def _hhmm(value: dt.time | None) -> str | None:
    return None if value is None else f"{value:%H:%M}"


async def edit_lot(conn: asyncpg.Connection, principal: Principal, code: str, body: LotEdit) -> Lot:
    """Name, address, capacity and hours by the lot's operator or the city; tariffs assigned by the city only.
    Every change is audited (who, when, before and after); sessions are never rewritten: a parked vehicle keeps
    its tariff, and a capacity below the vehicles inside only shows no free space until they leave."""
    lot = await store.lock_lot(conn, code)
    if lot is None:
        raise NotFound(f"no parking lot {code!r}")
    if not may_manage(principal, lot["operator_slug"]):
        raise Forbidden(f"this needs the parking_admin role or parking_operator for {lot['operator_slug']}")
    given = {f: v for f, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    tariffs = given.pop("tariffs", [])
    if tariffs and not principal.has_role("parking_admin"):
        raise _field(Forbidden, "tariffs", "the city (parking_admin) sets prices; an operator cannot")
    if "name" in given:
        given["name"] = web_text(given["name"])
    if "address" in given:
        given["address"] = web_text(given["address"])
    if ("opens_at" in given) != ("closes_at" in given) or \
            ("opens_at" in given and (given["opens_at"] is None) != (given["closes_at"] is None)):
        raise InvalidInput.field("closes_at", "give both opening and closing times (or both null: always open)")
    if "opens_at" in given and given["opens_at"] is not None and given["opens_at"] == given["closes_at"]:
        raise InvalidInput.field("closes_at", "a lot closes at another time than it opens")
    after = {v: given.get(f"capacity_{v}", lot[f"capacity_{v}"]) for v in VEHICLES}
    if not any(after.values()):
        raise InvalidInput.field("capacity_motorbike", "a lot has room for at least one vehicle")
    changes: dict[str, list] = {}
    for field, value in given.items():
        before = lot[field]
        if value != before:
            changes[field] = [_hhmm(before), _hhmm(value)] if field in ("opens_at", "closes_at") else [before, value]
    values = {f: given[f] for f in changes}
    if values:
        await store.update_lot(conn, lot["id"], values)
    seen = set()
    for n, assign in enumerate(tariffs):
        where = f"tariffs[{n}]"
        if assign.vehicle in seen:
            raise InvalidInput.field(f"{where}.vehicle", "one tariff per vehicle type in one edit")
        seen.add(assign.vehicle)
        if assign.effective_from.tzinfo is None:
            raise InvalidInput.field(f"{where}.effective_from", "a time with its offset, e.g. 2027-01-01T00:00+07:00")
        if assign.effective_from < now() - dt.timedelta(minutes=1):
            raise InvalidInput.field(f"{where}.effective_from", "a tariff takes effect from now on, never in the past")
        source = await store.tariff(conn, assign.tariff_id)
        if source is None or source["vehicle"] != assign.vehicle:
            raise InvalidInput.field(f"{where}.tariff_id", f"no {assign.vehicle} tariff {assign.tariff_id}")
        row = await store.copy_tariff(conn, assign.tariff_id, lot["id"], assign.effective_from)
        if row is None:
            raise Conflict(f"this lot has a {assign.vehicle} tariff taking effect at that moment already")
        changes[f"tariff_{assign.vehicle}"] = [None, {"tariff_id": row["id"], "copied_from": assign.tariff_id,
                                                      "effective_from": web.local(row["effective_from"]).isoformat()}]
    if changes:
        await store.insert_lot_change(conn, lot["id"], principal.sub, changes)
    return await lot_view(conn, await store.lot(conn, code))


async def lot_changes(conn: asyncpg.Connection, principal: Principal, code: str, limit: int) -> LotChangeList:
    lot = await _lot(conn, code)
    if not may_manage(principal, lot["operator_slug"]):
        raise NotFound(f"no parking lot {code!r}")
    rows = await store.lot_changes(conn, lot["id"], limit)
    return LotChangeList(items=[LotChange(id=r["id"], changed_by=r["changed_by"], changed_at=web.local(r["changed_at"]),
                                          changes=r["changes"]) for r in rows])


# ---- near me ---------------------------------------------------------------------------------------------------


async def near(conn: asyncpg.Connection, *, lat: float, lng: float, radius_m: int, vehicle: str, minutes: int,
               limit: int) -> list[Lot]:
    """One statement (GiST by distance, the occupancy counter, the tariff in force); the price and the quote are
    worked out once per tariff, as most lots follow the city's default."""
    at = now()
    until = at + dt.timedelta(minutes=minutes)
    priced: dict[int, tuple[list[Price], int]] = {}
    items = []
    for r in await store.near(conn, lat, lng, float(radius_m), vehicle, at, limit):
        capacity = r[f"capacity_{vehicle}"]
        tariff_id = r["tariff_id"]
        if tariff_id is None:
            prices, quote = [], None
        elif tariff_id in priced:
            prices, quote = priced[tariff_id]
        else:
            prices, quote = priced[tariff_id] = [price_of(r)], tariff.fee(rates_of(r), at, until)
        items.append(Lot(code=r["code"], name=r["name"], kind=r["kind"], operator=r["operator_slug"],
                         address=r["address"], latitude=r["latitude"], longitude=r["longitude"],
                         opens_at=r["opens_at"], closes_at=r["closes_at"],
                         spaces=[Space(vehicle=vehicle, capacity=capacity, free=max(0, capacity - r["occupied"]))],
                         prices=prices, distance_m=round(r["distance"]), quote_vnd=quote))
    return items


# ---- gates -----------------------------------------------------------------------------------------------------


def _check_clock(body: GateEvent, own: ParkingSettings, at: dt.datetime) -> None:
    if body.device_time.tzinfo is None:
        raise InvalidInput.field("device_time", "a time with its offset, e.g. 2026-11-30T08:00:00+07:00")
    skew = abs((body.device_time - at).total_seconds())
    if skew > own.clock_tolerance_seconds:
        raise _field(ClockSkew, "device_time", f"the device clock is {int(skew)} s from the server's; at most "
                     f"{own.clock_tolerance_seconds} s is accepted: set the device's time", skew_seconds=int(skew))


async def _photo(body: GateEvent) -> images.ProcessedPhoto | None:
    """The gate's evidence photo, cleaned by app.images (pixels only: no EXIF, GPS or device details)."""
    if body.photo_base64 is None:
        return None
    try:
        data = base64.b64decode(body.photo_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput.field("photo_base64", "a base64-encoded JPEG or PNG") from None
    return await asyncio.to_thread(images.process_photo, data, max_bytes=PHOTO_MAX_BYTES, field="photo_base64")


Identified = tuple[str, str, uuid.UUID | None, str | None]


def _given(body: GateEvent) -> str:
    given = [name for name in ("plate", "rfid_tag", "pass_code") if getattr(body, name) is not None]
    if len(given) != 1:
        raise Unprocessable.field("plate", "give exactly one of plate, rfid_tag or pass_code")
    return given[0]


async def _identify(conn: asyncpg.Connection, body: GateEvent, at: dt.datetime) -> Identified:
    """(plate, via, resident, saved vehicle type) from exactly one of plate, RFID tag or the app's pass code."""
    given = _given(body)
    if given == "rfid_tag":
        row = await store.vehicle_by_tag(conn, body.rfid_tag.upper())
        if row is None:
            raise _field(NotFound, "rfid_tag", "no vehicle carries this tag")
        return row["plate"], "rfid", row["resident_id"], row["vehicle"]
    if given == "pass_code":
        row = await store.use_pass_code(conn, body.pass_code, at)
        if row is None:
            raise InvalidInput.field("pass_code", "this code is unknown, used or expired: show a new one")
        saved = await conn.fetchrow("SELECT vehicle FROM parking_vehicle WHERE resident_id = $1 AND plate = $2",
                                    row["resident_id"], row["plate"])
        return row["plate"], "qr", row["resident_id"], saved["vehicle"] if saved else None
    plate = plates.normalise(body.plate)
    owner = await store.owner_of(conn, plate)
    return plate, "plate", owner["resident_id"] if owner else None, owner["vehicle"] if owner else None


def _open_at(lot, at: dt.datetime) -> bool:
    if lot["opens_at"] is None:
        return True
    local = at.astimezone(web.CITY_TZ).time()
    opens, closes = lot["opens_at"], lot["closes_at"]
    return opens <= local < closes if opens < closes else (local >= opens or local < closes)


def _no_lot(code: str) -> NotFound:
    return NotFound(f"no parking lot {code!r}", errors=[FieldError(field="lot", message="no such lot")])


async def check_in(conn: asyncpg.Connection, principal: Principal, body: GateEvent, own: ParkingSettings) -> Session:
    """Plate path in three statements: the lot, owner and tariff (one read), the session's INSERT, the counter's + 1
    (last: the lot's counter row stays locked only until the commit)."""
    at = now()
    _check_clock(body, own, at)
    if _given(body) == "plate":
        plate, via, resident, saved = plates.normalise(body.plate), "plate", None, None
    else:
        lot = await store.lot(conn, body.lot)
        if lot is None:
            raise _no_lot(body.lot)
        _check_gate(principal, lot)  # before a pass code is used up
        plate, via, resident, saved = await _identify(conn, body, at)
    lot = await store.check_in_context(conn, body.lot, plate, body.vehicle or saved, at)
    if lot is None:
        raise _no_lot(body.lot)
    _check_gate(principal, lot)
    if lot["kind"] != "lot":
        raise InvalidInput.field("lot", "on-street zones have no gate: residents start a session in the app")
    if via == "plate":
        resident, saved = lot["owner_id"], lot["owner_vehicle"]
    vehicle = body.vehicle or saved
    if vehicle is None:
        raise InvalidInput.field("vehicle", "say which kind of vehicle: motorbike, car or large")
    if not _open_at(lot, at):
        raise LotClosed(f"{lot['name']} opens at {lot['opens_at']:%H:%M}")
    capacity = lot[f"capacity_{vehicle}"]
    if capacity <= 0:
        raise LotFull(f"no space for a {vehicle} here", vehicle=vehicle, capacity=capacity)
    if lot["tariff_id"] is None:
        raise NoTariff(f"no tariff for a {vehicle} at this lot")
    photo = await _photo(body)
    values = dict(lot_id=lot["id"], plate=plate, vehicle=vehicle, via=via, resident_id=resident,
                  tariff_id=lot["tariff_id"], started_at=at, device=principal.client_id or principal.sub)
    row = await store.insert_session(conn, **values)
    if row is None:  # parked already, or an on-street session of this plate ran out and was never closed
        await store.close_expired_street(conn, plate, at)
        row = await store.insert_session(conn, **values)
    if row is None:
        parked = await store.open_session(conn, plate)
        raise _field(AlreadyParked, "plate", f"{plate} is already parked at {parked['lot_code'] if parked else 'a lot'}"
                     " and has not checked out", session_id=parked["id"] if parked else None)
    if photo is not None:
        await store.insert_photo(conn, row["id"], "in", photo)
    if await store.count_in(conn, lot["id"], vehicle, capacity) is None:
        raise LotFull(f"no free space for a {vehicle}", vehicle=vehicle, capacity=capacity)  # the INSERT rolls back
    return session_view(row, lot["code"])


async def _charge_or_debt(conn: asyncpg.Connection, session, operator: str, lot_code: str, amount: int,
                          key: str) -> tuple[int | None, int]:
    """(transaction id, debt) for `amount` of a session: charged when the wallet holds it, else recorded as owed.
    No savepoint: payments.charge raises InsufficientFunds and WalletNotFound before it writes anything."""
    if amount <= 0:
        return None, 0
    if session["resident_id"] is not None:
        try:
            posted = await payments.charge(conn, session["resident_id"], operator, amount, lot_code, key)
        except (payments.InsufficientFunds, payments.WalletNotFound):
            pass
        else:
            return posted.transaction_id, 0
    await store.insert_debt(conn, session["id"], session["resident_id"], session["plate"], amount)
    return None, amount


async def check_out(conn: asyncpg.Connection, principal: Principal, body: GateEvent, own: ParkingSettings) -> CheckOut:
    """Plate path: one read (lot, open session, tariff, permit), the session's UPDATE (its lock), the charge through
    payments (or the debt), the receipt, then one statement linking the charge and freeing the space."""
    at = now()
    _check_clock(body, own, at)
    month = at.astimezone(web.CITY_TZ).date().replace(day=1)
    if _given(body) == "plate":
        plate = plates.normalise(body.plate)
    else:
        lot = await store.lot(conn, body.lot)
        if lot is None:
            raise _no_lot(body.lot)
        _check_gate(principal, lot)
        plate = (await _identify(conn, body, at))[0]
    found = await store.check_out_context(conn, body.lot, plate, month)
    if found is None:
        raise _no_lot(body.lot)
    _check_gate(principal, found)
    if found["session_id"] is None or found["session_lot_id"] != found["id"] or found["via"] == "app":
        raise _field(NotParked, "plate", f"{plate} has not checked in at {found['name']}")
    photo = await _photo(body)
    stay = at - found["started_at"]
    overstay = stay > dt.timedelta(days=own.gate_max_stay_days)
    fee = 0 if found["permit"] else tariff.fee(rates_of(found), found["started_at"], at)
    ended = await store.end_session(conn, found["session_id"], at, fee, principal.client_id or principal.sub,
                                    overstay)
    if ended is None:  # another gate checked it out a moment ago
        raise _field(NotParked, "plate", f"{plate} has already checked out of {found['name']}")
    if photo is not None:
        await store.insert_photo(conn, ended["id"], "out", photo)
    transaction_id, debt = await _charge_or_debt(conn, ended, found["operator_slug"], found["code"], fee,
                                                 f"parking:session:{ended['id']}")
    if ended["resident_id"] is not None and fee:
        data = {"lot": found["name"], "plate": plate, **_money(fee)}
        if debt:
            await notify(conn, [ended["resident_id"]], "parking.debt_recorded", data, category="parking",
                         idempotency_key=f"parking:debt:{ended['id']}", deep_link="ihanoi://wallet")
        else:
            await notify(conn, [ended["resident_id"]], "parking.receipt", data, category="parking",
                         idempotency_key=f"parking:receipt:{ended['id']}",
                         deep_link=f"ihanoi://wallet/receipts/{transaction_id}")
    await store.finish_check_out(conn, ended["id"], found["id"], ended["vehicle"], transaction_id, fee)
    message = ("permit: no fee" if found["permit"] else "paid" if transaction_id else
               "no fee" if not fee else f"unpaid: {fee} VND recorded as owed")
    if overstay:
        message += (f"; stayed {stay.days} days, over the {own.gate_max_stay_days}-day maximum: "
                    "flagged for the operator's staff")
    view = session_view(ended, found["code"], debt)
    view.charged_vnd += fee if transaction_id else 0
    return CheckOut(session=view, fee_vnd=fee, paid=debt == 0, debt_vnd=debt, transaction_id=transaction_id,
                    message=message, overstay=overstay)


# ---- the resident: on-street sessions, saved vehicles, pass codes, permits -------------------------------------


def _resident(principal: Principal) -> uuid.UUID:
    return uuid.UUID(principal.sub)


async def start_street(conn: asyncpg.Connection, principal: Principal, body: StreetStart,
                       own: ParkingSettings) -> Session:
    """Paid in advance for the chosen duration; an empty wallet refuses it (402) with nothing written."""
    at = now()
    if body.minutes > own.max_stay_minutes:
        raise _field(StayTooLong, "minutes", f"at most {own.max_stay_minutes} minutes in this zone",
                     max_minutes=own.max_stay_minutes)
    lot = await _lot(conn, body.lot)
    if lot["kind"] != "street":
        raise InvalidInput.field("lot", "an on-street zone; lots are paid at their gate")
    plate = plates.normalise(body.plate)
    if not _open_at(lot, at):
        raise LotClosed(f"{lot['name']} opens at {lot['opens_at']:%H:%M}")
    capacity = lot[f"capacity_{body.vehicle}"]
    if capacity <= 0:
        raise LotFull(f"no space for a {body.vehicle} here")
    rates = await store.tariff_in_force(conn, lot["id"], body.vehicle, at)
    if rates is None:
        raise NoTariff(f"no tariff for a {body.vehicle} here")
    until = at + dt.timedelta(minutes=body.minutes)
    fee = tariff.fee(rates_of(rates), at, until)
    await store.close_expired_street(conn, plate, at)
    row = await store.insert_session(conn, lot_id=lot["id"], plate=plate, vehicle=body.vehicle, via="app",
                                     resident_id=_resident(principal), tariff_id=rates["id"], started_at=at,
                                     paid_until=until, fee_vnd=fee, device="app", photo=None)
    if row is None:
        raise _field(AlreadyParked, "plate", f"{plate} already has a session running")
    if await store.count_in(conn, lot["id"], body.vehicle, capacity) is None:
        raise LotFull(f"no free space for a {body.vehicle}")  # the INSERT rolls back with it
    posted = await payments.charge(conn, _resident(principal), lot["operator_slug"], fee, lot["code"],
                                   f"parking:session:{row['id']}")
    await store.record_charge(conn, row["id"], posted.transaction_id, fee)
    await notify(conn, [_resident(principal)], "parking.receipt", {"lot": lot["name"], "plate": plate, **_money(fee)},
                 category="parking", idempotency_key=f"parking:receipt:{row['id']}",
                 deep_link=f"ihanoi://wallet/receipts/{posted.transaction_id}")
    return session_view(await store.session(conn, row["id"]))


async def extend_street(conn: asyncpg.Connection, principal: Principal, session_id: int, body: Extend,
                        own: ParkingSettings) -> Session:
    at = now()
    row = await store.session(conn, session_id, lock=True)
    if row is None or row["resident_id"] != _resident(principal) or row["via"] != "app":
        raise NotFound(f"no on-street session {session_id} of yours")
    if row["ended_at"] is not None or row["paid_until"] <= at:
        raise Conflict("this session has ended: start a new one")
    until = row["paid_until"] + dt.timedelta(minutes=body.minutes)
    if until - row["started_at"] > dt.timedelta(minutes=own.max_stay_minutes):
        left = own.max_stay_minutes - int((row["paid_until"] - row["started_at"]).total_seconds() // 60)
        raise _field(StayTooLong, "minutes", f"a stay here is at most {own.max_stay_minutes} minutes; "
                     f"at most {max(left, 0)} more", max_minutes=own.max_stay_minutes)
    rates = rates_of(await store.tariff(conn, row["tariff_id"]))
    total = tariff.fee(rates, row["started_at"], until)
    more = total - row["fee_vnd"]
    if more > 0:
        posted = await payments.charge(conn, row["resident_id"], row["operator_slug"], more, row["lot_code"],
                                       f"parking:session:{session_id}:until:{until.timestamp():.0f}")
        await store.record_charge(conn, session_id, posted.transaction_id, more)
    await store.extend(conn, session_id, until, total)
    return session_view(await store.session(conn, session_id))


async def my_session(conn: asyncpg.Connection, principal: Principal, session_id: int) -> Session:
    row = await store.session(conn, session_id)
    if row is None or row["resident_id"] != _resident(principal):
        raise NotFound(f"no session {session_id} of yours")
    owed = await conn.fetchval("SELECT amount_vnd FROM parking_debt WHERE session_id = $1 AND settled_at IS NULL",
                               session_id)
    return session_view(row, debt=owed or 0)


async def save_vehicle(conn: asyncpg.Connection, principal: Principal, body: VehicleCreate) -> SavedVehicle:
    plate = plates.normalise(body.plate)
    tag = body.rfid_tag.upper() if body.rfid_tag else None
    if tag:
        holder = await store.vehicle_by_tag(conn, tag)
        if holder is not None and (holder["resident_id"], holder["plate"]) != (_resident(principal), plate):
            raise Conflict("this tag is registered to another vehicle")
    row = await store.save_vehicle(conn, _resident(principal), plate, body.vehicle, tag)
    return SavedVehicle(plate=row["plate"], vehicle=row["vehicle"], rfid_tag=row["rfid_tag"])


async def vehicles(conn: asyncpg.Connection, principal: Principal) -> list[SavedVehicle]:
    return [SavedVehicle(plate=r["plate"], vehicle=r["vehicle"], rfid_tag=r["rfid_tag"])
            for r in await store.vehicles(conn, _resident(principal))]


async def pass_code(conn: asyncpg.Connection, principal: Principal, body: PassCodeCreate,
                    own: ParkingSettings) -> PassCode:
    """A code the app shows as a QR at the gate: used once, valid for a short while."""
    plate = plates.normalise(body.plate)
    saved = await conn.fetchval("SELECT 1 FROM parking_vehicle WHERE resident_id = $1 AND plate = $2",
                                _resident(principal), plate)
    if not saved:
        raise InvalidInput.field("plate", "save this vehicle first")
    code = secrets.token_urlsafe(24)
    expires = now() + dt.timedelta(seconds=own.pass_code_seconds)
    await store.insert_pass_code(conn, code, _resident(principal), plate, expires)
    return PassCode(code=code, plate=plate, expires_at=web.local(expires))


def _month(text: str) -> dt.date:
    year, _, month = text.partition("-")
    if not (2000 <= int(year) <= 2100 and 1 <= int(month) <= 12):
        raise InvalidInput.field("month", "a month as YYYY-MM")
    return dt.date(int(year), int(month), 1)


async def buy_permit(conn: asyncpg.Connection, principal: Principal, body: PermitCreate) -> Permit:
    month = _month(body.month)
    today = now().astimezone(web.CITY_TZ).date().replace(day=1)
    if month < today or month > dt.date(today.year + (today.month + 1) // 12, (today.month + 1) % 12 or 12, 1):
        raise Unprocessable.field("month", "this month or the next")
    lot = await _lot(conn, body.lot)
    plate = plates.normalise(body.plate)
    starts = dt.datetime.combine(month, dt.time(), web.CITY_TZ)
    rates = await store.tariff_in_force(conn, lot["id"], body.vehicle, max(starts, now()))
    if rates is None or rates["month_vnd"] is None:
        raise _field(NoTariff, "vehicle", f"no monthly permit for a {body.vehicle} at this lot")
    if await store.permit_exists(conn, lot["id"], plate, month):
        raise Conflict(f"{plate} has a permit for {body.month} at this lot")
    key = f"parking:permit:{lot['id']}:{plate.replace(' ', '_')}:{month:%Y-%m}"
    posted = await payments.charge(conn, _resident(principal), lot["operator_slug"], rates["month_vnd"],
                                   f"{lot['code']} permit", key)
    row = await store.insert_permit(conn, lot_id=lot["id"], plate=plate, vehicle=body.vehicle,
                                    resident_id=_resident(principal), month=month, amount=rates["month_vnd"],
                                    transaction_id=posted.transaction_id)
    if row is None:
        raise Conflict(f"{plate} has a permit for {body.month} at this lot")
    return Permit(id=row["id"], lot=lot["code"], plate=plate, vehicle=body.vehicle, month=body.month,
                  amount_vnd=row["amount_vnd"], transaction_id=posted.transaction_id)


# ---- enforcement -----------------------------------------------------------------------------------------------


async def lookup(conn: asyncpg.Connection, text: str) -> Lookup:
    plate = plates.normalise(text)
    at = now()
    owed = await store.debts_of_plate(conn, plate)
    row = await store.open_session(conn, plate)
    if row is not None:
        valid = row["via"] != "app" or row["paid_until"] > at
        return Lookup(plate=plate, valid=valid, reason="session" if valid else "expired",
                      session=session_view(row), open_debts_vnd=owed)
    permit = await store.permit_for(conn, plate, at.astimezone(web.CITY_TZ).date().replace(day=1))
    if permit is not None:
        return Lookup(plate=plate, valid=True, reason="permit", open_debts_vnd=owed,
                      permit=Permit(id=permit["id"], lot=permit["lot_code"], plate=plate, vehicle=permit["vehicle"],
                                    month=f"{permit['month']:%Y-%m}", amount_vnd=permit["amount_vnd"],
                                    transaction_id=permit["transaction_id"]))
    return Lookup(plate=plate, valid=False, reason="none", open_debts_vnd=owed)


async def overstays(conn: asyncpg.Connection, principal: Principal, operator: str, own: ParkingSettings,
                    days: int, limit: int) -> OverstayList:
    """Gate stays over the maximum at the operator's lots: vehicles still inside (abandoned?), then stays flagged at
    check-out in the last `days` days."""
    if not (may_manage(principal, operator) or principal.has_role("parking_enforcement")):
        raise Forbidden(f"this needs parking_operator for {operator}, parking_admin or parking_enforcement")
    at = now()
    rows = await store.overstays(conn, operator, dt.timedelta(days=own.gate_max_stay_days),
                                 at - dt.timedelta(days=days), at, limit)
    return OverstayList(max_days=own.gate_max_stay_days, items=[
        Overstay(session=session_view(r), days=((r["ended_at"] or at) - r["started_at"]).days,
                 still_parked=r["ended_at"] is None) for r in rows])


def may_see_evidence(principal: Principal, operator: str) -> bool:
    return may_manage(principal, operator) or principal.has_role("parking_enforcement")


async def session_photo(conn: asyncpg.Connection, principal: Principal, session_id: int, side: str,
                        thumbnail: bool) -> tuple[bytes, str, str]:
    """A session's evidence photo (bytes, type, sha256) for the lot's operator and the city's parking staff; for
    anyone else it does not exist (404), like a session without that photo."""
    row = await store.photo(conn, session_id, side)
    if row is None or not may_see_evidence(principal, row["operator_slug"]):
        raise NotFound(f"no {side} photo of session {session_id}")
    if row["content"] is None:
        if row["legacy"] is None:
            raise NotFound(f"no {side} photo of session {session_id}")
        try:  # stored as uploaded before photos were cleaned: cleaned now, never served as it came
            cleaned = await asyncio.to_thread(images.process_photo, bytes(row["legacy"]), max_bytes=PHOTO_MAX_BYTES)
        except InvalidInput:
            raise NotFound(f"the {side} photo of session {session_id} cannot be read") from None
        return ((cleaned.thumbnail, "image/jpeg", cleaned.sha256) if thumbnail
                else (cleaned.data, cleaned.content_type, cleaned.sha256))
    if thumbnail:
        return bytes(row["thumbnail"]), "image/jpeg", row["sha256"]
    return bytes(row["content"]), row["content_type"], row["sha256"]


# ---- background: debts, reminders, expiry ----------------------------------------------------------------------


async def _settle_debt(conn: asyncpg.Connection, debt) -> bool:
    """Charge one open debt (locked by the caller) if the wallet holds it: settled, linked, receipt sent."""
    try:
        posted = await payments.charge(conn, debt["resident_id"], debt["operator_slug"], debt["amount_vnd"],
                                       debt["lot_code"], f"parking:debt:{debt['id']}")
    except (payments.InsufficientFunds, payments.WalletNotFound):  # raised before anything is written
        await store.debt_attempted(conn, debt["id"])
        return False
    await store.settle_debt(conn, debt["id"], posted.transaction_id)
    await store.record_charge(conn, debt["session_id"], posted.transaction_id, debt["amount_vnd"])
    await notify(conn, [debt["resident_id"]], "parking.debt_settled",
                 {"plate": debt["plate"], **_money(debt["amount_vnd"])}, category="parking",
                 idempotency_key=f"parking:debt-settled:{debt['id']}",
                 deep_link=f"ihanoi://wallet/receipts/{posted.transaction_id}")
    return True


async def settle_debts_of(conn: asyncpg.Connection, resident_id: uuid.UUID, credit_transaction_id: int) -> int:
    """Payments calls this in the top-up's transaction once the wallet is credited (payments.on_wallet_credited):
    the resident's open debts, oldest first, are charged while the wallet holds them. Returns how many."""
    settled = 0
    for debt in await store.open_debts_of(conn, resident_id):
        settled += await _settle_debt(conn, debt)
    return settled


async def settle_debts(pool, limit: int = 100) -> dict[str, int]:
    """The safety net behind settle_debts_of (a top-up credited while parking's hook failed, a debt the hook
    skipped because this job held it, money credited some other way): every open debt is tried again, one
    transaction each."""
    counts = {"settled": 0, "still_owed": 0}
    async with pool.acquire() as conn:
        due = [r["id"] for r in await store.debts_due(conn, limit)]
    for debt_id in due:
        async with pool.acquire() as conn, conn.transaction():
            debt = await store.debt(conn, debt_id)
            if debt is None:
                continue
            counts["settled" if await _settle_debt(conn, debt) else "still_owed"] += 1
    return counts


async def remind(pool, own: ParkingSettings) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await store.due_reminders(conn, now(), dt.timedelta(minutes=own.reminder_minutes), 500)
        for r in rows:
            left = max(1, int((r["paid_until"] - now()).total_seconds() // 60))
            await notify(conn, [r["resident_id"]], "parking.ending_soon",
                         {"lot": r["lot_name"], "plate": r["plate"], "minutes": left,
                          "until": f"{web.local(r['paid_until']):%H:%M}"}, category="parking",
                         idempotency_key=f"parking:remind:{r['id']}:{r['paid_until'].timestamp():.0f}",
                         deep_link=f"ihanoi://parking/sessions/{r['id']}")
    return len(rows)


async def expire(pool) -> None:
    async with pool.acquire() as conn:
        await store.close_expired_street(conn, None, now())


# ---- reconciliation and public figures -------------------------------------------------------------------------


async def reconciliation(conn: asyncpg.Connection, principal: Principal, operator: str, date_from: dt.date,
                         date_to: dt.date, own: ParkingSettings) -> Reconciliation:
    """Per lot and day: sessions, fees computed, charged, still owed, and what payments' ledger collected;
    every gap between them listed, and money not remitted in time."""
    if not (may_manage(principal, operator) or principal.has_role("treasury")):
        raise Forbidden(f"this needs parking_operator for {operator}, parking_admin or treasury")
    if date_to < date_from or (date_to - date_from).days > 366:
        raise InvalidInput.field("to", "on or after `from`, at most 366 days later", source="query")
    outstanding = await payments.operator_outstanding(conn, operator)
    if outstanding is None:
        raise NotFound(f"no operator {operator!r}")
    start = dt.datetime.combine(date_from, dt.time(), web.CITY_TZ)
    end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), web.CITY_TZ)
    ledger = {(r["reason"], r["day"]): r["collected"] - r["refunded"]
              for r in await payments.collected_by_day(conn, operator, start, end)}
    # ledger reasons: the lot's code for sessions, "<code> permit" for monthly permits
    ours = {(r["lot_code"], r["day"]): r["charged"] for r in await store.charges_by_day(conn, operator, start, end)}
    ours |= {(f"{r['lot_code']} permit", r["day"]): r["charged"]
             for r in await store.permits_by_day(conn, operator, start, end)}
    codes = [r["code"] for r in await conn.fetch("SELECT code FROM parking_lot WHERE operator_slug = $1", operator)]
    lots = set(codes) | {f"{code} permit" for code in codes}
    rows = [DayRow(lot=r["lot_code"], day=r["day"], sessions=r["sessions"], fees_vnd=r["fees"],
                   charged_vnd=r["charged"], debts_open_vnd=r["debts_open"],
                   ledger_collected_vnd=ledger.get((r["lot_code"], r["day"]), 0))
            for r in await store.reconciliation_rows(conn, operator, start, end)]
    gaps = [Gap(kind="fee-not-accounted", lot=r["lot_code"], day=r["day"], session_id=r["id"],
                amount_vnd=r["fee_vnd"] - r["charged_vnd"] - r["owed"],
                detail=f"fee {r['fee_vnd']} VND; charged {r['charged_vnd']} VND (charges recorded {r['charges']}); "
                       f"owed {r['owed']} VND")
            for r in await store.unaccounted(conn, operator, start, end)]
    for reason, day in sorted({k for k in ledger if k[0] in lots} | set(ours), key=lambda k: (k[1], k[0])):
        theirs, mine = ledger.get((reason, day), 0), ours.get((reason, day), 0)
        if theirs != mine:
            what = "monthly permits" if reason.endswith(" permit") else "sessions"
            gaps.append(Gap(kind="ledger-mismatch", lot=reason.removesuffix(" permit"), day=day,
                            amount_vnd=theirs - mine,
                            detail=f"{what}: payments' ledger collected {theirs} VND, parking recorded {mine} VND"))
    oldest = outstanding["oldest_unremitted_at"]
    if outstanding["outstanding_vnd"] > 0 and oldest is not None and \
            oldest < now() - dt.timedelta(days=own.remit_within_days):
        gaps.append(Gap(kind="not-remitted", amount_vnd=outstanding["outstanding_vnd"],
                        detail=f"collected since {web.local(oldest):%Y-%m-%d} and not remitted to the treasury "
                               f"within {own.remit_within_days} days"))
    return Reconciliation(operator=operator, date_from=date_from, date_to=date_to, rows=rows,
                          outstanding_vnd=outstanding["outstanding_vnd"],
                          last_remitted_at=web.local(outstanding["last_remitted_at"])
                          if outstanding["last_remitted_at"] else None, gaps=gaps)


async def figures(conn: asyncpg.Connection, redis, code: str, days: int) -> Figures:
    """Public per-lot figures, cached for a minute in Redis (shared by every API process), as feedback's are."""
    cache = redis.key("parking", "figures", code, days)
    cached = await redis.client.get(cache)
    if cached:
        return msgspec.json.decode(cached, type=Figures)
    lot = await store.lot(conn, code)
    if lot is None:
        raise NotFound(f"no parking lot {code!r}")
    since = now() - dt.timedelta(days=days)
    r = await store.figures(conn, lot["id"], since)
    view = Figures(lot=code, days=days, since=web.local(since), sessions=r["sessions"], fees_vnd=r["fees"],
                   collected_vnd=r["collected"], open_debts=r["open_debts"], open_debts_vnd=r["open_debts_vnd"])
    await redis.client.set(cache, msgspec.json.encode(view), ex=FIGURES_CACHE_SECONDS)
    return view
