"""The rules of parking: who may do what at which lot, what a stay costs, and what each step writes.

Every step runs in the caller's transaction and raises before it has written anything it would have to
undo: a refused check-in or check-out leaves no row behind. Money moves only through payments; an empty
wallet at check-out is caught in a savepoint and becomes a recorded debt, and the gate opens anyway.
"""

from __future__ import annotations

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
from app import web
from app.errors import Conflict, DomainError, FieldError, Forbidden, InvalidInput, NotFound
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
    LotCreate,
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


# ---- near me ---------------------------------------------------------------------------------------------------


async def near(conn: asyncpg.Connection, *, lat: float, lng: float, radius_m: int, vehicle: str, minutes: int,
               limit: int) -> list[Lot]:
    at = now()
    items = []
    for r in await store.near(conn, lat, lng, float(radius_m), vehicle, at, limit):
        capacity = r[f"capacity_{vehicle}"]
        quote = tariff.fee(rates_of(r), at, at + dt.timedelta(minutes=minutes)) if r["tariff_id"] else None
        items.append(Lot(code=r["code"], name=r["name"], kind=r["kind"], operator=r["operator_slug"],
                         address=r["address"], latitude=r["latitude"], longitude=r["longitude"],
                         opens_at=r["opens_at"], closes_at=r["closes_at"],
                         spaces=[Space(vehicle=vehicle, capacity=capacity, free=max(0, capacity - r["occupied"]))],
                         prices=[price_of(r)] if r["tariff_id"] else [], distance_m=round(r["distance"]),
                         quote_vnd=quote))
    return items


# ---- gates -----------------------------------------------------------------------------------------------------


def _check_clock(body: GateEvent, own: ParkingSettings, at: dt.datetime) -> None:
    if body.device_time.tzinfo is None:
        raise InvalidInput.field("device_time", "a time with its offset, e.g. 2026-11-30T08:00:00+07:00")
    skew = abs((body.device_time - at).total_seconds())
    if skew > own.clock_tolerance_seconds:
        raise _field(ClockSkew, "device_time", f"the device clock is {int(skew)} s from the server's; at most "
                     f"{own.clock_tolerance_seconds} s is accepted: set the device's time", skew_seconds=int(skew))


def _photo(body: GateEvent) -> bytes | None:
    if body.photo_base64 is None:
        return None
    try:
        data = base64.b64decode(body.photo_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput.field("photo_base64", "a base64-encoded JPEG or PNG") from None
    if len(data) > PHOTO_MAX_BYTES:
        raise InvalidInput.field("photo_base64", f"at most {PHOTO_MAX_BYTES} bytes")
    if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n")):
        raise InvalidInput.field("photo_base64", "a JPEG or PNG photo")
    return data


Identified = tuple[str, str, uuid.UUID | None, str | None]


async def _identify(conn: asyncpg.Connection, body: GateEvent, at: dt.datetime) -> Identified:
    """(plate, via, resident, saved vehicle type) from exactly one of plate, RFID tag or the app's pass code."""
    given = [name for name in ("plate", "rfid_tag", "pass_code") if getattr(body, name) is not None]
    if len(given) != 1:
        raise InvalidInput.field("plate", "give exactly one of plate, rfid_tag or pass_code")
    if body.rfid_tag is not None:
        row = await store.vehicle_by_tag(conn, body.rfid_tag.upper())
        if row is None:
            raise _field(NotFound, "rfid_tag", "no vehicle carries this tag")
        return row["plate"], "rfid", row["resident_id"], row["vehicle"]
    if body.pass_code is not None:
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


async def check_in(conn: asyncpg.Connection, principal: Principal, body: GateEvent, own: ParkingSettings) -> Session:
    at = now()
    _check_clock(body, own, at)
    lot = await _lot(conn, body.lot)
    _check_gate(principal, lot)
    if lot["kind"] != "lot":
        raise InvalidInput.field("lot", "on-street zones have no gate: residents start a session in the app")
    photo = _photo(body)
    plate, via, resident, saved = await _identify(conn, body, at)
    vehicle = body.vehicle or saved
    if vehicle is None:
        raise InvalidInput.field("vehicle", "say which kind of vehicle: motorbike, car or large")
    if not _open_at(lot, at):
        raise LotClosed(f"{lot['name']} opens at {lot['opens_at']:%H:%M}")
    capacity = lot[f"capacity_{vehicle}"]
    if await store.occupied_by(conn, lot["id"], vehicle) >= capacity:
        raise LotFull(f"no free space for a {vehicle}", vehicle=vehicle, capacity=capacity)
    rates = await store.tariff_in_force(conn, lot["id"], vehicle, at)
    if rates is None:
        raise NoTariff(f"no tariff for a {vehicle} at this lot")
    await store.close_expired_street(conn, plate, at)
    row = await store.insert_session(conn, lot_id=lot["id"], plate=plate, vehicle=vehicle, via=via,
                                     resident_id=resident, tariff_id=rates["id"], started_at=at,
                                     device=principal.client_id or principal.sub, photo=photo)
    if row is None:
        parked = await store.open_session(conn, plate)
        raise _field(AlreadyParked, "plate", f"{plate} is already parked at {parked['lot_code'] if parked else 'a lot'}"
                     " and has not checked out", session_id=parked["id"] if parked else None)
    return session_view(row, lot["code"])


async def _charge_or_debt(conn: asyncpg.Connection, session, operator: str, lot_code: str, amount: int,
                          key: str) -> tuple[int | None, int]:
    """(transaction id, debt) for `amount` of a session: charged when the wallet holds it, else recorded as owed."""
    if amount <= 0:
        return None, 0
    if session["resident_id"] is not None:
        try:
            async with conn.transaction():  # a savepoint: a refused charge leaves the session's own writes alone
                posted = await payments.charge(conn, session["resident_id"], operator, amount, lot_code, key)
        except (payments.InsufficientFunds, payments.WalletNotFound):
            pass
        else:
            await store.record_charge(conn, session["id"], posted.transaction_id, amount)
            return posted.transaction_id, 0
    await store.insert_debt(conn, session["id"], session["resident_id"], session["plate"], amount)
    return None, amount


async def check_out(conn: asyncpg.Connection, principal: Principal, body: GateEvent, own: ParkingSettings) -> CheckOut:
    at = now()
    _check_clock(body, own, at)
    lot = await _lot(conn, body.lot)
    _check_gate(principal, lot)
    photo = _photo(body)
    plate, _, _, _ = await _identify(conn, body, at)
    row = await store.open_session(conn, plate, lock=True)
    if row is None or row["lot_id"] != lot["id"] or row["via"] == "app":
        raise _field(NotParked, "plate", f"{plate} has not checked in at {lot['name']}")
    permit = await store.permit_exists(conn, lot["id"], plate, at.astimezone(web.CITY_TZ).date().replace(day=1))
    fee = 0 if permit else tariff.fee(rates_of(await store.tariff(conn, row["tariff_id"])), row["started_at"], at)
    ended = await store.end_session(conn, row["id"], at, fee, principal.client_id or principal.sub, photo)
    transaction_id, debt = await _charge_or_debt(conn, ended, lot["operator_slug"], lot["code"], fee,
                                                 f"parking:session:{row['id']}")
    if ended["resident_id"] is not None and fee:
        data = {"lot": lot["name"], "plate": plate, **_money(fee)}
        if debt:
            await notify(conn, [ended["resident_id"]], "parking.debt_recorded", data, category="parking",
                         idempotency_key=f"parking:debt:{row['id']}", deep_link="ihanoi://wallet")
        else:
            await notify(conn, [ended["resident_id"]], "parking.receipt", data, category="parking",
                         idempotency_key=f"parking:receipt:{row['id']}",
                         deep_link=f"ihanoi://wallet/receipts/{transaction_id}")
    ended = await store.session(conn, row["id"])
    message = ("permit: no fee" if permit else "paid" if transaction_id else
               "no fee" if not fee else f"unpaid: {fee} VND recorded as owed")
    return CheckOut(session=session_view(ended, lot["code"], debt), fee_vnd=fee, paid=debt == 0,
                    debt_vnd=debt, transaction_id=transaction_id, message=message)


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
    if await store.occupied_by(conn, lot["id"], body.vehicle) >= lot[f"capacity_{body.vehicle}"]:
        raise LotFull(f"no free space for a {body.vehicle}")
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
        raise InvalidInput.field("month", "this month or the next")
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


# ---- background: debts, reminders, expiry ----------------------------------------------------------------------


async def settle_debts(pool, limit: int = 100) -> dict[str, int]:
    """Payments has no top-up callback, so owed fees are retried here: each open debt is charged again and
    settled as soon as the wallet holds it (one transaction per debt)."""
    counts = {"settled": 0, "still_owed": 0}
    async with pool.acquire() as conn:
        due = [r["id"] for r in await store.debts_due(conn, limit)]
    for debt_id in due:
        async with pool.acquire() as conn, conn.transaction():
            debt = await store.debt(conn, debt_id)
            if debt is None:
                continue
            try:
                async with conn.transaction():
                    posted = await payments.charge(conn, debt["resident_id"], debt["operator_slug"],
                                                   debt["amount_vnd"], debt["lot_code"], f"parking:debt:{debt_id}")
            except (payments.InsufficientFunds, payments.WalletNotFound):
                await store.debt_attempted(conn, debt_id)
                counts["still_owed"] += 1
                continue
            await store.settle_debt(conn, debt_id, posted.transaction_id)
            await store.record_charge(conn, debt["session_id"], posted.transaction_id, debt["amount_vnd"])
            await notify(conn, [debt["resident_id"]], "parking.debt_settled",
                         {"plate": debt["plate"], **_money(debt["amount_vnd"])}, category="parking",
                         idempotency_key=f"parking:debt-settled:{debt_id}",
                         deep_link=f"ihanoi://wallet/receipts/{posted.transaction_id}")
            counts["settled"] += 1
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
