"""Domain errors and the one map from every error to RFC 9457 problem details.

Domains raise the `DomainError` subclasses below (never HTTP exceptions); the handler turns them,
Litestar's own HTTP exceptions and database failures into `application/problem+json` bodies with a
stable `type`, a title in the client's language (Vietnamese first) and `errors[]` naming bad fields.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import asyncpg
import msgspec
import redis.exceptions
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.logs import current_request_id
from modules import ProblemType, Title
from modules.registry import REGISTRY

log = logging.getLogger("ihanoi.errors")

Language = Literal["vi", "en"]

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ihanoi:problem:"

# The kernel's own problem types; each module declares its own in its `Module(problems=...)`.
KERNEL_PROBLEMS: tuple[ProblemType, ...] = tuple(
    ProblemType(slug, status, Title(vi, en)) for slug, status, vi, en in (
        ("bad-request", 400, "Yêu cầu không hợp lệ", "Bad request"),
        ("validation-error", 400, "Dữ liệu gửi lên không hợp lệ", "The request data is not valid"),
        ("unauthorized", 401, "Cần đăng nhập", "Authentication required"),
        ("login-refused", 401, "Đăng nhập không thành công", "Sign-in refused"),
        ("forbidden", 403, "Không có quyền thực hiện", "Not allowed"),
        ("step-up-required", 403, "Cần xác thực mức cao hơn", "A higher identity level is required"),
        ("not-found", 404, "Không tìm thấy", "Not found"),
        ("method-not-allowed", 405, "Phương thức không được hỗ trợ", "Method not allowed"),
        ("not-acceptable", 406, "Không hỗ trợ định dạng yêu cầu", "Not acceptable"),
        ("conflict", 409, "Xung đột dữ liệu", "Conflict"),
        ("invalid-transition", 409, "Không thể thực hiện ở trạng thái hiện tại", "Not possible in the current state"),
        ("request-in-progress", 409, "Yêu cầu cùng khóa đang được xử lý", "A request with this key is in progress"),
        ("gone", 410, "Không còn tồn tại", "Gone"),
        ("payload-too-large", 413, "Dữ liệu gửi lên quá lớn", "Payload too large"),
        ("unsupported-media-type", 415, "Định dạng dữ liệu không được hỗ trợ", "Unsupported media type"),
        ("unprocessable", 422, "Không thể xử lý yêu cầu", "Unprocessable request"),
        ("unknown-reference", 422, "Đối tượng được nhắc đến không tồn tại", "What the request names does not exist"),
        ("idempotency-key-reused", 422, "Khóa Idempotency-Key đã dùng cho yêu cầu khác",
         "This Idempotency-Key was used for another request"),
        ("too-many-requests", 429, "Quá nhiều yêu cầu", "Too many requests"),
        ("internal-error", 500, "Lỗi hệ thống", "Internal error"),
        ("service-unavailable", 503, "Dịch vụ tạm thời không sẵn sàng", "Service temporarily unavailable"),
    )
)
REGISTRY.add_problems("kernel", KERNEL_PROBLEMS)

_SLUG_BY_STATUS = {p.status: p.slug for p in reversed(KERNEL_PROBLEMS)}


class FieldError(msgspec.Struct, omit_defaults=True):
    field: str
    message: str
    source: str | None = None


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None
    extra: dict[str, Any] | None = None


class DomainError(Exception):
    """Base of the errors a domain raises; `slug` picks the problem type and HTTP status."""

    slug = "bad-request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.slug)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or None


class Answered(Exception):
    """Not an error: the answer is already known (an idempotent replay); the handler sends it as is."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered")
        self.response = response


class InvalidInput(DomainError):
    slug = "validation-error"

    @classmethod
    def field(cls, field: str, message: str, source: str = "body") -> InvalidInput:
        return cls(message, errors=[FieldError(field=field, message=message, source=source)])


class NotAuthenticated(DomainError):
    slug = "unauthorized"


class Forbidden(DomainError):
    slug = "forbidden"


class StepUpRequired(DomainError):
    slug = "step-up-required"


class NotFound(DomainError):
    slug = "not-found"


class Conflict(DomainError):
    slug = "conflict"


class InvalidTransition(Conflict):
    slug = "invalid-transition"


class RequestInProgress(Conflict):
    slug = "request-in-progress"


class Gone(DomainError):
    slug = "gone"


class Unprocessable(DomainError):
    slug = "unprocessable"

    @classmethod
    def field(cls, field: str, message: str, source: str = "body") -> Unprocessable:
        return cls(message, errors=[FieldError(field=field, message=message, source=source)])


class UnknownReference(Unprocessable):
    """A well-formed field that names something which does not exist (a category, a unit, a fare product): the
    request has the document's form, so not a 400; the field is named as for one."""

    slug = "unknown-reference"

    @classmethod
    def field(cls, field: str, message: str, source: str = "body") -> UnknownReference:
        return cls(message, errors=[FieldError(field=field, message=message, source=source)])


class IdempotencyKeyReused(Unprocessable):
    slug = "idempotency-key-reused"


class TooManyRequests(DomainError):
    slug = "too-many-requests"


class ServiceUnavailable(DomainError):
    slug = "service-unavailable"


def language_of(request: Request) -> Language:
    """Vietnamese first: English only when the client's first choice is English."""
    accept = request.headers.get("accept-language", "")
    first = accept.split(",", 1)[0].strip().lower()
    return "en" if first.startswith("en") else "vi"


def problem_response(
    request: Request,
    slug: str,
    *,
    status: int | None = None,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[bytes]:
    known = REGISTRY.problems.get(slug)
    if known is None:  # a DomainError whose module forgot to declare its slug: still a clear answer
        log.warning("undeclared problem type", extra={"slug": slug})
        known = REGISTRY.problems["bad-request"]
    status = status or known.status
    problem = Problem(
        type=TYPE_PREFIX + slug,
        title=known.title.en if language_of(request) == "en" else known.title.vi,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=current_request_id(),
        errors=errors or None,
        extra=extra,
    )
    return Response(
        content=msgspec.json.encode(problem),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers or {},
    )


_MISSING_PARAMETER = re.compile(r"Missing required (header|query|path|cookie) parameter '([^']+)'")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_MSGSPEC_PATH = re.compile(r"\s*-\s*at `\$(?:\.(?P<path>[^`]*))?`")


def _validation_errors(exc: ValidationException) -> list[FieldError]:
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = item.get("key")
        match = _MSGSPEC_PATH.search(message)
        path = None
        if match:
            message = message[: match.start()].strip()
            path = match.group("path")
        if "matching regex '^[^" in message and "x00-" in message:  # web.HumanText and web.Token
            message = "control characters are not allowed here"
        named = _NAMED_FIELD.search(message)
        if item.get("source") == "body" or key == "data":
            # msgspec says where in the body: `$.place.lat`, or names the missing/unknown field
            given = key if key not in (None, "", "data") else None
            key = ".".join(p for p in (path or given, named.group(1) if named else None) if p) or "$"
        source = item.get("source")
        if source == "header" and key:  # named as the client sends it, not as the handler's parameter
            key = "-".join(part.capitalize() for part in str(key).split("_"))
        errors.append(FieldError(field=str(key or "$"), message=message, source=source))
    if not errors and (missing := _MISSING_PARAMETER.search(str(exc.detail or ""))):
        errors.append(FieldError(field=missing.group(2), message=f"missing required {missing.group(1)} parameter",
                                 source=missing.group(1)))
    if not errors:
        detail = str(exc.detail or "")
        match = _MSGSPEC_PATH.search(detail)
        field = (match.group("path") or "$") if match else "$"
        message = detail[: match.start()].strip() if match else (detail or "invalid request body")
        errors.append(FieldError(field=field, message=message, source="body"))
    return errors


def handle_exception(request: Request, exc: Exception) -> Response[bytes]:
    if isinstance(exc, Answered):
        return exc.response
    if isinstance(exc, DomainError):
        return problem_response(
            request, exc.slug, detail=exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra
        )
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem_response(request, "validation-error", status=400, detail=detail, errors=errors)
    if isinstance(exc, HTTPException):
        slug = _SLUG_BY_STATUS.get(exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error")
        if isinstance(exc, NotAuthorizedException):
            slug = "unauthorized"
        detail = exc.detail if exc.detail and exc.detail != _default_phrase(exc.status_code) else None
        errors = None
        if exc.status_code == 400 and _caused_by(exc, msgspec.DecodeError):
            errors = [FieldError(field="$", message=detail, source="body")]
            slug = "validation-error"
        return problem_response(
            request, slug, status=exc.status_code, detail=detail, errors=errors, headers=dict(exc.headers or {})
        )
    if isinstance(exc, asyncpg.UniqueViolationError):
        return problem_response(request, "conflict", detail="the resource already exists")
    if isinstance(exc, (asyncpg.ForeignKeyViolationError, asyncpg.CheckViolationError)):
        return problem_response(request, "conflict", detail="the change conflicts with existing data")
    if isinstance(exc, asyncpg.DataError):
        # A value the database cannot hold that no type caught (a number out of range, a character it
        # refuses): the client's input, so a 400 and a warning, never a 500 with a traceback.
        log.warning("input refused by the database", extra={"error": type(exc).__name__})
        return problem_response(request, "validation-error", detail="a value is out of range or not allowed")
    if isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.TooManyConnectionsError,
                        asyncpg.CannotConnectNowError, TimeoutError, redis.exceptions.ConnectionError,
                        redis.exceptions.TimeoutError)):
        log.warning("dependency unavailable", extra={"error": type(exc).__name__})
        return problem_response(request, "service-unavailable", headers={"Retry-After": "5"})
    log.exception("unhandled error", extra={"error": type(exc).__name__})
    return problem_response(request, "internal-error", status=HTTP_500_INTERNAL_SERVER_ERROR)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _default_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


exception_handlers = {Exception: handle_exception}
