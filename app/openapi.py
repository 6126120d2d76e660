"""An honest OpenAPI document, so generated clients work.

Litestar documents what a handler returns; this adds what the kernel does around every handler:
- the security scheme on each operation whose guards need a caller (bearer tokens for residents,
  staff and machine clients), or that a module marks with `security=` itself (Open311's api key);
- every error answer as `application/problem+json` with the problem schema: 400 for any input, 401 on
  every route (a bearer token sent is checked even where none is needed), 403 where a caller is needed,
  404 where the path names something, 409 and 422 for writes, 500 and 503 everywhere. A route whose
  errors have another shape (Open311's error array) says `problem_responses=False` in its opt and
  documents its own.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, OpenAPI, SecurityScheme
from litestar.types import Empty

from app.errors import PROBLEM_JSON, Problem

BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                           description="an access token from /v1/auth (residents, staff) or /oauth/token (machines)"),
}

_DESCRIPTIONS = {
    400: "The request is not valid: `errors[]` names each bad field",
    401: "Sign in first, or the token is not valid",
    403: "Not allowed for this caller (a role, a unit or a higher identity level is needed)",
    404: "Not found, or not visible to this caller",
    409: "Conflicts with the current state",
    422: "Well-formed but not possible (e.g. an Idempotency-Key used for another request)",
    429: "Too many requests: retry after the Retry-After header",
    500: "Internal error (reported with the request id)",
    503: "A dependency is unavailable: retry after the Retry-After header",
}


def components() -> Components:
    return Components(security_schemes=dict(SECURITY_SCHEMES))


def problem(status: int) -> ResponseSpec:
    """A problem answer for a route to declare itself (e.g. 401 from a sign-in that is refused)."""
    return ResponseSpec(data_container=Problem, media_type=PROBLEM_JSON, description=_DESCRIPTIONS[status],
                        generate_examples=False)


def _needs_caller(guard) -> bool:
    return bool(getattr(getattr(guard, "func", guard), "needs_caller", False))


class _Documented(OpenAPIPlugin):
    """Litestar's plugin, finishing the document once built: a Struct that refuses unknown fields says so
    (`additionalProperties: false`), so a generated client or a fuzzer does not send what is refused."""

    __slots__ = ()

    def provide_openapi(self) -> OpenAPI:
        fresh = self._openapi is None
        document = super().provide_openapi()
        if fresh:
            _close_strict_structs(document)
            _xml_by_suffix(document)
        return document


def _strict_structs() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    pending = list(msgspec.Struct.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls.__struct_config__, "forbid_unknown_fields", False):
            found[cls.__name__] = {f.encode_name for f in msgspec.structs.fields(cls)}
    return found


def _close_strict_structs(document: OpenAPI) -> None:
    strict = _strict_structs()
    for key, schema in ((document.components.schemas or {}) if document.components else {}).items():
        name = key.rsplit("_", 1)[-1] if key not in strict else key
        fields = strict.get(name)
        if fields is not None and set(schema.properties or {}) <= fields:
            schema.additional_properties = False


def _xml_by_suffix(document: OpenAPI) -> None:
    """A path ending in `.xml` answers XML (Open311's format choice): its bodies are `text/xml`."""
    for path, item in (document.paths or {}).items():
        if not path.endswith(".xml"):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            for answer in ((operation.responses or {}).values() if operation else ()):
                content = getattr(answer, "content", None)
                if content and "application/json" in content:
                    content["text/xml"] = content.pop("application/json")


def document(app: Litestar) -> None:
    """Fill in security and error answers on every registered route handler (before the document is built)."""
    plugin = app.plugins.get(OpenAPIPlugin)
    if type(plugin) is OpenAPIPlugin:
        plugin.__class__ = _Documented
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not getattr(handler, "include_in_schema", True) or not hasattr(handler, "http_methods"):
                continue
            needs_caller = any(_needs_caller(g) for g in handler.resolve_guards())
            if needs_caller and not handler.security:
                handler.security = [{BEARER: []}]
                handler._resolved_security = Empty  # resolved again from the layers, now with ours
            if handler.opt.get("problem_responses", True) is False:
                # its own errors have another shape, but a bad bearer token is refused by the kernel first
                handler.responses = {401: problem(401), **dict(handler.responses or {})}
                continue
            statuses = {400, 401, 500, 503}  # 401: any route refuses a bearer token that is not valid
            if needs_caller:
                statuses.add(403)
            if "{" in route.path:
                statuses.add(404)
            if handler.http_methods & {"POST", "PUT", "PATCH", "DELETE"}:
                statuses |= {409, 422}
            own = dict(handler.responses or {})
            handler.responses = {**{s: problem(s) for s in sorted(statuses)}, **own}
