"""Health endpoints: HTTP only; every rule is in service.py (FHIR validation in fhir.py).

- `/fhir`: FHIR R4 for facility systems (machine clients holding `health_facility:<code>`) and clinicians
  (`health_clinician:<code>`): transaction Bundles, read, search, `Patient/{id}/$everything`, the
  CapabilityStatement, and the resident's own access log as AuditEvent. Answers and errors are
  `application/fhir+json`; every error is an OperationOutcome naming the path of each problem.
- `/v1/health`: the resident's consents, share codes and access log (level 2, signed in within 15 minutes);
  facilities redeem share codes and open emergency access; the city registers facilities.
"""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, JSONBody

from app import openapi, web
from app.errors import handle_exception
from app.identity import guards
from health import config, fhir, service
from health.crypto import cipher_of
from health.fhir import FhirError, Issue
from health.models import (
    FHIR_JSON,
    AccessLog,
    ClinicianList,
    Consent,
    ConsentCreate,
    ConsentList,
    EmergencyAccess,
    EmergencyCreate,
    Facility,
    FacilityCreate,
    FacilityList,
    FhirResource,
    ShareCode,
    ShareCodeCreate,
    ShareCodeRedeem,
    ShareRedeemed,
)

AccessCursor = web.cursor_parameter(int)  # the access log's sequence number
_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                409: "conflict", 410: "deleted", 413: "too-costly", 415: "not-supported", 422: "processing",
                429: "throttled"}


def fhir_response(body: dict, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(fhir.dumps(body), status_code=status_code, media_type=FHIR_JSON, headers=headers or {})


def fhir_errors(request: Request, exc: Exception) -> Response[bytes]:
    """Every error of a FHIR route as an OperationOutcome (the kernel's problem, translated)."""
    if isinstance(exc, FhirError):
        return fhir_response(fhir.outcome(exc.issues), exc.status, exc.headers)
    problem = handle_exception(request, exc)
    import msgspec

    body = msgspec.json.decode(problem.content)
    status = problem.status_code
    code = _ISSUE_CODES.get(status, "exception")
    details = {"coding": [{"system": "urn:ihanoi:problem", "code": body["type"].rpartition(":")[2]}],
               "text": body.get("title")}
    issues = [Issue(diagnostics=e["message"], expression=[e["field"]], code=code) for e in body.get("errors") or []]
    issues = issues or [Issue(diagnostics=body.get("detail") or body.get("title") or "error", code=code)]
    outcome = fhir.outcome(issues)
    for issue in outcome["issue"]:
        issue["details"] = details
    return fhir_response(outcome, status, dict(problem.headers))


def _transaction_body(settings) -> dict[str, Schema]:
    """What POST /fhir reads: a transaction Bundle (each entry's resource is checked by FHIR's rules: 422)."""
    limits = config.of(settings)
    text = Schema(type=OpenAPIType.STRING, min_length=1, max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")
    free = {"property_names": openapi.NAME, "additional_properties": openapi.JSON_VALUE}  # FHIR's other fields
    entry = Schema(type=OpenAPIType.OBJECT, required=["resource", "request"], **free, properties={
        "fullUrl": text,
        "resource": Schema(type=OpenAPIType.OBJECT, required=["resourceType"], **free, properties={
                               "resourceType": Schema(type=OpenAPIType.STRING, pattern=r"^[A-Z][A-Za-z]{1,63}$")},
                           description="a FHIR R4 resource (Patient, Encounter, Observation, ...)"),
        "request": Schema(type=OpenAPIType.OBJECT, required=["method", "url"], **free, properties={
            "method": Schema(type=OpenAPIType.STRING, enum=["POST", "PUT"]), "url": text}),
    })
    bundle = Schema(type=OpenAPIType.OBJECT, required=["resourceType", "type", "entry"], **free, properties={
        "resourceType": Schema(type=OpenAPIType.STRING, enum=["Bundle"]),
        "type": Schema(type=OpenAPIType.STRING, enum=["transaction"]),
        "entry": Schema(type=OpenAPIType.ARRAY, items=entry, min_items=1, max_items=limits.max_bundle_entries),
    }, description=f"a FHIR R4 transaction Bundle, at most {limits.max_bundle_bytes} bytes")
    return {FHIR_JSON: bundle, "application/json": bundle}


def _spec(description: str, status: int = 200) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(data_container=FhirResource, media_type=FHIR_JSON, description=description)}


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    return params


def _base(state: State) -> str:
    return state.settings.base_url() + "/fhir"


async def _actor(conn, request: Request):
    return await service.actor_of(conn, request.user, request.headers.get("x-facility"))


class FhirController(Controller):
    path = "/fhir"
    tags = ["Health FHIR"]
    exception_handlers = {Exception: fhir_errors}
    # every error is an OperationOutcome in FHIR's media type (fhir_errors), and the document says so
    opt = {"error_media_type": FHIR_JSON, "error_container": FhirResource}

    @get("/metadata", operation_id="FhirCapabilityStatement", opt={"identity_level": 1},
         summary="The FHIR R4 CapabilityStatement of this server", responses=_spec("a CapabilityStatement"))
    async def metadata(self) -> Response[bytes]:
        return fhir_response(fhir.capability_statement())

    @post("/", operation_id="FhirTransaction", guards=[guards.authenticated], status_code=200,
          summary="A transaction Bundle from a facility's system: all or nothing; a resource sent again with the "
                  "same identifier updates it", opt={"body": _transaction_body},
          responses={**_spec("a transaction-response Bundle"),
                     **{status: openapi.problem(status, FHIR_JSON, FhirResource) for status in (413, 415)}})
    async def transaction(self, request: Request, tx: web.Tx, state: State) -> Response[bytes]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in (FHIR_JSON, "application/json"):
            raise FhirError.one(415, "send application/fhir+json", code="not-supported")
        actor = await _actor(tx, request)
        body = await request.body()
        result = await service.transaction(tx, state.identity, cipher_of(state.settings), config.of(state.settings),
                                           actor, body, _base(state))
        return fhir_response(result)

    @get("/AuditEvent", operation_id="FhirAuditEvents", guards=[guards.authenticated],
         summary="The resident's access log as AuditEvents (the resident only, signed in within 15 minutes)",
         responses=_spec("a searchset Bundle of AuditEvent"))
    async def audit_events(self, request: Request, tx: web.Tx, state: State) -> Response[bytes]:
        actor = await _actor(tx, request)
        if actor.resident_id is not None:
            service.identity.require_level(request.user, 2, service.RESIDENT_AUTH_AGE)
        return fhir_response(await service.audit_events(tx, actor, _params(request), _base(state),
                                                        config.of(state.settings)))

    # `Patient/{id}/$everything`, routed by parameter: a static "Patient" segment would hide `/fhir/Patient`
    @get("/{resource_type:str}/{patient_id:str}/$everything", operation_id="FhirPatientEverything",
         guards=[guards.authenticated], summary="Patient/{id}/$everything: everything of one record, paged (start, "
                                                "end, _since, _type, _count)", responses=_spec("a searchset Bundle"))
    async def everything(self, resource_type: FromPath[str], patient_id: FromPath[str], request: Request, tx: web.Tx,
                         state: State) -> Response[bytes]:
        if resource_type != "Patient":
            raise FhirError.one(404, "$everything is a Patient operation", code="not-supported")
        actor = await _actor(tx, request)
        return fhir_response(await service.everything(tx, cipher_of(state.settings), config.of(state.settings),
                                                      actor, patient_id, _params(request), _base(state)))

    @get("/{resource_type:str}", operation_id="FhirSearch", guards=[guards.authenticated],
         summary="Search one patient's resources: patient, date, category, code, _lastUpdated, _count, _sort",
         responses=_spec("a searchset Bundle with a next link while more remain"))
    async def search(self, resource_type: FromPath[str], request: Request, tx: web.Tx,
                     state: State) -> Response[bytes]:
        actor = await _actor(tx, request)
        return fhir_response(await service.search(tx, state.identity, cipher_of(state.settings),
                                                  config.of(state.settings), actor, resource_type, _params(request),
                                                  _base(state)))

    @get("/{resource_type:str}/{resource_id:str}", operation_id="FhirRead", guards=[guards.authenticated],
         summary="Read one resource (with the patient's consent; logged)", responses=_spec("the resource"))
    async def read(self, resource_type: FromPath[str], resource_id: FromPath[str], request: Request, tx: web.Tx,
                   state: State) -> Response[bytes]:
        actor = await _actor(tx, request)
        resource = await service.read(tx, cipher_of(state.settings), actor, resource_type, resource_id)
        return fhir_response(resource, headers={"ETag": f'W/"{resource["meta"]["versionId"]}"',
                                                "Last-Modified": resource["meta"]["lastUpdated"]})


MaxAuthAge = guards.level(2, max_auth_age=service.RESIDENT_AUTH_AGE)


class ResidentController(Controller):
    """The resident decides who reads their record, and sees every read."""

    path = "/v1/health"
    tags = ["Health"]
    guards = [guards.resident, MaxAuthAge]

    @get("/consents", operation_id="ListHealthConsents")
    async def consents(self, tx: web.Tx, principal: web.Caller, state: State) -> ConsentList:
        return await service.list_consents(tx, cipher_of(state.settings), principal)

    @post("/consents", operation_id="GiveHealthConsent", dependencies=web.IDEMPOTENT, status_code=201,
          summary="Share the record with a facility (or one clinician of it) until a date")
    async def give(self, data: JSONBody[ConsentCreate], tx: web.Tx, principal: web.Caller, state: State) -> Consent:
        return await service.give_consent(tx, cipher_of(state.settings), config.of(state.settings), principal, data)

    @get("/facilities/{code:str}/clinicians", operation_id="ListHealthClinicians",
         summary="The clinicians of a facility, to share with one of them personally")
    async def clinicians(self, code: FromPath[str], conn: web.Conn) -> ClinicianList:
        return await service.clinicians(conn, code)

    @post("/consents/{consent_id:int}/revoke", operation_id="RevokeHealthConsent", status_code=200,
          summary="Stop sharing, from the next request on")
    async def revoke(self, consent_id: web.Id, tx: web.Tx, principal: web.Caller, state: State) -> Consent:
        return await service.revoke_consent(tx, cipher_of(state.settings), principal, consent_id)

    @post("/share-codes", operation_id="CreateHealthShareCode", status_code=201,
          summary="A short-lived code (shown as a QR) a facility redeems once at a visit")
    async def share_code(self, data: JSONBody[ShareCodeCreate], tx: web.Tx, principal: web.Caller,
                         state: State) -> ShareCode:
        return await service.create_share_code(tx, cipher_of(state.settings), config.of(state.settings), principal,
                                               data)

    @get("/access-log", operation_id="HealthAccessLog",
         summary="Who read or wrote the record, from which facility, when and why; newest first, with the chain "
                 "checked")
    async def access_log(self, tx: web.Tx, principal: web.Caller, state: State, limit: web.Limit = 50,
                         cursor: AccessCursor = None) -> AccessLog:
        return await service.access_log(tx, cipher_of(state.settings), principal, limit=limit, cursor=cursor)


class FacilityController(Controller):
    """What a facility's system or clinician does besides FHIR: redeem a share code, open an emergency access."""

    path = "/v1/health"
    tags = ["Health"]

    @post("/share-codes/redeem", operation_id="RedeemHealthShareCode", guards=[guards.authenticated],
          status_code=200, responses={429: openapi.problem(429)},
          summary="The code a resident shows: the facility may read the record for a while (failed tries are limited "
                  "per caller and address: 429)")
    async def redeem(self, data: JSONBody[ShareCodeRedeem], request: Request, tx: web.Tx,
                     state: State) -> ShareRedeemed:
        actor = await _actor(tx, request)
        return await service.redeem_share_code(tx, state.redis, cipher_of(state.settings), config.of(state.settings),
                                               actor, data, client_ip=request.client.host if request.client else
                                               "unknown")

    @post("/emergency-access", operation_id="OpenHealthEmergencyAccess", guards=[guards.authenticated],
          dependencies=web.IDEMPOTENT, status_code=201,
          summary="Break-glass: read a record without consent for a short time, with a reason; the resident is "
                  "told at once")
    async def emergency(self, data: JSONBody[EmergencyCreate], request: Request, tx: web.Tx,
                        state: State) -> EmergencyAccess:
        actor = await _actor(tx, request)
        return await service.emergency_access(tx, state.identity, cipher_of(state.settings),
                                              config.of(state.settings), actor, data)

    @get("/facilities", operation_id="ListHealthFacilities", opt={"identity_level": 1},
         summary="The facilities a resident may share their record with")
    async def facilities(self, conn: web.Conn) -> FacilityList:
        return FacilityList(items=await service.list_facilities(conn))

    @post("/facilities", operation_id="CreateHealthFacility", guards=[guards.role("health_admin")],
          dependencies=web.IDEMPOTENT, status_code=201, summary="Register a facility (health_admin)")
    async def add_facility(self, data: JSONBody[FacilityCreate], tx: web.Tx) -> Facility:
        return await service.add_facility(tx, data)


ROUTERS = [FhirController, ResidentController, FacilityController]
