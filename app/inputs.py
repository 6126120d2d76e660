"""Input every route refuses before its handler runs, so no client's mistake reaches the database as a 500.

Checked once for every route, present and future (a before-request hook):
- a NUL character in the path or a query parameter (PostgreSQL cannot store it in text);
- a query parameter the handler takes once, given twice;
- a JSON body nested deeper than `MAX_DEPTH` (the decoder would recurse until it fails);
- a JSON body holding a NUL character in a string, or an integer beyond 64 bits (PostgreSQL's bigint),
  named by its path in the body (`place.lat`, `items[3].name`).

Typed fields do the rest: ids are `web.Id` (1..2^63-1), text written by people is `web.HumanText` (no
control characters). Each refusal is a 400 problem naming the field; none is logged as an error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec
from litestar import Request

from app.errors import FieldError, InvalidInput

MAX_DEPTH = 32
_SINGLE = "ihanoi.single_valued_query"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")
# a number of 19 digits or more, or one with an exponent: either may be beyond int64. Only where a JSON number
# can start (after ':', ',' or '['), so that digits inside a string (a base64 code holding "3e4", a phone
# number) do not send every such body through a full decode; a string that happens to hold ":1e5" only costs that.
_BIG_NUMBER = re.compile(rb"[:,\[]\s*-?(?:\d{19}|\d+(?:\.\d+)?[eE])")


async def check_request(request: Request) -> None:
    _check_path_and_query(request)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        body = await request.body()
        if body and body.lstrip()[:1] in (b"{", b"["):
            check_json(body)


def _check_path_and_query(request: Request) -> None:
    for name, value in request.path_params.items():
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput.field(name, "integer beyond 64 bits: no such id", source="path")
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInput.field(name, "a NUL character is not allowed", source="path")
    if "\x00" in request.scope["path"]:
        raise InvalidInput.field("path", "the path holds a NUL character", source="path")
    query = request.scope.get("query_string", b"")
    if b"&" in query:
        _check_repeated(request, query)
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in value or "\x00" in name:
                raise InvalidInput.field(unquote(name).replace("\x00", "") or "query",
                                         "a NUL character is not allowed", source="query")


def _check_repeated(request: Request, query: bytes) -> None:
    """A parameter the handler takes once, given twice (`?on=x&on=y`): which one counts would be a guess."""
    seen: set[str] = set()
    repeated = {n for n, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if n in seen or seen.add(n)}
    if repeated:
        once = _single_valued(request.route_handler)
        for name in sorted(repeated & once):
            raise InvalidInput.field(name, "give this parameter once", source="query")


def _single_valued(handler) -> frozenset[str]:
    """The query parameters of the handler's own signature that hold one value (cached on the handler)."""
    cached = handler.opt.get(_SINGLE)
    if cached is None:
        provided = set(handler.resolve_dependencies())
        in_path = {name for path in handler.paths for name in re.findall(r"\{(\w+)", path)}
        cached = frozenset(
            getattr(p.kwarg_definition, "query", None) or getattr(p.kwarg_definition, "name", None) or name
            for name, p in handler.parsed_fn_signature.parameters.items()
            if type(p.kwarg_definition).__name__ in ("QueryParameter", "ParameterKwarg")
            and not getattr(p.kwarg_definition, "header", None) and not getattr(p.kwarg_definition, "cookie", None)
            and name not in provided and name not in in_path and not p.is_non_string_collection)
        handler.opt[_SINGLE] = cached
    return cached


def check_json(body: bytes) -> None:
    """Depth first (without decoding), then NUL and int64 only when the raw text hints at them."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        depth = deepest = 0
        for bracket in _BRACKETS.findall(_STRING.sub(b'""', body)):
            depth += 1 if bracket in (b"[", b"{") else -1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    raise InvalidInput.field("$", f"JSON nested deeper than {MAX_DEPTH} levels", source="body")
    if b"\\u0000" not in body and not _BIG_NUMBER.search(body):
        return
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return  # not JSON after all: the route's own decoding answers that
    problem = _find(value, "")
    if problem is not None:
        raise InvalidInput(f"{problem.field}: {problem.message}", errors=[problem])


def _find(value: Any, path: str) -> FieldError | None:
    if isinstance(value, str):
        if "\x00" in value:
            return FieldError(field=path or "$", message="a NUL character is not allowed", source="body")
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return FieldError(field=path or "$", message="integer beyond 64 bits", source="body")
    elif isinstance(value, float):
        if value.is_integer() and not INT64_MIN <= value <= INT64_MAX:
            return FieldError(field=path or "$", message="number beyond 64-bit integers", source="body")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return FieldError(field=path or "$", message="a NUL character in a field name", source="body")
            found = _find(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
