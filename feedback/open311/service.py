"""Open311 GeoReport v2 in our terms: api keys, discovery, services from categories, public reports as
requests, and a posted form as a report sent through feedback's own service (see the package's docstring for
the decisions)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec
from litestar.exceptions import ValidationException

from app.errors import FieldError, Forbidden, InvalidInput, NotAuthenticated, NotFound, Unprocessable
from app.identity import Principal
from app.settings import Settings
from app.web import CITY_TZ, local
from feedback import places, views
from feedback import service as feedback
from feedback.context import Ctx
from feedback.models import Category, ReportCreate
from feedback.open311 import store
from feedback.open311.models import (
    CLIENT_NAME_PATTERN,
    MAX_ROWS,
    Attribute,
    AttributeValue,
    ClientKey,
    Discovery,
    Endpoint,
    Query,
    RequestCreated,
    Service,
    ServiceDefinition,
    ServiceRequest,
)
from feedback.workflow import STATUS_LABELS

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
PREFIX = "/open311/v2"
# When the shape of the service list or of the definitions last changed (discovery's changeset): bump it then.
CHANGESET = "2025-07-01T00:00:00+07:00"
FORMATS = ["text/xml", "application/json"]
MAX_DAYS = 90
WARD = "ward"
# Open311's names of our fields, in errors
OPEN311_NAMES = {"category": "service_code", "latitude": "lat", "longitude": "long", "ward": f"attribute[{WARD}]",
                 "address": "address_string"}
WARD_DESCRIPTION = (
    "Phường, xã nơi xảy ra sự việc. Có thể bỏ trống khi gửi lat/long trong Hà Nội: khi đó là phường, xã có tâm gần "
    "nhất (tính theo kích thước của phường, xã đó); nếu không xác định được thì bắt buộc.",
    "The ward or commune where the problem is. It may be left out when lat/long are inside Hanoi: it is then the "
    "ward or commune whose centre is nearest, measured in that unit's own size; where none is near enough it is "
    "required.")
CLIENT_NAME = re.compile(CLIENT_NAME_PATTERN)
REQUEST_ID = re.compile(r"^[0-9]{1,18}$")


def w3c(moment: dt.datetime) -> str:
    return local(moment).replace(microsecond=0).isoformat()


# ---- api keys ------------------------------------------------------------------------------------------------


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def create_client(conn: asyncpg.Connection, name: str, *, created_by: uuid.UUID | None = None) -> ClientKey:
    if not CLIENT_NAME.match(name):
        raise InvalidInput.field("name", "2-63 characters: lowercase letters, digits, '.', '_' or '-'")
    api_key = "o311_" + secrets.token_urlsafe(32)
    await store.insert_client(conn, name, _digest(api_key), created_by)
    return ClientKey(name=name, api_key=api_key)


async def revoke_client(conn: asyncpg.Connection, name: str, *, revoked_by: uuid.UUID | None = None) -> int:
    revoked = await store.revoke_client(conn, name, revoked_by)
    if not revoked:
        raise NotFound(f"no Open311 client {name!r} with an active key")
    return revoked


def require_key(api_key: str | None) -> str:
    """The api_key is sent at all (403 without one); whether it is a client's is client_for_key's, later."""
    if not api_key:
        raise Forbidden("api_key missing: creating a request needs the api_key the city's iHaNoi administrators "
                        "gave your application")
    return api_key


async def client_for_key(conn: asyncpg.Connection, api_key: str) -> str:
    """The name of the client holding this key; 403 for an unknown or revoked key."""
    name = await store.client_name(conn, _digest(api_key))
    if name is None:
        raise Forbidden("api_key not valid (unknown or revoked): can't create the request")
    return name


# ---- discovery and services -----------------------------------------------------------------------------------


def discovery(ctx: Ctx, settings: Settings) -> Discovery:
    base = settings.base_url()
    return Discovery(
        changeset=CHANGESET,
        contact=ctx.pick((f"iHaNoi, Thành phố Hà Nội: {base}; tổng đài 1022 (nhánh 8)",
                          f"iHaNoi, City of Hanoi: {base}; hotline 1022 (branch 8)")),
        key_service=ctx.pick((
            "api_key do quản trị viên iHaNoi của Thành phố cấp cho từng ứng dụng. Mỗi phản ánh gửi lên còn cần "
            "access token của chính người dân (Authorization: Bearer ...), đăng nhập bằng VNeID.",
            "The city's iHaNoi administrators issue one api_key per application. Each request sent also needs "
            "the resident's own access token (Authorization: Bearer ...), signed in with VNeID.")),
        endpoints=[Endpoint(specification=SPECIFICATION, url=base + PREFIX, changeset=CHANGESET,
                            type="production" if settings.env == "prod" else "test", formats=list(FORMATS))],
    )


def _service(category: Category, ctx: Ctx) -> Service:
    times = ctx.pick((
        f"Tiếp nhận trong {category.receive_hours} giờ làm việc, trả lời trong {category.answer_hours} giờ làm việc.",
        f"Received within {category.receive_hours} working hours, answered within {category.answer_hours} "
        "working hours."))
    if category.default_unit == "ward":
        group = ctx.pick(("Phường, xã nơi xảy ra sự việc", "The ward or commune of the place"))
    else:
        group = ctx.unit(category.default_unit).name
    return Service(service_code=category.code, service_name=category.name,
                   description=f"{category.description} {times}" if category.description else times,
                   metadata=True, type="realtime", keywords=category.keywords, group=group)


async def services(conn: asyncpg.Connection, ctx: Ctx) -> list[Service]:
    return [_service(c, ctx) for c in await views.list_categories(conn, ctx)]


async def service_definition(conn: asyncpg.Connection, ctx: Ctx, code: str) -> ServiceDefinition:
    try:
        category = await views.get_category(conn, ctx, code)
    except NotFound:
        raise NotFound(f"service_code {code!r} not found; see GET {PREFIX}/services.json") from None
    english = ctx.language == "en"
    wards = [AttributeValue(key=u.code, name=u.name_en if english else u.name_vi)
             for u in ctx.units if u.kind in ("ward", "commune")]
    return ServiceDefinition(service_code=category.code, attributes=[Attribute(
        variable=True, code=WARD, datatype="singlevaluelist", required=False,
        datatype_description=ctx.pick(("Mã phường, xã: một trong các key dưới đây",
                                       "A ward or commune code: one of the keys below")),
        order=1,
        description=ctx.pick(WARD_DESCRIPTION),
        values=wards,
    )])


# ---- requests --------------------------------------------------------------------------------------------------


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
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=CITY_TZ)


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
    wanted: set[bool] = set()
    for value in _values(params, "status"):
        if value.lower() not in ("open", "closed"):
            raise InvalidInput.field("status", "open or closed (comma-separated for both)", source="query")
        wanted.add(value.lower() == "open")
    return Query(codes=_values(params, "service_code") or None, start=start, end=end,
                 open=wanted.pop() if len(wanted) == 1 else None, page=page, page_size=page_size)


def _notes(row: asyncpg.Record, ctx: Ctx) -> str:
    status = row["status"]
    if row["duplicate_of"] is not None:
        return ctx.pick((f"Trùng với phản ánh #{row['duplicate_of']}", f"Duplicate of request #{row['duplicate_of']}"))
    if status == "rejected" and row["rejection"]:
        return row["rejection"]
    if status in ("answered", "closed") and row["answer_text"]:
        return row["answer_text"]
    return ctx.pick(STATUS_LABELS[status])


def _request(row: asyncpg.Record, ctx: Ctx, base_url: str) -> ServiceRequest:
    if row["status"] == "answered":
        updated = row["answered_at"] or row["updated_at"]
    elif not row["open"]:
        updated = row["closed_at"] or row["updated_at"]
    else:
        updated = row["updated_at"]
    photo = row["photo_id"]
    return ServiceRequest(
        service_request_id=row["id"],
        status="open" if row["open"] else "closed",
        status_notes=_notes(row, ctx),
        service_name=row["category_en" if ctx.language == "en" else "category_vi"],
        service_code=row["category_code"],
        description=row["description"],
        agency_responsible=ctx.unit(row["unit_code"]).name,
        service_notice=None,
        requested_datetime=w3c(row["submitted_at"]),
        updated_datetime=w3c(updated),
        expected_datetime=w3c(row["answer_due_at"]),
        address=row["address"] or None,
        address_id=None,
        zipcode=None,
        lat=row["latitude"],
        long=row["longitude"],
        media_url=f"{base_url}{views.API_PHOTOS}/{photo}" if photo else None,
    )


async def find_requests(conn: asyncpg.Connection, ctx: Ctx, query: Query, *,
                        base_url: str) -> list[ServiceRequest]:
    """Public reports only, newest first; nothing about who reported, no private photo."""
    return [_request(row, ctx, base_url) for row in await store.public_requests(conn, query)]


async def get_request(conn: asyncpg.Connection, ctx: Ctx, request_id: str, *,
                      base_url: str) -> list[ServiceRequest]:
    found = []
    if REQUEST_ID.match(request_id):
        found = await find_requests(conn, ctx, Query(ids=[int(request_id)]), base_url=base_url)
    if not found:
        raise NotFound(f"no public request {request_id}")
    return found


def _coordinate(fields: Mapping[str, str], key: str, limit: float, errors: list[FieldError]) -> float | None:
    raw = (fields.get(key) or "").strip()
    if not raw:
        errors.append(FieldError(field=key, message="required: WGS84 degrees (the place must be in Hanoi)",
                                 source="body"))
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > limit:
        errors.append(FieldError(field=key, message=f"WGS84 degrees between -{limit:g} and {limit:g}", source="body"))
        return None
    return value


def report_body(ctx: Ctx, fields: Mapping[str, str]) -> ReportCreate:
    """The report an Open311 form asks for, checked before anything is looked up; every bad field at once. The
    ward is the one sent, or else the one the coordinates fall in (feedback.places)."""
    errors: list[FieldError] = []

    def given(key: str, *aliases: str) -> str:
        return next((fields[k].strip() for k in (key, *aliases) if (fields.get(k) or "").strip()), "")

    def required(key: str) -> str:
        value = given(key)
        if not value:
            errors.append(FieldError(field=key, message="required", source="body"))
        return value

    code = required("service_code")
    latitude = _coordinate(fields, "lat", 90, errors)
    longitude = _coordinate(fields, "long", 180, errors)
    inside = False
    if latitude is not None and longitude is not None:
        outside = places.outside_hanoi(latitude, longitude)
        if outside is not None:
            errors.append(FieldError(field="lat" if outside == "latitude" else "long",
                                     message="the place must be inside Hanoi", source="body"))
        inside = outside is None
    ward_field = f"attribute[{WARD}]"
    ward = given(ward_field, f"{ward_field}[]")
    if ward:
        unit = ctx.units.get(ward)
        if unit is None or unit.kind not in ("ward", "commune"):
            errors.append(FieldError(field=ward_field, message=f"unknown ward or commune {ward!r}: one of the values "
                                     f"in GET {PREFIX}/services/{{service_code}}.json", source="body"))
    untold = None
    if not ward and inside:
        ward = places.ward_at(ctx.units, latitude, longitude) or ""
        if not ward:  # a well-formed form whose place no ward is near enough to: 422 unless a field is bad too
            untold = FieldError(field=ward_field, message="required here: lat/long are not near enough to a known "
                                "ward or commune to tell which one", source="body")
    elif not ward and (latitude is None or longitude is None):
        errors.append(FieldError(field=ward_field, message="required unless lat and long are sent", source="body"))
    # (outside Hanoi, the coordinates' own error is the one to fix)
    description = unicodedata.normalize("NFC", required("description"))
    if description and len(description) < feedback.DESCRIPTION_MIN:
        errors.append(FieldError(field="description", message="describe the problem in at least "
                                 f"{feedback.DESCRIPTION_MIN} characters", source="body"))
    elif len(description) > 4000:
        errors.append(FieldError(field="description", message="at most 4000 characters", source="body"))
    address = (fields.get("address_string") or "").strip()
    if len(address) > 300:
        errors.append(FieldError(field="address_string", message="at most 300 characters", source="body"))
    if errors:
        errors += [untold] if untold else []
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    if untold:
        raise Unprocessable(f"{untold.field}: {untold.message}", errors=[untold])
    try:
        # the app's own constraints on every field (text without control characters...)
        return msgspec.convert({"category": code, "description": description, "latitude": latitude,
                                "longitude": longitude, "ward": ward, "address": address, "hide_name": True,
                                "visibility": "public", "duplicates_checked": True}, ReportCreate)
    except msgspec.ValidationError as exc:  # worded and named by the kernel's error map, as for a JSON body
        raise ValidationException(extra=[{"message": str(exc), "key": "data", "source": "body"}]) from None


async def submit_request(conn: asyncpg.Connection, ctx: Ctx, principal: Principal | None, client: str,
                         body: ReportCreate, *, media_url: bool = False,
                         idempotency_key: str | None = None) -> list[RequestCreated]:
    """POST requests for a registered client (see client_for_key) and the resident it acts for, once the form
    passed report_body."""
    if principal is None:
        raise NotAuthenticated(
            "the resident's own iHaNoi access token is required (Authorization: Bearer <token>): reports in "
            "Hanoi are sent by residents signed in with VNeID, never anonymously",
            headers={"WWW-Authenticate": 'Bearer realm="ihanoi"'})
    try:
        await views.get_category(conn, ctx, body.category)
    except NotFound:
        raise NotFound(f"service_code {body.category!r} not found; see GET {PREFIX}/services.json") from None
    # Open311 has no retry key; a client that sends our Idempotency-Key header gets the first report back
    key = f"open311:{client}:{idempotency_key}" if idempotency_key else str(uuid.uuid4())
    report = await feedback.submit(conn, ctx, principal, body, idempotency_key=key, source=f"open311:{client}")
    when = "%H:%M %d/%m/%Y"
    unit, receive_by, answer_by = report.unit.name, f"{report.receive_due_at:{when}}", f"{report.answer_due_at:{when}}"
    if receive_by == answer_by:  # urgent: handled within the receipt deadline
        notice = ctx.pick((f"{unit} tiếp nhận và trả lời trước {answer_by}.",
                           f"{unit} will receive and answer it by {answer_by}."))
    else:
        notice = ctx.pick((f"{unit} tiếp nhận trước {receive_by} và trả lời trước {answer_by}.",
                           f"{unit} will receive it by {receive_by} and answer by {answer_by}."))
    if media_url:
        notice += ctx.pick((
            " Ảnh qua media_url không được tải về (hệ thống không truy cập mạng bên ngoài); ảnh chỉ gửi được "
            "qua ứng dụng iHaNoi.",
            " media_url is not fetched (this system reaches no outside network); photos can be sent only "
            "through the iHaNoi app."))
    return [RequestCreated(service_request_id=report.id, service_notice=notice, account_id=None)]


