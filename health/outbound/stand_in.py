"""A local stand-in for the social-insurance (Vietnam Social Security) visit endpoint, for dev and tests only.

Mounted with the health module's dev routers (IHANOI_ENV dev or test) under `/stand-in/social-insurance`:

- `POST /v1/visits` takes one finished visit (`VisitClaim`). The receiver is idempotent on `visit_key` and
  `revision`: the first delivery of a revision is recorded and answered 201 with a receipt number, every later one
  of the same revision is answered 200 with the same receipt and `duplicate: true`, and nothing is recorded twice.
  A higher revision of a visit (it changed after it was sent) replaces the visit; a lower one arriving late is
  recorded among the revisions but never replaces a higher one (`stale: true`).
- `POST /_control/faults` makes the next `times` deliveries fail with `status` (503 by default, with Retry-After
  if given), or with `accept_then_fail` record them and then answer 503, as a receiver that committed but whose
  answer was lost: the outbox's retries must then show up as duplicates, not as second visits.
- `GET /_control/received` lists what was recorded (each visit's latest revision and receipt, the revisions taken,
  deliveries per key) and the attempts seen.

Its records live in Redis under the app's prefix (a test's prefix in tests), kept for a week.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Annotated

import msgspec
from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

PREFIX = "/stand-in/social-insurance"
KEEP_SECONDS = 7 * 24 * 3600


class Diagnosis(msgspec.Struct, forbid_unknown_fields=True):
    system: str
    code: str
    display: str | None = None


class VisitClaim(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One finished visit as the receiver takes it (what `health.outbound.service` sends)."""

    visit_key: Annotated[str, msgspec.Meta(min_length=8, max_length=200)]
    revision: Annotated[int, msgspec.Meta(ge=1)] = 1
    facility_code: str
    facility_bhyt_code: str | None = None
    insurance_card: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}[1-5][0-9]{12}$")] | None = None
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    visit_class: str | None = None
    diagnoses: list[Diagnosis] = []
    medications: list[str] = []


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    times: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503
    retry_after: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None
    accept_then_fail: bool = False


def _key(state: State, *parts: str) -> str:
    return state.redis.key("stand-in", "social-insurance", *parts)


async def _fault(state: State) -> dict | None:
    """The fault to answer with now, using up one of its times; None when deliveries go through."""
    raw = await state.redis.client.get(_key(state, "fault"))
    if raw is None:
        return None
    left = await state.redis.client.decr(_key(state, "fault-left"))
    if left < 0:
        await state.redis.client.delete(_key(state, "fault"), _key(state, "fault-left"))
        return None
    return json.loads(raw)


@post("/v1/visits", include_in_schema=False, status_code=201)
async def receive(state: State, data: JSONBody[VisitClaim]) -> Response[dict]:
    await state.redis.client.incr(_key(state, "attempts"))
    fault = await _fault(state)
    headers = {"Retry-After": str(fault["retry_after"])} if fault and fault.get("retry_after") is not None else {}
    if fault and not fault.get("accept_then_fail"):
        return Response({"error": "stand-in fault"}, status_code=fault["status"], headers=headers)
    visits, revisions = _key(state, "visits"), _key(state, "revisions")
    record = {"visit_key": data.visit_key, "revision": data.revision,
              "receipt": "BHXH-" + secrets.token_hex(6).upper(),
              "received_at": dt.datetime.now(dt.UTC).isoformat(), "claim": msgspec.to_builtins(data)}
    first = await state.redis.client.hsetnx(revisions, f"{data.visit_key}#{data.revision}", json.dumps(record))
    stale = False
    if first:
        current = await state.redis.client.hget(visits, data.visit_key)
        stale = current is not None and json.loads(current)["revision"] > data.revision
        if not stale:
            await state.redis.client.hset(visits, data.visit_key, json.dumps(record))
    else:
        record = json.loads(await state.redis.client.hget(revisions, f"{data.visit_key}#{data.revision}"))
    for name in ("visits", "revisions"):
        await state.redis.client.expire(_key(state, name), KEEP_SECONDS)
    await state.redis.client.hincrby(_key(state, "deliveries"), data.visit_key, 1)
    await state.redis.client.expire(_key(state, "deliveries"), KEEP_SECONDS)
    if fault:  # recorded, but the answer is lost on the way back
        return Response({"error": "stand-in fault after recording"}, status_code=fault["status"], headers=headers)
    return Response({"visit_key": data.visit_key, "revision": data.revision, "receipt": record["receipt"],
                     "duplicate": not first, "stale": stale}, status_code=201 if first else 200)


@post("/_control/faults", include_in_schema=False, status_code=200)
async def set_fault(state: State, data: JSONBody[Fault]) -> dict:
    await state.redis.client.set(_key(state, "fault"), json.dumps(msgspec.to_builtins(data)), ex=KEEP_SECONDS)
    await state.redis.client.set(_key(state, "fault-left"), data.times, ex=KEEP_SECONDS)
    return {"times": data.times, "status": data.status}


@get("/_control/received", include_in_schema=False)
async def received(state: State) -> dict:
    visits = await state.redis.client.hgetall(_key(state, "visits"))
    revisions = await state.redis.client.hgetall(_key(state, "revisions"))
    deliveries = await state.redis.client.hgetall(_key(state, "deliveries"))
    attempts = await state.redis.client.get(_key(state, "attempts"))

    def text(value) -> str:
        return value.decode() if isinstance(value, bytes) else value

    items = []
    for key, raw in sorted(visits.items()):
        record = json.loads(raw)
        taken = sorted(json.loads(r)["revision"] for k, r in revisions.items()
                       if text(k).rpartition("#")[0] == text(key))
        items.append(record | {"deliveries": int(deliveries.get(key, 0)), "revisions": taken})
    return {"visits": items, "attempts": int(text(attempts) or 0) if attempts else 0}


def create_router() -> Router:
    return Router(path=PREFIX, route_handlers=[receive, set_fault, received], include_in_schema=False)
