"""Open311 GeoReport v2 at /open311/v2: the city's reports for existing Open311 apps and validators.

Resources (http://wiki.open311.org/GeoReport_v2), each as `.json`, `.xml` or without a suffix (JSON):
discovery, services (one per active feedback category), services/{code} (its definition), requests (public
reports only: the spec's filters plus the common page/page_size extension), requests/{id}, and POST
requests. Names come in Vietnamese, or English with `Accept-Language: en`. Every rule of a report stays in
service.py; this file translates between Open311's shapes and ours.

Decisions:
- Status: open = submitted, received, in_progress; closed = answered, closed, rejected. An answered report
  counts as closed: the unit has responded (status_notes carries the answer) and the report closes by
  itself after 7 days; if its reporter reopens it, it is open again. status_notes is the answer, the
  rejection reason, "duplicate of #n", or for an open report our finer status ("Đã tiếp nhận"...).
  updated_datetime of a closed request is when it closed (the answer's time for an answered one), as the
  spec asks; expected_datetime is the answer deadline.
- POST needs both the client's api_key (403 without a good one, as the spec says) and the resident's own
  access token (`Authorization: Bearer`, the mobile app's token: reports in Hanoi are never anonymous).
  A missing or bad token is answered 403 as well, with body code 401: Open311 clients expect 400, 403 or
  404 and read the error array of those, while a 401 is taken by many as a transport failure.
  first_name, last_name, email, phone, account_id and device_id are ignored: identity comes from VNeID.
- Every report needs its ward: each service's definition lists a required `ward` attribute (a
  singlevaluelist of the ward and commune codes), sent as `attribute[ward]=<code>`, so metadata is true.
  lat and long are required (the place must be in Hanoi); address_string becomes the address.
- media_url is not fetched (this system reaches no outside network); the service_notice says so. In GET
  answers media_url is the absolute URL of the report's first public photo.
- Reports sent this way hide the reporter's name in the app's public view (the resident chose nothing),
  and no Open311 answer ever says who reported.
- Errors are Open311's array of {code, description}, in the requested format. HTTP 404 for what does not
  exist, 403 for the api_key or the resident's token, 400 for the rest; 429 and 5xx keep their status so
  retries and monitoring work. The body code is the app's own status (409, 401...) when more specific.
  The app's one error map (app.errors.handle_exception) decides statuses and logs; this file reshapes it.
- POST answers 200, not 201: the spec names no status, and some clients check for 200.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

import asyncpg
import msgspec
from litestar import Controller, Request, Response, delete, get, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app import idempotency
from app.errors import FieldError, Forbidden, InvalidInput, NotAuthenticated, NotFound, handle_exception
from app.identity import guards
from app.identity.models import Principal
from app.settings import Settings
from feedback import api, service, store
from feedback.models import Category, ReportCreate

Conn = NamedDependency[asyncpg.Connection]
Me = NamedDependency[Principal]

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
PREFIX = "/open311/v2"
# When the shape of the service list or of the definitions last changed (discovery's changeset): bump it then.
CHANGESET = "2025-07-01T00:00:00+07:00"
MAX_DAYS = 90
MAX_ROWS = 1000
# Litestar adds "; charset=utf-8" to text/* types itself.
MEDIA_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml"}
FORMATS = ["text/xml", "application/json"]
CLOSED = ("answered", "closed", "rejected")
OPEN311_STATUS = {**{s: "open" for s in store.OPEN}, **{s: "closed" for s in CLOSED}}
WARD = "ward"
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
REQUEST_ID = re.compile(r"^[0-9]{1,18}$")
# our field names in service errors -> the Open311 parameter the client sent
OPEN311_FIELDS = {"category": "service_code", "latitude": "lat", "longitude": "long", "ward": f"attribute[{WARD}]",
                  "address": "address_string"}


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
           ) -> Response:
    """JSON is the Spark-convention mapping of the XML: the root's list or object itself."""
    if fmt == "xml":
        content = ('<?xml version="1.0" encoding="utf-8"?>\n'
                   + ET.tostring(_element(root, value), encoding="unicode")).encode()
    else:
        content = msgspec.json.encode(value)
    return Response(content=content, status_code=status, media_type=MEDIA_TYPES[fmt], headers=dict(headers or {}))


def open311_error(request: Request, exc: Exception) -> Response:
    """Any error on these routes as Open311's error array, in the format the path asked for."""
    problem_response = handle_exception(request, exc)
    problem = msgspec.json.decode(problem_response.content)
    status = problem["status"]
    if problem.get("errors"):
        descriptions = [f"{OPEN311_FIELDS.get(e['field'], e['field'])}: {e['message']}" for e in problem["errors"]]
    else:
        descriptions = [problem.get("detail") or problem["title"]]
    if status == 401:
        http = 403
    elif status in (403, 404, 429) or status >= 500:
        http = status
    else:
        http = 400
    headers = {k: v for k, v in problem_response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    return render(format_of(request.url.path), "errors", [{"code": status, "description": d} for d in descriptions],
                  status=http, headers=headers)


def w3c(moment: dt.datetime) -> str:
    return service.local(moment).replace(microsecond=0).isoformat()


# ---- api keys ------------------------------------------------------------------------------------------------


class ClientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # a slug: reports it sends carry source "open311:<name>"
    name: Annotated[str, msgspec.Meta(pattern=CLIENT_NAME.pattern)]


class ClientKey(msgspec.Struct):
    name: str
    api_key: str  # shown once; only its SHA-256 is kept


class ClientRevoked(msgspec.Struct):
    name: str
    revoked: int  # how many active keys were revoked


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def create_client(conn: asyncpg.Connection, name: str, *, created_by: uuid.UUID | None = None) -> ClientKey:
    if not CLIENT_NAME.match(name):
        raise InvalidInput.field("name", "2-63 characters: lowercase letters, digits, '.', '_' or '-'")
    api_key = "o311_" + secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO open311_client (name, key_sha256, created_by) VALUES ($1, $2, $3)",
                       name, _digest(api_key), created_by)
    return ClientKey(name=name, api_key=api_key)


async def revoke_client(conn: asyncpg.Connection, name: str, *, revoked_by: uuid.UUID | None = None) -> int:
    result = await conn.execute(
        "UPDATE open311_client SET revoked_at = now(), revoked_by = $2 WHERE name = $1 AND revoked_at IS NULL",
        name, revoked_by)
    revoked = int(result.split()[-1])
    if not revoked:
        raise NotFound(f"no Open311 client {name!r} with an active key")
    return revoked


async def client_for_key(conn: asyncpg.Connection, api_key: str | None) -> str:
    """The name of the client holding this key; 403 for a missing, unknown or revoked key."""
    if not api_key:
        raise Forbidden("api_key missing: creating a request needs the api_key the city's iHaNoi administrators "
                        "gave your application")
    name = await conn.fetchval("SELECT name FROM open311_client WHERE key_sha256 = $1 AND revoked_at IS NULL",
                               _digest(api_key))
    if name is None:
        raise Forbidden("api_key not valid (unknown or revoked): can't create the request")
    return name


# ---- discovery and services -----------------------------------------------------------------------------------


def discovery(ctx: service.Ctx, settings: Settings) -> dict[str, Any]:
    base = settings.base_url()
    return {
        "changeset": CHANGESET,
        "contact": ctx.pick((f"iHaNoi, Thành phố Hà Nội: {base}; tổng đài 1022 (nhánh 8)",
                             f"iHaNoi, City of Hanoi: {base}; hotline 1022 (branch 8)")),
        "key_service": ctx.pick((
            "api_key do quản trị viên iHaNoi của Thành phố cấp cho từng ứng dụng. Mỗi phản ánh gửi lên còn cần "
            "access token của chính người dân (Authorization: Bearer ...), đăng nhập bằng VNeID.",
            "The city's iHaNoi administrators issue one api_key per application. Each request sent also needs "
            "the resident's own access token (Authorization: Bearer ...), signed in with VNeID.")),
        "endpoints": [{
            "specification": SPECIFICATION,
            "url": base + PREFIX,
            "changeset": CHANGESET,
            "type": "production" if settings.env == "prod" else "test",
            "formats": list(FORMATS),
        }],
    }


def _service(category: Category, ctx: service.Ctx) -> dict[str, Any]:
    times = ctx.pick((
        f"Tiếp nhận trong {category.receive_hours} giờ làm việc, trả lời trong {category.answer_hours} giờ làm việc.",
        f"Received within {category.receive_hours} working hours, answered within {category.answer_hours} "
        "working hours."))
    if category.default_unit == "ward":
        group = ctx.pick(("Phường, xã nơi xảy ra sự việc", "The ward or commune of the place"))
    else:
        group = ctx.unit(category.default_unit).name
    return {"service_code": category.code, "service_name": category.name,
            "description": f"{category.description} {times}" if category.description else times,
            "metadata": True, "type": "realtime", "keywords": category.keywords, "group": group}


async def services(conn: asyncpg.Connection, ctx: service.Ctx) -> list[dict[str, Any]]:
    return [_service(c, ctx) for c in await service.list_categories(conn, ctx)]


async def service_definition(conn: asyncpg.Connection, ctx: service.Ctx, code: str) -> dict[str, Any]:
    try:
        category = await service.get_category(conn, ctx, code)
    except NotFound:
        raise NotFound(f"service_code {code!r} not found; see GET {PREFIX}/services.json") from None
    english = ctx.language == "en"
    wards = [{"key": u.code, "name": u.name_en if english else u.name_vi}
             for u in ctx.units if u.kind in ("ward", "commune")]
    return {"service_code": category.code, "attributes": [{
        "variable": True, "code": WARD, "datatype": "singlevaluelist", "required": True,
        "datatype_description": ctx.pick(("Mã phường, xã: một trong các key dưới đây",
                                          "A ward or commune code: one of the keys below")),
        "order": 1,
        "description": ctx.pick(("Phường, xã nơi xảy ra sự việc", "The ward or commune where the problem is")),
        "values": wards,
    }]}


# ---- requests --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    ids: list[int] | None = None  # overrides every other filter
    codes: list[str] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    statuses: list[str] | None = None  # our statuses
    page: int = 1
    page_size: int = MAX_ROWS


def _values(params: Any, key: str) -> list[str]:
    """Comma lists, and the same parameter given several times; empty means absent (the spec's rule)."""
    raw = params.getall(key, []) if hasattr(params, "getall") else [params.get(key) or ""]
    return [v.strip() for item in raw for v in str(item).split(",") if v.strip()]


def _integer(params: Any, key: str, default: int, low: int, high: int) -> int:
    values = _values(params, key)
    if not values:
        return default
    if len(values) > 1 or not REQUEST_ID.match(values[0]) or not low <= int(values[0]) <= high:
        raise InvalidInput.field(key, f"a whole number from {low} to {high}", source="query")
    return int(values[0])


def _moment(params: Any, key: str) -> dt.datetime | None:
    values = _values(params, key)
    if not values:
        return None
    # an unencoded '+' of "+07:00" arrives as a space
    text = re.sub(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$", r"\1+\2", values[0])
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput.field(key, "a W3C date and time such as 2025-07-01T00:00:00+07:00", source="query") \
            from None
    # the spec asks for a zone; a time without one is read as Hanoi time
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=service.LOCAL_TZ)


def parse_query(params: Any, now: dt.datetime) -> Query:
    page = _integer(params, "page", 1, 1, 1_000_000)
    page_size = _integer(params, "page_size", MAX_ROWS, 1, MAX_ROWS)
    ids = _values(params, "service_request_id")
    if ids:
        if not all(REQUEST_ID.match(i) for i in ids) or len(ids) > MAX_ROWS:
            raise InvalidInput.field("service_request_id", f"up to {MAX_ROWS} request ids, comma-separated",
                                     source="query")
        return Query(ids=[int(i) for i in ids], page=page, page_size=page_size)
    window = dt.timedelta(days=MAX_DAYS)
    start, end = _moment(params, "start_date"), _moment(params, "end_date")
    if start is None and end is None:
        start, end = now - window, now
    elif start is None:
        start = end - window
    elif end is None:
        end = start + window
    elif end < start:
        raise InvalidInput.field("end_date", "must not be before start_date", source="query")
    elif end - start > window:
        raise InvalidInput.field("end_date", f"at most {MAX_DAYS} days after start_date", source="query")
    statuses: list[str] = []
    for value in _values(params, "status"):
        if value.lower() not in ("open", "closed"):
            raise InvalidInput.field("status", "open or closed (comma-separated for both)", source="query")
        statuses.extend(store.OPEN if value.lower() == "open" else CLOSED)
    return Query(codes=_values(params, "service_code") or None, start=start, end=end,
                 statuses=sorted(set(statuses)) or None, page=page, page_size=page_size)


_REQUEST_COLUMNS = """
    r.id, r.status, r.category_code, c.name_vi AS category_vi, c.name_en AS category_en, r.description,
    r.unit_code, r.address, r.latitude, r.longitude, r.submitted_at, r.updated_at, r.answer_due_at,
    r.answered_at, r.closed_at, r.answer_text, r.duplicate_of,
    CASE WHEN r.status = 'rejected' THEN
        (SELECT e.message FROM report_event e
          WHERE e.report_id = r.id AND e.kind = 'rejected' AND e.public ORDER BY e.id DESC LIMIT 1)
    END AS rejection,
    (SELECT p.id FROM report_photo p WHERE p.report_id = r.id AND p.event_id IS NULL AND p.public
      ORDER BY p.position LIMIT 1) AS photo_id
"""


def _notes(row: asyncpg.Record, ctx: service.Ctx) -> str:
    status = row["status"]
    if row["duplicate_of"] is not None:
        return ctx.pick((f"Trùng với phản ánh #{row['duplicate_of']}", f"Duplicate of request #{row['duplicate_of']}"))
    if status == "rejected" and row["rejection"]:
        return row["rejection"]
    if status in ("answered", "closed") and row["answer_text"]:
        return row["answer_text"]
    return ctx.pick(service.STATUS_LABELS[status])


def _request(row: asyncpg.Record, ctx: service.Ctx, base_url: str) -> dict[str, Any]:
    status = row["status"]
    if status == "answered":
        updated = row["answered_at"] or row["updated_at"]
    elif status in CLOSED:
        updated = row["closed_at"] or row["updated_at"]
    else:
        updated = row["updated_at"]
    photo = row["photo_id"]
    return {
        "service_request_id": row["id"],
        "status": OPEN311_STATUS[status],
        "status_notes": _notes(row, ctx),
        "service_name": row["category_en" if ctx.language == "en" else "category_vi"],
        "service_code": row["category_code"],
        "description": row["description"],
        "agency_responsible": ctx.unit(row["unit_code"]).name,
        "service_notice": None,
        "requested_datetime": w3c(row["submitted_at"]),
        "updated_datetime": w3c(updated),
        "expected_datetime": w3c(row["answer_due_at"]),
        "address": row["address"] or None,
        "address_id": None,
        "zipcode": None,
        "lat": row["latitude"],
        "long": row["longitude"],
        "media_url": f"{base_url}{service.API_PHOTOS}/{photo}" if photo else None,
    }


async def find_requests(conn: asyncpg.Connection, ctx: service.Ctx, query: Query, *,
                        base_url: str) -> list[dict[str, Any]]:
    """Public reports only, newest first; nothing about who reported, no private photo."""
    filters = store.Filters()
    filters.add("r.visibility = 'public'")
    if query.ids is not None:
        filters.add("r.id = ANY(?::bigint[])", query.ids)
    else:
        filters.add("r.submitted_at >= ? AND r.submitted_at <= ?", query.start, query.end)
        if query.codes:
            filters.add("r.category_code = ANY(?::text[])", query.codes)
        if query.statuses:
            filters.add("r.status = ANY(?::text[])", query.statuses)
    args = [*filters.args, query.page_size, (query.page - 1) * query.page_size]
    rows = await conn.fetch(
        f"""SELECT {_REQUEST_COLUMNS} FROM report r JOIN feedback_category c ON c.code = r.category_code
             WHERE {filters.where()} ORDER BY r.submitted_at DESC, r.id DESC
             LIMIT ${len(args) - 1} OFFSET ${len(args)}""", *args)
    return [_request(row, ctx, base_url) for row in rows]


async def get_request(conn: asyncpg.Connection, ctx: service.Ctx, request_id: str, *,
                      base_url: str) -> list[dict[str, Any]]:
    found = []
    if REQUEST_ID.match(request_id):
        found = await find_requests(conn, ctx, Query(ids=[int(request_id)]), base_url=base_url)
    if not found:
        raise NotFound(f"no public request {request_id}")
    return found


def _coordinate(fields: Mapping[str, str], key: str, limit: float, errors: list[FieldError]) -> float:
    raw = (fields.get(key) or "").strip()
    if not raw:
        errors.append(FieldError(field=key, message="required: WGS84 degrees (the place must be in Hanoi)",
                                 source="body"))
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > limit:
        errors.append(FieldError(field=key, message=f"WGS84 degrees between -{limit:g} and {limit:g}", source="body"))
        return 0.0
    return value


def report_body(fields: Mapping[str, str]) -> ReportCreate:
    """The report an Open311 form asks for; every missing or malformed field at once."""
    errors: list[FieldError] = []

    def required(key: str, *aliases: str) -> str:
        value = next((fields[k].strip() for k in (key, *aliases) if (fields.get(k) or "").strip()), "")
        if not value:
            errors.append(FieldError(field=key, message="required", source="body"))
        return value

    code = required("service_code")
    latitude = _coordinate(fields, "lat", 90, errors)
    longitude = _coordinate(fields, "long", 180, errors)
    ward = required(f"attribute[{WARD}]", f"attribute[{WARD}][]")
    description = required("description")
    if len(description) > 4000:
        errors.append(FieldError(field="description", message="at most 4000 characters", source="body"))
    address = (fields.get("address_string") or "").strip()
    if len(address) > 300:
        errors.append(FieldError(field="address_string", message="at most 300 characters", source="body"))
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    return ReportCreate(category=code, description=description, latitude=latitude, longitude=longitude, ward=ward,
                        address=address, hide_name=True, visibility="public", duplicates_checked=True)


async def submit_request(conn: asyncpg.Connection, ctx: service.Ctx, principal: Principal | None, client: str,
                         fields: Mapping[str, str], idempotency_key: str | None = None) -> list[dict[str, Any]]:
    """POST requests for a registered client (see client_for_key) and the resident it acts for."""
    if principal is None:
        raise NotAuthenticated(
            "the resident's own iHaNoi access token is required (Authorization: Bearer <token>): reports in "
            "Hanoi are sent by residents signed in with VNeID, never anonymously",
            headers={"WWW-Authenticate": 'Bearer realm="ihanoi"'})
    body = report_body(fields)
    category = await store.category(conn, body.category)
    if category is None or not category["active"]:
        raise NotFound(f"service_code {body.category!r} not found; see GET {PREFIX}/services.json")
    # Open311 has no retry key; a client that sends our Idempotency-Key header gets the first report back
    key = f"open311:{client}:{idempotency_key}" if idempotency_key else str(uuid.uuid4())
    report = await service.submit(conn, ctx, principal, body, idempotency_key=key, source=f"open311:{client}")
    when = "%H:%M %d/%m/%Y"
    unit, receive_by, answer_by = report.unit.name, f"{report.receive_due_at:{when}}", f"{report.answer_due_at:{when}}"
    if receive_by == answer_by:  # urgent: handled within the receipt deadline
        notice = ctx.pick((f"{unit} tiếp nhận và trả lời trước {answer_by}.",
                           f"{unit} will receive and answer it by {answer_by}."))
    else:
        notice = ctx.pick((f"{unit} tiếp nhận trước {receive_by} và trả lời trước {answer_by}.",
                           f"{unit} will receive it by {receive_by} and answer by {answer_by}."))
    if (fields.get("media_url") or "").strip():
        notice += ctx.pick((
            " Ảnh qua media_url không được tải về (hệ thống không truy cập mạng bên ngoài); ảnh chỉ gửi được "
            "qua ứng dụng iHaNoi.",
            " media_url is not fetched (this system reaches no outside network); photos can be sent only "
            "through the iHaNoi app."))
    return [{"service_request_id": report.id, "service_notice": notice, "account_id": None}]


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


REQUESTS_QUERY = (
    "Query: service_request_id (comma list; overrides the rest), service_code (comma list), start_date and "
    f"end_date (W3C date-times, at most {MAX_DAYS} days apart; default the last {MAX_DAYS} days), status (open, "
    f"closed or both), page and page_size (at most {MAX_ROWS}, the default)."
)


class Open311Controller(Controller):
    path = PREFIX
    tags = ["Open311 GeoReport v2"]
    exception_handlers = {Exception: open311_error}

    @get(_paths("discovery"), operation_id=_operation("Open311Discovery"), summary="Open311 service discovery")
    async def get_discovery(self, request: Request, state: State) -> Response:
        return render(format_of(request.url.path), "discovery", discovery(api.ctx(request, state), state.settings))

    @get(_paths("services"), operation_id=_operation("Open311Services"),
         summary="One service per active feedback category")
    async def list_services(self, request: Request, state: State, conn: Conn) -> Response:
        return render(format_of(request.url.path), "services", await services(conn, api.ctx(request, state)))

    @get("/services/{name:str}", operation_id="Open311ServiceDefinition",
         summary="A service's definition: the required ward attribute and its values ({code}.json or .xml)")
    async def get_service_definition(self, name: FromPath[str], request: Request, state: State,
                                     conn: Conn) -> Response:
        code, fmt = split_format(name)
        return render(fmt, "service_definition", await service_definition(conn, api.ctx(request, state), code))

    @get(_paths("requests"), operation_id=_operation("Open311Requests"),
         summary="Public requests, newest first", description=REQUESTS_QUERY)
    async def list_requests(self, request: Request, state: State, conn: Conn) -> Response:
        query = parse_query(request.query_params, service.utcnow())
        found = await find_requests(conn, api.ctx(request, state), query, base_url=state.settings.base_url())
        return render(format_of(request.url.path), "service_requests", found)

    @get("/requests/{name:str}", operation_id="Open311Request", summary="One public request ({id}.json or .xml)")
    async def get_one_request(self, name: FromPath[str], request: Request, state: State, conn: Conn) -> Response:
        request_id, fmt = split_format(name)
        found = await get_request(conn, api.ctx(request, state), request_id, base_url=state.settings.base_url())
        return render(fmt, "service_requests", found)

    @post(_paths("requests"), operation_id=_operation("Open311CreateRequest"), status_code=200,
          summary="Send a report for a resident: the client's api_key and the resident's bearer token",
          description="Form fields: api_key, service_code, lat, long, attribute[ward], description, "
                      "address_string. media_url, names, email and phone are ignored.")
    async def create_request(self, request: Request, state: State, tx: Conn) -> Response:
        fields = await _form(request)
        client = await client_for_key(tx, fields.get("api_key") or request.query_params.get("api_key"))
        answer = await submit_request(tx, api.ctx(request, state), api.caller(request), client, fields,
                                      idempotency.key_of(request, required=False))
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
    async def create(self, data: JSONBody[ClientCreate], tx: Conn, principal: Me) -> ClientKey:
        return await create_client(tx, data.name, created_by=uuid.UUID(principal.sub))

    @delete("/{name:str}", operation_id="RevokeOpen311Client", status_code=200,
            summary="Revoke every active api_key of an Open311 client")
    async def revoke(self, name: FromPath[str], tx: Conn, principal: Me) -> ClientRevoked:
        return ClientRevoked(name=name, revoked=await revoke_client(tx, name, revoked_by=uuid.UUID(principal.sub)))


ROUTERS = [Open311Controller, Open311ClientsController]
