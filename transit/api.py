"""Transit endpoints: HTTP only; every rule is in service.py.

Residents read the fares, see which rider category applies to them, apply with proof, register a device
key, buy from the wallet and fetch a ticket's level-1 credential; operator staff decide applications,
sell paper tickets, revoke, and read their own report; validators (machine clients) check online, sync
and upload taps; admins rotate the issuer key.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Annotated

import qrcode
import qrcode.image.svg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from app import openapi, web
from app.identity import guards
from transit import config, service
from transit.models import (
    ApplicationList,
    ApplicationView,
    Card,
    CardCreate,
    CardList,
    CheckRequest,
    CheckResult,
    Credential,
    Decision,
    Device,
    DeviceCreate,
    Eligibility,
    Fares,
    FlagList,
    KeyRotation,
    PaperSale,
    PaperTicket,
    Purchase,
    Report,
    SyncView,
    TapBatch,
    TapReceipt,
    TicketList,
    TicketView,
)

OperatorSlug = Annotated[str, QueryParameter(pattern=r"^[a-z][a-z0-9-]{1,62}$", description="operator slug")]
Category = Annotated[str, QueryParameter(pattern="^(" + "|".join((*service.PROOF, "child")) + ")$",
                                         description="a proof-based rider category (child: a family card's)")]
DateFrom = Annotated[dt.date, QueryParameter(name="from", description="first day (Asia/Ho_Chi_Minh)")]
DateTo = Annotated[dt.date, QueryParameter(name="to", description="last day, included")]
Status = Annotated[str, QueryParameter(pattern=r"^(pending|approved|refused)$")]
DeviceId = Annotated[int, QueryParameter(ge=1, le=web.INT64_MAX, description="the device key's id")]
CardId = Annotated[int | None, QueryParameter(ge=1, le=web.INT64_MAX, description="a family card's id")]
Day = Annotated[dt.date | None, QueryParameter(description="the day the fares apply (default today)")]
admin = guards.role("admin")


def _key(request: Request) -> str:
    return request.headers.get("idempotency-key", "")


def _slug(slug: str) -> str:
    import re

    from app.errors import InvalidInput

    if not re.match(r"^[a-z][a-z0-9-]{1,62}$", slug):
        raise InvalidInput.field("slug", "an operator slug", source="path")
    return slug


class FaresController(Controller):
    path = "/v1/transit"
    tags = ["Transit"]

    @get("/fares", operation_id="GetTransitFares", summary="Fare media, rider categories, fare products and routes "
         "in effect on a day (GTFS-Fares v2 names)")
    async def fares(self, conn: web.Conn, on: Day = None) -> Fares:
        return await service.fares(conn, on)


class RiderController(Controller):
    path = "/v1/transit"
    tags = ["Transit"]
    guards = [guards.resident]

    @get("/eligibility", operation_id="GetTransitEligibility",
         summary="The rider category of the caller (or a family card), from VNeID's birth date and approved proof")
    async def eligibility(self, conn: web.Conn, principal: web.Caller, card_id: CardId = None) -> Eligibility:
        import uuid

        return await service.eligibility(conn, uuid.UUID(principal.sub), card_id=card_id)

    @post("/cards", operation_id="AddTransitFamilyCard", status_code=201, dependencies=web.IDEMPOTENT,
          summary="A card for a family member (a child under 6 rides free once the birth certificate is approved)")
    async def add_card(self, data: JSONBody[CardCreate], tx: web.Tx, principal: web.Caller) -> Card:
        return await service.add_card(tx, principal, data)

    @get("/cards", operation_id="ListTransitFamilyCards")
    async def cards(self, conn: web.Conn, principal: web.Caller) -> CardList:
        import uuid

        from transit import store

        return CardList(cards=[service._card(r) for r in await store.cards_of(conn, uuid.UUID(principal.sub))])

    @post("/applications", operation_id="CreateTransitApplication", status_code=201,
          dependencies=web.IDEMPOTENT_REQUIRED, opt={"body": openapi.photo_body(service.PROOF_MAX_BYTES)},
          summary="Apply for a proof-based category: the photo of the proof (JPEG or PNG) is the body")
    async def apply(self, category: Category, operator: OperatorSlug, request: Request, tx: web.Tx,
                    principal: web.Caller, card_id: CardId = None) -> ApplicationView:
        return await service.apply(tx, principal, category, operator, await request.body(), card_id)

    @get("/applications", operation_id="ListMyTransitApplications")
    async def my_applications(self, conn: web.Conn, principal: web.Caller) -> ApplicationList:
        import uuid

        from transit import store

        rows = await store.applications_of(conn, uuid.UUID(principal.sub))
        return ApplicationList(applications=[service._application(r) for r in rows])

    @post("/devices", operation_id="RegisterTransitDevice", status_code=201, dependencies=web.IDEMPOTENT,
          summary="Register this phone's P-256 key for the current session (logout ends it)")
    async def device(self, data: JSONBody[DeviceCreate], tx: web.Tx, principal: web.Caller) -> Device:
        row = await service.register_device(tx, principal, data.public_key)
        return Device(id=row["id"], created_at=web.local(row["created_at"]))

    @post("/tickets", operation_id="BuyTransitTicket", status_code=201, dependencies=web.IDEMPOTENT_REQUIRED,
          summary="Buy a ticket or pass from the wallet, at the caller's rider category (Idempotency-Key required)")
    async def buy(self, data: JSONBody[Purchase], tx: web.Tx, principal: web.Caller, request: Request,
                  state: State) -> TicketView:
        return await service.buy(tx, principal, data, _key(request), config.of(state.settings))

    @get("/tickets", operation_id="ListMyTransitTickets")
    async def tickets(self, conn: web.Conn, principal: web.Caller) -> TicketList:
        import uuid

        from transit import store

        return TicketList(tickets=[service._ticket(r) for r in await store.tickets_of(conn, uuid.UUID(principal.sub))])

    @post("/tickets/{ticket_id:int}/refund", operation_id="RefundTransitTicket", status_code=200,
          dependencies=web.IDEMPOTENT_REQUIRED, summary="Refund an unused single-ride ticket to the wallet")
    async def refund(self, ticket_id: web.Id, tx: web.Tx, principal: web.Caller, state: State) -> TicketView:
        return await service.refund(tx, principal, ticket_id, state.redis)

    @get("/tickets/{ticket_id:int}/credential", operation_id="GetTransitCredential",
         summary="Level 1 for a registered device: the app adds a signed timestamp every 15-30 s")
    async def credential(self, ticket_id: web.Id, device_id: DeviceId, conn: web.Conn, principal: web.Caller,
                         state: State) -> Credential:
        return await service.credential_for(conn, service.ring_of(state), principal, ticket_id, device_id,
                                            config.of(state.settings))


class OperatorController(Controller):
    path = "/v1/transit/operators/{slug:str}"
    tags = ["Transit"]
    guards = [guards.authenticated]

    @get("/applications", operation_id="ListTransitApplications", summary="The operator's queue (its staff)")
    async def queue(self, slug: web.Slug, conn: web.Conn, principal: web.Caller, status: Status = "pending",
                    limit: web.Limit = 50) -> ApplicationList:
        from transit import store

        service.check_staff(principal, _slug(slug))
        rows = await store.application_queue(conn, slug, status, limit)
        return ApplicationList(applications=[service._application(r) for r in rows])

    @get("/applications/{application_id:int}/photo", operation_id="GetTransitApplicationPhoto",
         media_type="image/*", response_description="the proof as uploaded")
    async def photo(self, slug: web.Slug, application_id: web.Id, conn: web.Conn,
                    principal: web.Caller) -> Response[bytes]:
        from app.errors import NotFound
        from transit import store

        service.check_staff(principal, _slug(slug))
        row = await store.application(conn, application_id)
        if row is None or row["operator_slug"] != slug:
            raise NotFound(f"no application {application_id} for {slug}")
        return Response(bytes(row["photo"]), media_type=row["photo_type"],
                        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})

    @post("/applications/{application_id:int}/decision", operation_id="DecideTransitApplication", status_code=200,
          dependencies=web.IDEMPOTENT, summary="Approve (with an expiry) or refuse (with a note)")
    async def decide(self, slug: web.Slug, application_id: web.Id, data: JSONBody[Decision], tx: web.Tx,
                     principal: web.Caller) -> ApplicationView:
        return await service.decide(tx, principal, _slug(slug), application_id, data)

    @post("/tickets/{ticket_id:int}/revoke", operation_id="RevokeTransitTicket", status_code=200,
          dependencies=web.IDEMPOTENT, summary="Revoke a ticket: gates refuse it now, validators at their next sync")
    async def revoke(self, slug: web.Slug, ticket_id: web.Id, tx: web.Tx, principal: web.Caller,
                     state: State) -> TicketView:
        return await service.revoke(tx, principal, _slug(slug), ticket_id, state.redis, service.ring_of(state))

    @post("/paper-tickets", operation_id="SellTransitPaperTicket", status_code=201,
          dependencies=web.IDEMPOTENT_REQUIRED, summary="A kiosk sale: a paper single ride, issuer-signed, valid once")
    async def paper(self, slug: web.Slug, data: JSONBody[PaperSale], tx: web.Tx, principal: web.Caller,
                    request: Request, state: State) -> PaperTicket:
        ticket, code = await service.sell_paper(tx, service.ring_of(state), principal, _slug(slug), data.product_id,
                                                data.route_id, _key(request), config.of(state.settings))
        base = f"/v1/transit/operators/{slug}/paper-tickets/{ticket.id}"
        return PaperTicket(ticket=ticket, code=service.b64(code), png_url=base + "/qr.png", svg_url=base + "/qr.svg")

    @get("/paper-tickets/{ticket_id:int}/qr.png", operation_id="GetTransitPaperTicketPng", media_type="image/png",
         response_description="the QR to print (version 10 or less, error correction M)")
    async def png(self, slug: web.Slug, ticket_id: web.Id, conn: web.Conn, principal: web.Caller,
                  state: State) -> Response[bytes]:
        code = await service.paper_code(conn, service.ring_of(state), principal, _slug(slug), ticket_id)
        out = io.BytesIO()
        _qr(code).make_image().save(out)
        return Response(out.getvalue(), media_type="image/png", headers={"Cache-Control": "private, no-store"})

    @get("/paper-tickets/{ticket_id:int}/qr.svg", operation_id="GetTransitPaperTicketSvg",
         media_type="image/svg+xml", response_description="the QR as SVG")
    async def svg(self, slug: web.Slug, ticket_id: web.Id, conn: web.Conn, principal: web.Caller,
                  state: State) -> Response[bytes]:
        code = await service.paper_code(conn, service.ring_of(state), principal, _slug(slug), ticket_id)
        image = _qr(code).make_image(image_factory=qrcode.image.svg.SvgPathImage)
        return Response(image.to_string(), media_type="image/svg+xml", headers={"Cache-Control": "private, no-store"})

    @get("/report", operation_id="GetTransitReport", summary="Rides per route and product, revenue per product")
    async def report(self, slug: web.Slug, read_conn: web.ReadConn, principal: web.Caller,
                     date_from: DateFrom, date_to: DateTo) -> Report:
        return await service.report(read_conn, principal, _slug(slug), date_from, date_to)

    @get("/report.csv", operation_id="GetTransitReportCsv", media_type="text/csv", summary="The report as CSV")
    async def report_csv(self, slug: web.Slug, read_conn: web.ReadConn, principal: web.Caller,
                         date_from: DateFrom, date_to: DateTo) -> Response[str]:
        view = await service.report(read_conn, principal, _slug(slug), date_from, date_to)
        name = f"transit-{slug}-{date_from.isoformat()}-{date_to.isoformat()}.csv"
        return Response(service.report_csv(view), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @get("/flags", operation_id="ListTransitFlags", summary="What reconciliation flagged")
    async def flags(self, slug: web.Slug, conn: web.Conn, principal: web.Caller,
                    limit: web.Limit = 50) -> FlagList:
        return FlagList(flags=await service.flags(conn, principal, _slug(slug), limit))


def _qr(code: bytes) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    qr.add_data(code, optimize=0)
    qr.make(fit=True)
    return qr


class ValidatorController(Controller):
    path = "/v1/transit/validator"
    tags = ["Transit"]
    guards = [guards.authenticated]

    @post("/check", operation_id="CheckTransitCode", status_code=200, identity_level=1,
          summary="An online gate's check: accepted, or refused with a reason code (each code once, fleet-wide)")
    async def check(self, data: JSONBody[CheckRequest], request: Request) -> CheckResult:
        # The hottest route a machine calls: the caller (the controller's guard made sure there is one) and the
        # app's state straight from the request, not as a dependency and a `state: State` parameter (a new State
        # object and a dependency batch per request).
        principal = guards.principal_of(request)
        state = request.app.state
        return await service.check_online(state.pool, state.redis, service.ring_of(state), principal, data.code,
                                          data.route_id, data.vehicle, config.of(state.settings),
                                          state.identity.revoked)

    @get("/sync", operation_id="SyncTransitValidator", identity_level=1,
         summary="Issuer keys, deny-lists (tickets, devices), fare products and routes of the validator's operator")
    async def sync(self, conn: web.Conn, principal: web.Caller, state: State) -> SyncView:
        return await service.sync(conn, service.ring_of(state), principal, config.of(state.settings))

    @post("/taps", operation_id="UploadTransitTaps", status_code=200, dependencies=web.IDEMPOTENT, identity_level=1,
          summary="A batch of offline taps; a tap id counts once, forever; reconciliation flags what cannot be")
    async def taps(self, data: JSONBody[TapBatch], tx: web.Tx, principal: web.Caller, state: State) -> TapReceipt:
        return await service.upload_taps(tx, principal, data, config.of(state.settings))


class AdminController(Controller):
    path = "/v1/transit/admin"
    tags = ["Transit"]
    guards = [admin]

    @post("/keys/rotate", operation_id="RotateTransitIssuerKey", status_code=200, dependencies=web.IDEMPOTENT,
          summary="A new issuer key signs from now; the old ones verify for the overlap")
    async def rotate(self, tx: web.Tx, state: State) -> KeyRotation:
        key_id, retired = await service.rotate(tx, service.ring_of(state), config.of(state.settings))
        return KeyRotation(key_id=key_id, retired=retired)


ROUTERS = [FaresController, RiderController, OperatorController, ValidatorController, AdminController]
