"""Parking endpoints: HTTP only; every rule is in service.py.

Anyone finds lots near a point with free spaces and a quote; gates and attendants' phones (machine clients
holding `parking_gate:<operator>`) check vehicles in and out; residents save vehicles, show a pass code,
start and extend on-street sessions and buy monthly permits; enforcement staff look plates up; operators
and the treasury reconcile each lot and day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Controller, Request, Response, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app import live as app_live
from app import web
from app.identity import guards
from parking import config, live, service
from parking.models import (
    CheckOut,
    Extend,
    Figures,
    GateEvent,
    Lookup,
    Lot,
    LotChangeList,
    LotCreate,
    LotEdit,
    LotList,
    OverstayList,
    PassCode,
    PassCodeCreate,
    Permit,
    PermitCreate,
    Reconciliation,
    SavedVehicle,
    Session,
    StreetStart,
    Tariff,
    TariffCreate,
    TariffList,
    VehicleCreate,
    VehicleList,
)

Lat = Annotated[float, QueryParameter(ge=20.5, le=21.5, description="latitude")]
Lng = Annotated[float, QueryParameter(ge=105.2, le=106.1, description="longitude")]
Radius = Annotated[int, QueryParameter(ge=10, le=20_000, description="metres")]
Minutes = Annotated[int, QueryParameter(ge=1, le=7 * 24 * 60, description="planned stay in minutes, for the quote")]
VehicleQ = Annotated[str, QueryParameter(pattern="^(motorbike|car|large)$")]
Days = Annotated[int, QueryParameter(ge=1, le=366)]
DateFrom = Annotated[dt.date, QueryParameter(name="from", description="first day (Asia/Ho_Chi_Minh), YYYY-MM-DD")]
DateTo = Annotated[dt.date, QueryParameter(name="to", description="last day, included")]
enforcement = guards.role("parking_enforcement")
Side = Annotated[str, Parameter(pattern="^(in|out)$", description="`in` (check-in) or `out` (check-out)")]



class LotsController(Controller):
    path = "/v1/parking"
    tags = ["Parking"]

    @get("/lots/near", operation_id="ParkingNearMe", summary="Lots within a radius, nearest first, with free "
         "spaces and a price quote for a planned stay")
    async def near(self, conn: web.Conn, lat: Lat, lng: Lng, radius_m: Radius = 1000, vehicle: VehicleQ = "motorbike",
                   minutes: Minutes = 60, limit: web.Limit = 20) -> LotList:
        return LotList(items=await service.near(conn, lat=lat, lng=lng, radius_m=radius_m, vehicle=vehicle,
                                                minutes=minutes, limit=limit))

    @get("/lots/{code:str}", operation_id="GetParkingLot", summary="A lot: place, hours, free spaces, prices now")
    async def get_lot(self, code: FromPath[str], conn: web.Conn) -> Lot:
        return await service.get_lot(conn, code)

    @get("/lots/{code:str}/figures", operation_id="ParkingLotFigures",
         summary="Public figures of a lot (sessions, fees, collected, open debts), cached for a minute")
    async def figures(self, code: FromPath[str], conn: web.Conn, state: State, days: Days = 30) -> Figures:
        return await service.figures(conn, state.redis, code, days)

    @post("/lots", operation_id="CreateParkingLot", guards=[guards.authenticated], dependencies=web.IDEMPOTENT,
          status_code=201, summary="A lot or on-street zone (parking_admin, or parking_operator of its operator)")
    async def create_lot(self, data: JSONBody[LotCreate], tx: web.Tx, principal: web.Caller) -> Lot:
        return await service.create_lot(tx, principal, data)

    @patch("/lots/{code:str}", operation_id="EditParkingLot", guards=[guards.authenticated],
           dependencies=web.IDEMPOTENT, summary="Change a lot's name, address, capacity or hours (its operator or the "
           "city) or assign it a tariff from a future moment (the city); every change audited")
    async def edit_lot(self, code: FromPath[str], data: JSONBody[LotEdit], tx: web.Tx, principal: web.Caller) -> Lot:
        return await service.edit_lot(tx, principal, code, data)

    @get("/lots/{code:str}/changes", operation_id="ParkingLotChanges", guards=[guards.authenticated],
         summary="The lot's edits, newest first: who, when, each field before and after")
    async def lot_changes(self, code: FromPath[str], conn: web.Conn, principal: web.Caller,
                          limit: web.Limit = 50) -> LotChangeList:
        return await service.lot_changes(conn, principal, code, limit)

    @get("/tariffs", operation_id="ListParkingTariffs", summary="The city's tariffs, or a lot's own, with their dates")
    async def tariffs(self, conn: web.Conn, lot: FromQuery[str | None] = None) -> TariffList:
        return TariffList(items=await service.list_tariffs(conn, lot))

    @post("/tariffs", operation_id="CreateParkingTariff", guards=[guards.authenticated],
          dependencies=web.IDEMPOTENT, status_code=201,
          summary="A new price from a future moment on (parking_admin); past sessions keep theirs")
    async def create_tariff(self, data: JSONBody[TariffCreate], tx: web.Tx, principal: web.Caller) -> Tariff:
        return await service.create_tariff(tx, principal, data)

    @get("/availability/stream", operation_id="ParkingAvailabilityStream",
         summary="Free spaces as server-sent events, from every API process",
         responses={200: ResponseSpec(data_container=str, media_type="text/event-stream",
                                      description="events `ready`, then `availability` ({lot, free}) for every "
                                                  "check-in or check-out, keep-alive comments every 15 s")})
    async def stream(self, state: State, lot: FromQuery[str | None] = None) -> ServerSentEvent:
        channel = live.channel(state.redis)

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            pubsub = state.redis.client.pubsub()
            await pubsub.subscribe(channel)
            try:
                yield ServerSentEventMessage(event="ready", data="{}")
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=app_live.KEEPALIVE_SECONDS)
                    if message is None:
                        yield ServerSentEventMessage(comment="keep-alive")
                        continue
                    event = json.loads(message["data"])
                    if lot is None or event.get("lot") == lot:
                        yield ServerSentEventMessage(event="availability", data=json.dumps(event))
            finally:
                await pubsub.unsubscribe(channel)
                await pubsub.aclose()
                await asyncio.sleep(0)

        return ServerSentEvent(events())


class GateController(Controller):
    path = "/v1/parking/gate"
    tags = ["Parking"]

    @post("/check-in", operation_id="ParkingCheckIn", guards=[guards.authenticated], dependencies=web.IDEMPOTENT,
          status_code=201, summary="A vehicle enters (gate or attendant's phone, parking_gate:<operator>)")
    async def check_in(self, data: JSONBody[GateEvent], tx: web.Tx, principal: web.Caller,
                       state: State) -> Response[Session]:
        result = await service.check_in(tx, principal, data, config.of(state.settings))
        return Response(result, status_code=201,
                        background=BackgroundTask(live.publish, state.pool, state.redis, data.lot))

    @post("/check-out", operation_id="ParkingCheckOut", guards=[guards.authenticated], dependencies=web.IDEMPOTENT,
          status_code=200, summary="A vehicle leaves: the fee charged, or recorded as owed; the gate opens")
    async def check_out(self, data: JSONBody[GateEvent], tx: web.Tx, principal: web.Caller,
                        state: State) -> Response[CheckOut]:
        result = await service.check_out(tx, principal, data, config.of(state.settings))
        return Response(result, background=BackgroundTask(live.publish, state.pool, state.redis, data.lot))


class ResidentController(Controller):
    path = "/v1/parking"
    tags = ["Parking"]
    guards = [guards.resident]

    @get("/vehicles", operation_id="ListParkingVehicles")
    async def vehicles(self, conn: web.Conn, principal: web.Caller) -> VehicleList:
        return VehicleList(items=await service.vehicles(conn, principal))

    @post("/vehicles", operation_id="SaveParkingVehicle", dependencies=web.IDEMPOTENT, status_code=201,
          summary="Save a plate (and its RFID tag) for gates to charge this wallet")
    async def save_vehicle(self, data: JSONBody[VehicleCreate], tx: web.Tx, principal: web.Caller) -> SavedVehicle:
        return await service.save_vehicle(tx, principal, data)

    @post("/pass-codes", operation_id="CreateParkingPassCode", status_code=201,
          summary="A short-lived code the app shows as a QR at the gate")
    async def pass_code(self, data: JSONBody[PassCodeCreate], tx: web.Tx, principal: web.Caller,
                        state: State) -> PassCode:
        return await service.pass_code(tx, principal, data, config.of(state.settings))

    @post("/street-sessions", operation_id="StartStreetParking", dependencies=web.IDEMPOTENT_REQUIRED,
          status_code=201, summary="Park on the street for a chosen duration, paid now from the wallet")
    async def start(self, data: JSONBody[StreetStart], tx: web.Tx, principal: web.Caller,
                    state: State) -> Response[Session]:
        result = await service.start_street(tx, principal, data, config.of(state.settings))
        return Response(result, status_code=201,
                        background=BackgroundTask(live.publish, state.pool, state.redis, data.lot))

    @post("/street-sessions/{session_id:int}/extend", operation_id="ExtendStreetParking",
          dependencies=web.IDEMPOTENT_REQUIRED, status_code=200, summary="More time, up to the zone's maximum")
    async def extend(self, session_id: web.Id, data: JSONBody[Extend], tx: web.Tx, principal: web.Caller,
                     state: State) -> Session:
        return await service.extend_street(tx, principal, session_id, data, config.of(state.settings))

    @get("/sessions/{session_id:int}", operation_id="GetParkingSession")
    async def session(self, session_id: web.Id, conn: web.Conn, principal: web.Caller) -> Session:
        return await service.my_session(conn, principal, session_id)

    @post("/permits", operation_id="BuyParkingPermit", dependencies=web.IDEMPOTENT_REQUIRED, status_code=201,
          summary="A monthly permit for one vehicle at one lot")
    async def permit(self, data: JSONBody[PermitCreate], tx: web.Tx, principal: web.Caller) -> Permit:
        return await service.buy_permit(tx, principal, data)


class StaffController(Controller):
    path = "/v1/parking"
    tags = ["Parking"]

    @get("/enforcement/plates/{plate:str}", operation_id="ParkingPlateLookup", guards=[enforcement],
         summary="Is this vehicle parked legally: a valid session or permit, or not")
    async def lookup(self, plate: FromPath[str], conn: web.Conn) -> Lookup:
        return await service.lookup(conn, plate)

    @get("/operators/{operator:str}/reconciliation", operation_id="ParkingReconciliation",
         guards=[guards.authenticated],
         summary="Per lot and day: sessions, fees, charged, owed, the ledger's collected, and every gap")
    async def reconciliation(self, operator: FromPath[str], conn: web.Conn, principal: web.Caller,
                             state: State, date_from: DateFrom, date_to: DateTo) -> Reconciliation:
        return await service.reconciliation(conn, principal, operator, date_from, date_to,
                                            config.of(state.settings))


class EvidenceController(Controller):
    path = "/v1/parking"
    tags = ["Parking"]
    guards = [guards.authenticated]

    @get("/sessions/{session_id:int}/photos/{side:str}", operation_id="GetParkingSessionPhoto", media_type="image/*",
         summary="A session's evidence photo from the gate, cleaned (the lot's operator, parking_admin, enforcement)",
         response_description="the JPEG or PNG, or a JPEG thumbnail with ?thumbnail=true")
    async def photo(self, session_id: web.Id, side: Side, request: Request, conn: web.Conn, principal: web.Caller,
                    thumbnail: FromQuery[bool] = False) -> Response[bytes]:
        content, media_type, digest = await service.session_photo(conn, principal, session_id, side, thumbnail)
        etag = f'"{digest[:32]}{"t" if thumbnail else ""}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(content, media_type=media_type, headers=headers)

    @get("/operators/{operator:str}/overstays", operation_id="ParkingOverstays",
         summary="Gate stays over the maximum: vehicles still inside, then stays flagged at check-out")
    async def overstays(self, operator: FromPath[str], conn: web.Conn, principal: web.Caller, state: State,
                        days: Days = 30, limit: web.Limit = 50) -> OverstayList:
        return await service.overstays(conn, principal, operator, config.of(state.settings), days, limit)


ROUTERS = [LotsController, GateController, ResidentController, StaffController, EvidenceController]
