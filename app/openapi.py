"""An honest OpenAPI document, so generated clients work.

Litestar documents what a handler returns; this adds what the kernel does around every handler:
- the security scheme on each operation whose guards need a caller (bearer tokens for residents,
  staff and machine clients), or that a module marks with `security=` itself (Open311's api key);
- every error answer as `application/problem+json` with the problem schema: 400 for any input, 401 on
  every route (a bearer token sent is checked even where none is needed), 403 where a caller is needed,
  404 where the path names something, 409 and 422 for writes, 500 and 503 everywhere. A route whose
  errors have another shape (Open311's error array) says `problem_responses=False` in its opt and
  documents its own.

The finished document also states what the kernel enforces for every route, so a generated client (or a
fuzzer) sends only what is accepted: the constraints of an optional value sit inside its non-null branch (a
query or header value is never null), every free text refuses NUL (app/inputs.py refuses it everywhere), a
time of day is `HH:MM:SS`, and an event stream describes one event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar._openapi.schema_generation import schema as _schema_generation
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType
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
    413: "The body is larger than this route accepts",
    415: "The body's media type is not one this route reads",
    422: "Well-formed but not possible (e.g. an Idempotency-Key used for another request)",
    429: "Too many requests: retry after the Retry-After header",
    500: "Internal error (reported with the request id)",
    503: "A dependency is unavailable: retry after the Retry-After header",
}


# A time of day as msgspec reads and writes it; Litestar documents `datetime.time` as a duration.
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$"
_schema_generation.TYPE_MAP[dt.time] = Schema(type=OpenAPIType.STRING, pattern=TIME_OF_DAY,
                                               description="a time of day, HH:MM:SS (Hanoi time)")
# A number without bounds of its own: app/inputs.py refuses a whole number beyond int64 (below 2^63 as a float).
NUMBER_LIMIT = 9.2e18
# Free text without a pattern of its own: app/inputs.py refuses a NUL character in any text, on every route.
NO_NUL = r"^[^\x00]*$"
# What a server-sent event is, as a client parses it (one schema per event, OpenAPI 3.1).
SSE_EVENT = Schema(type=OpenAPIType.OBJECT, properties={
    "event": Schema(type=OpenAPIType.STRING), "data": Schema(type=OpenAPIType.STRING),
    "id": Schema(type=OpenAPIType.STRING), "retry": Schema(type=OpenAPIType.INTEGER, minimum=0),
}, description="one server-sent event: its name and its data (JSON text)")
_CONSTRAINTS = ("pattern", "min_length", "max_length", "minimum", "maximum", "exclusive_minimum",
                "exclusive_maximum", "multiple_of", "format", "enum", "min_items", "max_items", "items",
                "property_names")


# Routes that read a form themselves (so that they can check it in their own order) show its fields with
# `opt={"form": Schema(...)}`, or a function of the settings giving it: (path, method) -> the form's schema.
_FORMS: dict[tuple[str, str], Schema | Callable[[Any], Schema]] = {}
# Routes that read their raw body themselves (a photo, a FHIR Bundle) show it with `opt={"body": {media type:
# Schema}}`, or a function of the settings giving that.
_BODIES: dict[tuple[str, str], dict[str, Schema] | Callable[[Any], dict[str, Schema]]] = {}
# Paths whose errors come in a media type of their own: path -> (media type, body type).
_OWN_ERRORS: dict[str, tuple[str, Any]] = {}


def _route_key(path: str) -> str:
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)
FORM = "application/x-www-form-urlencoded"


def photo_body(max_bytes: int) -> dict[str, Schema]:
    """`opt={"body": photo_body(n)}` for a route whose body is a photo's own bytes (its content decides: 422 if
    they are not a usable JPEG or PNG)."""
    return {media: Schema(type=OpenAPIType.STRING, format="binary", content_media_type=media,
                          description=f"the raw {media.split('/')[1].upper()} file, at most {max_bytes} bytes")
            for media in ("image/jpeg", "image/png")}


# Any JSON value the kernel accepts in a body (app/inputs.py): no NUL in a string or a field name, no number beyond
# int64. For free-form parts of a body (a FHIR resource): `additional_properties=JSON_VALUE, property_names=NAME`.
NAME = Schema(type=OpenAPIType.STRING, pattern=r"^[^\x00]*$")
JSON_VALUE = Reference(ref="#/components/schemas/JsonValue")
_JSON_VALUE_SCHEMA = Schema(any_of=[
    Schema(type=OpenAPIType.STRING, pattern=r"^[^\x00]*$"),
    Schema(type=OpenAPIType.NUMBER, minimum=-9.2e18, maximum=9.2e18),
    Schema(type=OpenAPIType.BOOLEAN), Schema(type=OpenAPIType.NULL),
    Schema(type=OpenAPIType.ARRAY, items=JSON_VALUE),
    Schema(type=OpenAPIType.OBJECT, property_names=NAME, additional_properties=JSON_VALUE),
], description="any JSON value without a NUL character and without a number beyond 64-bit integers")


def components() -> Components:
    return Components(security_schemes=dict(SECURITY_SCHEMES))


def problem(status: int, media_type: str = PROBLEM_JSON, container: Any = Problem) -> ResponseSpec:
    """A problem answer for a route to declare itself (e.g. 401 from a sign-in that is refused)."""
    return ResponseSpec(data_container=container, media_type=media_type, description=_DESCRIPTIONS[status],
                        generate_examples=False)


_NOT_INPUT = frozenset({"self", "state", "request", "scope", "socket", "headers", "cookies"})


def _takes_input(handler) -> bool:
    """Whether the handler reads a path, query or body value of its own (not a dependency the kernel gives)."""
    return bool(set(handler.parsed_fn_signature.parameters) - set(handler.resolve_dependencies()) - _NOT_INPUT)


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
            # Litestar fills the schemas from its registry: the kernel's own shared ones go in after
            document.components.schemas = {**(document.components.schemas or {}), "JsonValue": _JSON_VALUE_SCHEMA}
            _close_strict_structs(document)
            _xml_by_suffix(document)
            _state_what_is_enforced(document)
            _forms(document, self.app.state.get("settings"))
            _problems_too(document)
        return document


def _strict_structs() -> tuple[dict[str, set[str]], dict[str, dict[str, dict[str, Schema]]]]:
    """The Structs that refuse unknown fields (name -> their fields), and the constraints inside their mapping and
    list fields, which Litestar leaves out of the document (name -> field -> {"property_names" | "items" |
    "additional_properties": the schema to merge})."""
    found: dict[str, set[str]] = {}
    inner: dict[str, dict[str, dict[str, Schema]]] = {}
    pending = list(msgspec.Struct.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls.__struct_config__, "forbid_unknown_fields", False):
            found[cls.__name__] = {f.encode_name for f in msgspec.structs.fields(cls)}
        try:
            fields = msgspec.inspect.type_info(cls).fields
        except Exception:  # a Struct msgspec cannot describe (a forward reference): Litestar shows it as is
            continue
        for field in fields:
            kind = field.type
            if isinstance(kind, msgspec.inspect.Metadata):
                kind = kind.type
            patch: dict[str, Schema] = {}
            if isinstance(kind, msgspec.inspect.UnionType):  # T | None
                kinds = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
                kind = kinds[0] if len(kinds) == 1 else None
            if (constrained := _scalar(kind)) is not None:
                # Litestar drops a bound of 0 of an optional value (`ge=0` is falsy; `T | UNSET` becomes a
                # one-branch oneOf, `T | None` a two-branch one): the value's own schema gets msgspec's bounds
                patch["value"] = constrained
            if isinstance(kind, msgspec.inspect.DictType):
                for name, part in (("property_names", kind.key_type), ("additional_properties", kind.value_type)):
                    if (constrained := _scalar(part)) is not None:
                        patch[name] = constrained
            elif isinstance(kind, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)):
                if (constrained := _scalar(kind.item_type)) is not None:
                    patch["items"] = constrained
            if patch:
                inner.setdefault(cls.__name__, {})[field.encode_name] = patch
    return found, inner


def _scalar(kind) -> Schema | None:
    """The schema of a constrained string or number inside a collection, else None."""
    if isinstance(kind, msgspec.inspect.Metadata):  # Annotated with a description: the type inside
        kind = kind.type
    if isinstance(kind, msgspec.inspect.StrType) and (kind.pattern or kind.min_length or kind.max_length):
        return Schema(type=OpenAPIType.STRING, pattern=kind.pattern, min_length=kind.min_length,
                      max_length=kind.max_length)
    if isinstance(kind, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        bounds = {"minimum": kind.ge, "maximum": kind.le, "exclusive_minimum": kind.gt, "exclusive_maximum": kind.lt}
        if any(v is not None for v in bounds.values()):
            number = OpenAPIType.INTEGER if isinstance(kind, msgspec.inspect.IntType) else OpenAPIType.NUMBER
            return Schema(type=number, **{k: v for k, v in bounds.items() if v is not None})
    return None


def _close_strict_structs(document: OpenAPI) -> None:
    strict, inner = _strict_structs()
    for key, schema in ((document.components.schemas or {}) if document.components else {}).items():
        name = key.rsplit("_", 1)[-1] if key not in strict and key not in inner else key
        fields = strict.get(name)
        if fields is not None and set(schema.properties or {}) <= fields:
            schema.additional_properties = False
        for field, patch in inner.get(name, {}).items():
            prop = (schema.properties or {}).get(field)
            targets = [prop] if isinstance(prop, Schema) else []
            if isinstance(prop, Schema) and (prop.one_of or prop.any_of):
                targets = [b for b in (prop.one_of or prop.any_of) if isinstance(b, Schema)]
            for target in targets:
                if "value" in patch and target.type == patch["value"].type:
                    for name in _CONSTRAINTS:
                        if getattr(target, name) is None and getattr(patch["value"], name) is not None:
                            setattr(target, name, getattr(patch["value"], name))
                if target.type == OpenAPIType.OBJECT:
                    for attr in ("property_names", "additional_properties"):
                        if attr in patch:
                            setattr(target, attr, patch[attr])
                elif target.type == OpenAPIType.ARRAY and "items" in patch and isinstance(target.items, Schema):
                    merged = {k: v for k, v in dataclasses.asdict(patch["items"]).items()
                              if v is not None and k != "type"}
                    target.items = dataclasses.replace(target.items, **merged)


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


def _forms(document: OpenAPI, settings: Any) -> None:
    for path, item in (document.paths or {}).items():
        for method in ("post", "put", "patch"):
            form, raw = _FORMS.get((path, method)), _BODIES.get((path, method))
            operation = getattr(item, method, None)
            if form is not None and operation is not None:
                form = form if isinstance(form, Schema) else form(settings)
                operation.request_body = RequestBody(content={FORM: OpenAPIMediaType(schema=form)}, required=True)
            elif raw is not None and operation is not None:
                raw = raw if isinstance(raw, dict) else raw(settings)
                operation.request_body = RequestBody(
                    content={media: OpenAPIMediaType(schema=schema) for media, schema in raw.items()}, required=True)


def _problems_too(document: OpenAPI) -> None:
    """On a route with errors of its own media type, a 401 may still be the kernel's problem (a bad token is
    refused before the route's own error handler): 401 shows both."""
    problem_schema = None
    for operation in _operations(document):
        for answer in (operation.responses or {}).values():
            media = (getattr(answer, "content", None) or {}).get(PROBLEM_JSON)
            if media is not None:
                problem_schema = media.schema
                break
        if problem_schema is not None:
            break
    for path, item in (document.paths or {}).items():
        if path not in _OWN_ERRORS or problem_schema is None:
            continue
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            answer = (operation.responses or {}).get("401") if operation else None
            content = getattr(answer, "content", None)
            if content is not None and PROBLEM_JSON not in content:
                content[PROBLEM_JSON] = OpenAPIMediaType(schema=problem_schema)


def _operations(document: OpenAPI):
    for item in (document.paths or {}).values():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                yield operation


def _state_what_is_enforced(document: OpenAPI) -> None:
    seen: dict = {}
    for operation in _operations(document):
        for parameter in operation.parameters or ():
            if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
                parameter.schema = _fix(parameter.schema, seen, nullable=False)
        body = operation.request_body
        for media in ((getattr(body, "content", None) or {}).values() if body is not None else ()):
            if isinstance(media.schema, Schema):
                media.schema = _fix(media.schema, seen)
        for answer in (operation.responses or {}).values():
            for media_type, media in (getattr(answer, "content", None) or {}).items():
                if media_type.startswith("text/event-stream"):
                    media.schema = SSE_EVENT
    for key, schema in list(((document.components.schemas or {}) if document.components else {}).items()):
        document.components.schemas[key] = _fix(schema, seen)


def _constraints_of(schema: Schema) -> dict[str, Any]:
    return {name: getattr(schema, name) for name in _CONSTRAINTS if getattr(schema, name) is not None}


def _fix(schema: Schema, seen: dict[int, Schema], *, nullable: bool = True) -> Schema:
    """Constraints beside `oneOf: [T, null]` (where Litestar puts an optional value's) move into T, which is all
    of it where null cannot be sent (a query, path or header value); free text says it refuses NUL. `seen` maps
    each schema already visited (Litestar shares some between fields) to what it became."""
    key = (id(schema), nullable)
    if key in seen:
        return seen[key][1]
    fixed = _fixed(schema, seen, nullable)
    # both kept alive in the map for the whole walk, so that no id is reused by a later schema
    seen[key] = (schema, fixed)
    seen[(id(fixed), nullable)] = (fixed, fixed)
    return fixed


def _fixed(schema: Schema, seen: dict, nullable: bool) -> Schema:
    branches = schema.one_of or schema.any_of
    if branches:
        typed = [b for b in branches if not (isinstance(b, Schema) and b.type == OpenAPIType.NULL)]
        if len(typed) == 1 and len(branches) in (1, 2) and isinstance(typed[0], Schema):
            moved = _constraints_of(schema)
            inner = dataclasses.replace(typed[0], **{k: v for k, v in moved.items() if getattr(typed[0], k) is None})
            if len(branches) == 1 or (not nullable and typed[0].type == OpenAPIType.STRING and typed[0].format is None):
                # a one-branch oneOf (a field that may be left out, `T | UNSET`) is T itself; a query or header
                # string is never null; but Litestar reads "null" as None for another type (a number, a date), so
                # there the null branch stays
                for name in ("description", "default", "examples", "title", "deprecated"):
                    if getattr(inner, name) is None and getattr(schema, name) is not None:
                        inner = dataclasses.replace(inner, **{name: getattr(schema, name)})
                return _fix(inner, seen, nullable=nullable and len(branches) == 1)
            outer = dataclasses.replace(schema, **{k: None for k in moved})
            rebuilt = [_fix(inner, seen) if b is typed[0] else b for b in branches]
            return dataclasses.replace(outer, **{"one_of" if schema.one_of else "any_of": rebuilt})
        schema = dataclasses.replace(
            schema, one_of=[_fix(b, seen) if isinstance(b, Schema) else b for b in schema.one_of or ()] or None,
            any_of=[_fix(b, seen) if isinstance(b, Schema) else b for b in schema.any_of or ()] or None)
    changes: dict[str, Any] = {}
    if schema.type == OpenAPIType.INTEGER and (schema.maximum is None or schema.maximum >= 2**63 - 1) \
            and schema.format is None or (schema.type == OpenAPIType.INTEGER and schema.maximum is not None
                                          and schema.maximum >= 2**63 - 1):
        # app/inputs.py refuses an integer beyond int64 everywhere; 2^63-1 printed as a float is 2^63, one beyond
        changes.update(maximum=None, format="int64")
    if schema.type == OpenAPIType.NUMBER and schema.maximum is None and schema.exclusive_maximum is None:
        changes.update(maximum=NUMBER_LIMIT, minimum=-NUMBER_LIMIT if schema.minimum is None else schema.minimum)
    if schema.type == OpenAPIType.STRING and schema.pattern is None and schema.format is None \
            and schema.enum is None and schema.const is None:
        changes["pattern"] = NO_NUL
    if schema.properties:
        changes["properties"] = {k: _fix(v, seen) if isinstance(v, Schema) else v for k, v in schema.properties.items()}
    if isinstance(schema.items, Schema):
        changes["items"] = _fix(schema.items, seen)
    if isinstance(schema.additional_properties, Schema):
        changes["additional_properties"] = _fix(schema.additional_properties, seen)
    if schema.all_of:
        changes["all_of"] = [_fix(b, seen) if isinstance(b, Schema) else b for b in schema.all_of]
    return dataclasses.replace(schema, **changes) if changes else schema


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
            for method in handler.http_methods:
                if handler.opt.get("form") is not None:
                    _FORMS[(_route_key(route.path), method.lower())] = handler.opt["form"]
                if handler.opt.get("body") is not None:
                    _BODIES[(_route_key(route.path), method.lower())] = handler.opt["body"]
            if needs_caller and not handler.security:
                handler.security = [{BEARER: []}]
                handler._resolved_security = Empty  # resolved again from the layers, now with ours
            if handler.opt.get("problem_responses", True) is False:
                # its own errors have another shape (Open311's array): a 401 may come in that shape (a token that
                # expired, answered by the route's error handler) or as the kernel's problem (_problems_too)
                own = dict(handler.responses or {})
                shape = own.get(400)
                if 401 not in own and isinstance(shape, ResponseSpec):
                    own[401] = dataclasses.replace(shape, description=_DESCRIPTIONS[401])
                _OWN_ERRORS[_route_key(route.path)] = (None, None)
                handler.responses = {401: problem(401), **own}
                continue
            statuses = {400, 401, 500, 503}  # 401: any route refuses a bearer token that is not valid
            if needs_caller:
                statuses.add(403)
            if "{" in route.path or _takes_input(handler):
                statuses.add(404)  # a path, a query or a body may name something that does not exist
            if handler.http_methods & {"POST", "PUT", "PATCH", "DELETE"}:
                statuses |= {409, 422}
            own = dict(handler.responses or {})
            # a route whose errors come in its own media type (FHIR's OperationOutcome) says so in its opt:
            # `error_media_type` and `error_container`; the kernel's 401 for a bad token stays a problem
            media, container = handler.opt.get("error_media_type"), handler.opt.get("error_container")
            if media:
                _OWN_ERRORS[_route_key(route.path)] = (media, container)
            handler.responses = {**{s: problem(s, media or PROBLEM_JSON, container or Problem)
                                    for s in sorted(statuses)}, **own}
