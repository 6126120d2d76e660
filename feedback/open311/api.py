"""Open311 GeoReport v2 over HTTP at /open311/v2: each resource as `.json`, `.xml` or without a suffix (JSON),
errors as Open311's array in the format asked for, and the admin endpoints that issue api keys. The
translation is service.py's."""

from __future__ import annotations

import functools
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Controller, Request, Response, delete, get, post, route
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, JSONBody

from app import idempotency, web
from app.errors import InvalidInput, NotAuthenticated, NotFound, handle_exception
from app.identity import guards
from app.identity.units import load_units
from feedback.api import DEPENDENCIES, Context
from feedback.context import utcnow
from feedback.open311 import service
from feedback.open311.models import (
    ClientCreate,
    ClientKey,
    ClientRevoked,
    Discovery,
    Open311Error,
    RequestCreated,
    Service,
    ServiceDefinition,
    ServiceRequest,
)
from feedback.open311.service import MAX_DAYS, MAX_ROWS, OPEN311_NAMES, PREFIX
from feedback.places import HANOI_LAT, HANOI_LNG

# Litestar adds "; charset=utf-8" to text/* types itself.
MEDIA_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml"}


# ---- formats -------------------------------------------------------------------------------------------------


def split_format(name: str) -> tuple[str, str]:
    """'requests.xml' -> ('requests', 'xml'); no suffix is JSON; another suffix is a 400."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return name, "json"
    if ext.lower() not in MEDIA_TYPES:
        raise InvalidInput.field("format", f"unknown format .{ext}: use .json or .xml", source="path")
    return stem, ext.lower()


def format_of(path: str) -> str:
    return "xml" if path.rsplit("/", 1)[-1].lower().endswith(".xml") else "json"


# list element -> the tag of each item, as the spec's XML names them
_ITEM_TAGS = {"services": "service", "service_requests": "request", "endpoints": "endpoint", "formats": "format",
              "attributes": "attribute", "values": "value", "errors": "error"}
# characters XML 1.0 cannot carry at all, even escaped
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _element(tag: str, value: Any) -> ET.Element:
    element = ET.Element(tag)
    if isinstance(value, dict):
        for key, item in value.items():
            element.append(_element(key, item))
    elif isinstance(value, list):
        for item in value:
            element.append(_element(_ITEM_TAGS[tag], item))
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = _NOT_XML.sub("", str(value))
    return element


def render(fmt: str, root: str, value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
           ) -> Response[Any]:
    """JSON is the Spark-convention mapping of the XML: the root's list or object itself. The handlers declare
    the JSON's type (Response[Struct]), which is what the OpenAPI document shows."""
    if fmt == "xml":
        content = ('<?xml version="1.0" encoding="utf-8"?>\n'
                   + ET.tostring(_element(root, msgspec.to_builtins(value)), encoding="unicode")).encode()
    else:
        content = msgspec.json.encode(value)
    return Response(content=content, status_code=status, media_type=MEDIA_TYPES[fmt], headers=dict(headers or {}))


def open311_error(request: Request, exc: Exception) -> Response:
    """Any error on these routes as Open311's error array, in the format the path asked for, with the HTTP status
    the body's code says."""
    problem_response = handle_exception(request, exc)
    problem = msgspec.json.decode(problem_response.content)
    status = problem["status"]
    if problem.get("errors"):
        descriptions = [f"{OPEN311_NAMES.get(e['field'], e['field'])}: {e['message']}" for e in problem["errors"]]
    else:
        descriptions = [problem.get("detail") or problem["title"]]
    headers = {k: v for k, v in problem_response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    found = [Open311Error(code=status, description=d) for d in descriptions]
    return render(format_of(request.url.path), "errors", found, status=status, headers=headers)


async def _form(request: Request) -> dict[str, str]:
    """The posted fields: form-urlencoded as the spec says (whatever the Content-Type), or multipart."""
    content_type, _ = request.content_type
    if content_type == "multipart/form-data":
        form = await request.form()
        return {k: v for k, v in form.multi_items() if isinstance(v, str)}
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise InvalidInput.field("$", "the form must be UTF-8 (application/x-www-form-urlencoded)") from None
    return dict(parse_qsl(text, keep_blank_values=True))


# ---- HTTP ------------------------------------------------------------------------------------------------------


def _paths(resource: str) -> list[str]:
    return [f"/{resource}", f"/{resource}.json", f"/{resource}.xml"]


def _operation(base: str) -> Callable[..., str]:
    """One operation id per path of a handler: Open311Services, Open311ServicesJson, Open311ServicesXml."""

    def create(_handler: Any, _method: Any, components: list[Any]) -> str:
        last = components[-1] if components else ""
        return base + (last.rpartition(".")[2].capitalize() if isinstance(last, str) and "." in last else "")

    return create


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    """Open311's error array, as the document shows it (the kernel's problem answers do not apply here)."""
    return {status: ResponseSpec(data_container=list[Open311Error], generate_examples=False,
                                 description=_ERROR_DESCRIPTIONS[status]) for status in statuses}


_ERROR_DESCRIPTIONS = {
    400: "Open311 errors: a bad parameter or field",
    401: "Open311 errors: the resident's access token is missing or not valid",
    403: "Open311 errors: the api_key is missing or not valid",
    404: "Open311 errors: no such service or request",
    422: "Open311 errors: a well-formed request that cannot be done (no ward near enough to lat/long)",
    500: "Open311 errors: internal error",
    503: "Open311 errors: a dependency is unavailable; retry later",
}
READ_ERRORS = _errors(400, 404, 500, 503)


_TEXT = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # what a person may write (web.HumanText)
_WORD = r"[^\s\x00-\x1f\x7f]"
# The form POST requests reads itself (in the order its description gives), as the document shows it; the ward
# codes are the directory's wards and communes (as the service definitions list them).
@functools.lru_cache(maxsize=4)
def _request_form(units_file: str | None) -> Schema:
    units = load_units(Path(units_file) if units_file else None)
    wards = sorted(u.code for u in units if u.kind in ("ward", "commune"))
    return Schema(
    type=OpenAPIType.OBJECT, required=["api_key", "service_code", "lat", "long", "description"],
    properties={
        "api_key": Schema(type=OpenAPIType.STRING, pattern=f"^{_WORD}{{1,200}}$",
                          description="the client application's key"),
        "service_code": Schema(type=OpenAPIType.STRING, pattern=f"^{_WORD}{{1,41}}$",
                               description="a service_code of GET services"),
        "lat": Schema(type=OpenAPIType.NUMBER, minimum=HANOI_LAT[0], maximum=HANOI_LAT[1],
                      description="WGS84 latitude, in Hanoi"),
        "long": Schema(type=OpenAPIType.NUMBER, minimum=HANOI_LNG[0], maximum=HANOI_LNG[1],
                       description="WGS84 longitude, in Hanoi"),
        "description": Schema(type=OpenAPIType.STRING, min_length=10, max_length=4000,
                              pattern=f"^{_WORD}(?:{_TEXT}*{_WORD})?$",
                              description="the problem, at least 10 characters (trimmed)"),
        "address_string": Schema(type=OpenAPIType.STRING, max_length=300, pattern=f"^{_TEXT}*$"),
        f"attribute[{service.WARD}]": Schema(
            type=OpenAPIType.STRING, enum=wards,
            description="a ward or commune code of the service definition; derived from lat/long when left out"),
    })


def request_form(settings) -> Schema:
    return _request_form(getattr(settings, "units_file", None))


REQUESTS_QUERY = (
    "Query: service_request_id (comma list; overrides the rest), service_code (comma list), start_date and "
    f"end_date (W3C date-times, at most {MAX_DAYS} days apart; default the last {MAX_DAYS} days), status (open, "
    f"closed or both), page and page_size (at most {MAX_ROWS}, the default)."
)


class Open311Controller(Controller):
    path = PREFIX
    tags = ["Open311 GeoReport v2"]
    exception_handlers = {Exception: open311_error}
    dependencies = DEPENDENCIES
    opt = {"problem_responses": False}  # errors are Open311's array (open311_error), documented per route

    @get(_paths("discovery"), operation_id=_operation("Open311Discovery"), summary="Open311 service discovery",
         responses=_errors(400, 500, 503))
    async def get_discovery(self, request: Request, state: State, ctx: Context) -> Response[Discovery]:
        return render(format_of(request.url.path), "discovery", service.discovery(ctx, state.settings))

    @get(_paths("services"), operation_id=_operation("Open311Services"),
         summary="One service per active feedback category", responses=_errors(400, 500, 503))
    async def list_services(self, request: Request, read_conn: web.ReadConn, ctx: Context) -> Response[list[Service]]:
        return render(format_of(request.url.path), "services", await service.services(read_conn, ctx))

    @get("/services/{name:str}", operation_id="Open311ServiceDefinition",
         summary="A service's definition: the required ward attribute and its values ({code}.json or .xml)",
         responses=READ_ERRORS)
    async def get_service_definition(self, name: FromPath[str], read_conn: web.ReadConn,
                                     ctx: Context) -> Response[ServiceDefinition]:
        code, fmt = split_format(name)
        return render(fmt, "service_definition", await service.service_definition(read_conn, ctx, code))

    @get(_paths("requests"), operation_id=_operation("Open311Requests"),
         summary="Public requests, newest first", description=REQUESTS_QUERY, responses=READ_ERRORS)
    async def list_requests(self, request: Request, state: State, read_conn: web.ReadConn,
                            ctx: Context) -> Response[list[ServiceRequest]]:
        query = service.parse_query(request.query_params, utcnow())
        found = await service.find_requests(read_conn, ctx, query, base_url=state.settings.base_url())
        return render(format_of(request.url.path), "service_requests", found)

    @get("/requests/{name:str}", operation_id="Open311Request", summary="One public request ({id}.json or .xml)",
         responses=READ_ERRORS)
    async def get_one_request(self, name: FromPath[str], state: State, read_conn: web.ReadConn,
                              ctx: Context) -> Response[list[ServiceRequest]]:
        request_id, fmt = split_format(name)
        found = await service.get_request(read_conn, ctx, request_id, base_url=state.settings.base_url())
        return render(fmt, "service_requests", found)

    @post(_paths("requests"), operation_id=_operation("Open311CreateRequest"), status_code=200,
          summary="Send a report for a resident: the client's api_key and the resident's bearer token",
          description="Form fields: api_key, service_code, lat, long, description, address_string, and "
                      "attribute[ward] unless lat/long tell it. media_url, names, email and phone are ignored. "
                      "Checked in this order: the api_key is sent (403), a bearer token is sent (401), the fields "
                      "and headers (400), the api_key is a client's (403), the resident's token is valid (401), "
                      "the service_code exists (404).",
          security=[{"bearer": []}], responses=_errors(400, 401, 403, 404, 422, 500, 503),
          # the token is checked after the api key and the fields (guards.authenticate)
          opt={"bearer": "deferred", "form": request_form})
    async def create_request(self, request: Request, tx: web.Tx, ctx: Context) -> Response[list[RequestCreated]]:
        fields = await _form(request)
        api_key = service.require_key(fields.get("api_key") or request.query_params.get("api_key"))
        if not request.headers.get("authorization"):  # no resident at all: nothing else to check
            raise NotAuthenticated("send the resident's access token: Authorization: Bearer <token>",
                                   headers={"WWW-Authenticate": 'Bearer realm="ihanoi"'})
        body = service.report_body(ctx, fields)
        # Open311 answers (XML or JSON) are not the kernel's to replay: the report's own key makes a retry with the
        # same Idempotency-Key answer the first report (service.submit).
        retry_key = idempotency.key_of(request)
        client = await service.client_for_key(tx, api_key)
        resident = await guards.authenticate(request)
        answer = await service.submit_request(tx, ctx, resident, client, body,
                                              media_url=bool((fields.get("media_url") or "").strip()),
                                              idempotency_key=retry_key)
        return render(format_of(request.url.path), "service_requests", answer)

    @get("/tokens/{name:str}", include_in_schema=False)
    async def get_token(self, name: FromPath[str]) -> Response:
        split_format(name)
        raise NotFound("no such token: every service is realtime, POST requests answers the service_request_id")

    @route("/{name:str}", http_method=["GET", "POST"], include_in_schema=False)
    async def unknown(self, name: FromPath[str]) -> Response:
        stem, _ = split_format(name)
        raise NotFound(f"no Open311 resource {stem!r}: discovery, services, requests")


class Open311ClientsController(Controller):
    path = "/v1/feedback/open311-clients"
    tags = ["Feedback: admin"]
    guards = [guards.resident, guards.role("admin"), guards.level(2)]

    @post("/", operation_id="CreateOpen311Client", status_code=201,
          summary="Register an Open311 client application; its api_key is shown only in this answer")
    async def create(self, data: JSONBody[ClientCreate], tx: web.Tx, principal: web.Caller) -> ClientKey:
        return await service.create_client(tx, data.name, created_by=uuid.UUID(principal.sub))

    @delete("/{name:str}", operation_id="RevokeOpen311Client", status_code=200,
            summary="Revoke every active api_key of an Open311 client")
    async def revoke(self, name: FromPath[str], tx: web.Tx, principal: web.Caller) -> ClientRevoked:
        revoked = await service.revoke_client(tx, name, revoked_by=uuid.UUID(principal.sub))
        return ClientRevoked(name=name, revoked=revoked)


ROUTERS = [Open311Controller, Open311ClientsController]
