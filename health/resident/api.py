"""The resident's health endpoints and the display app's: HTTP only; the rules are in service.py.

Residents: identity level 2, signed in within the last 15 minutes, their own record only. Display apps: machine
clients holding `health_display`, and only for residents who granted that app.
"""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from app import web
from app.identity import guards
from health import config, fhir
from health.crypto import cipher_of
from health.models import FHIR_JSON, FhirResource
from health.resident import service
from health.resident.models import AppGrant, AppGrantCreate, AppGrantList, DisplayRequest, Summary, Timeline

MAX_AUTH_AGE = 15 * 60
Cursor = web.cursor_parameter(*service.TIMELINE_CURSOR)
PRIVATE = {"Cache-Control": "no-store"}  # health data: never kept by a cache on the way


def _document(body: dict) -> Response[bytes]:
    return Response(fhir.dumps(body), media_type=FHIR_JSON, headers=PRIVATE)


_DOCUMENT_SPEC = {200: ResponseSpec(data_container=FhirResource, media_type=FHIR_JSON,
                                    description="a FHIR document Bundle: Composition (LOINC 60591-5), Patient, "
                                                "and every resource its sections list")}


class MyHealthController(Controller):
    path = "/v1/health"
    tags = ["Health"]
    guards = [guards.resident, guards.level(2, max_auth_age=MAX_AUTH_AGE)]

    @get("/summary", operation_id="MyHealthSummary",
         summary="My patient summary (IPS sections: allergies, problems, medications, immunizations, results, "
                 "recent visits); an empty section says why")
    async def summary(self, tx: web.Tx, principal: web.Caller, language: web.Lang, state: State) -> Response[Summary]:
        result = await service.my_summary(tx, cipher_of(state.settings), principal, language)
        return Response(result, headers=PRIVATE)

    @get("/summary/document", operation_id="MyHealthSummaryDocument",
         summary="My patient summary as a FHIR document Bundle (International Patient Summary)",
         responses=_DOCUMENT_SPEC)
    async def document(self, tx: web.Tx, principal: web.Caller, language: web.Lang, state: State) -> Response[bytes]:
        return _document(await service.my_document(tx, cipher_of(state.settings), principal, language,
                                                   state.settings.base_url()))

    @get("/timeline", operation_id="MyHealthTimeline",
         summary="Everything in my record, newest first (cursor paging)")
    async def timeline(self, tx: web.Tx, principal: web.Caller, state: State, cursor: Cursor = None,
                       limit: web.Limit = 30) -> Response[Timeline]:
        result = await service.my_timeline(tx, cipher_of(state.settings), principal, cursor=cursor, limit=limit)
        return Response(result, headers=PRIVATE)

    @get("/visits/{encounter_id:str}/summary.pdf", operation_id="MyHealthVisitPdf",
         summary="One visit's summary as a PDF (Vietnamese, or English with Accept-Language: en)",
         responses={200: ResponseSpec(data_container=bytes, media_type="application/pdf",
                                      description="the visit summary")})
    async def visit_pdf(self, encounter_id: web.UUIDPath, tx: web.Tx, principal: web.Caller, language: web.Lang,
                        state: State) -> Response[bytes]:
        body, start = await service.my_visit_pdf(tx, cipher_of(state.settings), principal, encounter_id, language)
        day = web.local(start).date().isoformat() if start else "visit"
        return Response(body, media_type="application/pdf",
                        headers=PRIVATE | {"Content-Disposition": f'attachment; filename="kham-benh-{day}.pdf"'})

    @get("/apps", operation_id="MyHealthApps", summary="Apps I let read my health summary, with past grants")
    async def apps(self, conn: web.Conn, principal: web.Caller) -> AppGrantList:
        return AppGrantList(items=await service.my_apps(conn, principal))

    @post("/apps", operation_id="GrantHealthApp", dependencies=web.IDEMPOTENT, status_code=201,
          summary="Let an app (the VNeID display) read my health summary for a number of days")
    async def grant(self, data: JSONBody[AppGrantCreate], tx: web.Tx, principal: web.Caller,
                    state: State) -> AppGrant:
        return await service.grant_app(tx, cipher_of(state.settings), principal, data,
                                       max_days=config.of(state.settings).display_grant_max_days)

    @post("/apps/{client_id:str}/revoke", operation_id="RevokeHealthApp", status_code=200,
          summary="Stop an app reading my health summary, at once")
    async def revoke(self, client_id: FromPath[str], tx: web.Tx, principal: web.Caller) -> AppGrant:
        return await service.revoke_app(tx, principal, client_id)


class DisplayController(Controller):
    """The VNeID display (a machine client with `health_display`): a resident's summary, if they granted it."""

    path = "/v1/health/display"
    tags = ["Health"]
    guards = [guards.role(service.DISPLAY_ROLE)]

    @post("/summary", operation_id="DisplayHealthSummary", status_code=200,
          summary="A resident's patient summary, for an app the resident granted (404 otherwise)")
    async def summary(self, data: JSONBody[DisplayRequest], tx: web.Tx, principal: web.Caller, language: web.Lang,
                      state: State) -> Response[Summary]:
        result = await service.display_summary(state.identity, tx, cipher_of(state.settings), principal,
                                               data.personal_id, language)
        return Response(result, headers=PRIVATE)

    @post("/summary/document", operation_id="DisplayHealthSummaryDocument", status_code=200,
          summary="The same as a FHIR document Bundle", responses=_DOCUMENT_SPEC)
    async def document(self, data: JSONBody[DisplayRequest], tx: web.Tx, principal: web.Caller, language: web.Lang,
                       state: State) -> Response[bytes]:
        return _document(await service.display_document(state.identity, tx, cipher_of(state.settings), principal,
                                                        data.personal_id, language, state.settings.base_url()))


ROUTERS = [MyHealthController, DisplayController]
