"""A local stand-in for FCM's HTTP v1 `messages:send`, for dev, tests and benchmarks. Nothing here calls Google.

The push sender (firebase-admin's credential and message encoding) is pointed at it (see
`notifications.sender.FirebaseSender(endpoint=...)`). It speaks the same protocol (HTTP/1.1, as served by uvicorn):
`POST {base}/v1/projects/{project}/messages:send` with `{"message": {...}, "validate_only": bool}`, answering
200 `{"name": "projects/{project}/messages/{id}"}` or FCM's error envelope
`{"error": {"code", "message", "status", "details": [{"@type": "...FcmError", "errorCode": ...}]}}`.

Two ways to run it:
- mounted: `Litestar([..., create_router()])` under `/stand-in/fcm` in the main API (dev/test only);
- standalone: `uvicorn --factory notifications.fcm_stand_in:create_app` (benchmarks, the sender's tests).

Faults are set per target through `/_control` on the same router (see `FaultRule`); tokens starting with `dead-`
always answer UNREGISTERED, so a million-token benchmark needs no per-token setup. All state lives in one
`FcmStandIn` object per router; nothing is shared between instances.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery, JSONBody

Answer = Literal[
    "UNREGISTERED",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "SENDER_ID_MISMATCH",
    "THIRD_PARTY_AUTH_ERROR",
]

MAX_PAYLOAD_BYTES = 4096
RECORDED_MESSAGES = 10_000
DEAD_PREFIX = "dead-"

# answer -> (HTTP status, google.rpc status, message), as FCM answers them.
_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for the target's message rate."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


_NO_RAW = msgspec.Raw()  # msgspec.Raw cannot be in a union with None: an empty Raw means "absent"


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    """FCM v1 `Message`; like FCM, unknown fields are refused. Sub-objects are kept raw (not checked)."""

    token: str | None = None
    fid: str | None = None
    topic: str | None = None
    condition: str | None = None
    name: str | None = None
    data: dict[str, str] | None = None
    notification: msgspec.Raw = _NO_RAW
    android: msgspec.Raw = _NO_RAW
    apns: msgspec.Raw = _NO_RAW
    webpush: msgspec.Raw = _NO_RAW
    fcm_options: msgspec.Raw = _NO_RAW


class _SendRequest(msgspec.Struct, forbid_unknown_fields=True):
    message: _Message
    validate_only: bool = False


_decode_send = msgspec.json.Decoder(_SendRequest).decode
_decode_any = msgspec.json.Decoder().decode


class FaultRule(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /_control/faults` body: make `token` (or every token starting with `prefix`) fail with `answer`.

    `times` failures then back to normal (None: forever); `retry_after` seconds go into a Retry-After header.
    A new rule for the same token or prefix replaces the old one.
    """

    answer: Answer
    token: str | None = None
    prefix: str | None = None
    times: int | None = None
    retry_after: float | None = None


@dataclass
class _Fault:
    answer: str
    left: int | None
    retry_after: float | None


def error_body(answer: str, message: str | None = None) -> tuple[int, bytes]:
    """FCM's error envelope for `answer`: (HTTP status, JSON body)."""
    status, rpc_status, default_message = _ERRORS[answer]
    body = {
        "error": {
            "code": status,
            "message": message or default_message,
            "status": rpc_status,
            "details": [{"@type": _FCM_ERROR_TYPE, "errorCode": answer}],
        }
    }
    return status, msgspec.json.encode(body)


class FcmStandIn:
    """The stand-in's state: counts per target, the last messages, fault rules and answer counts."""

    def __init__(self, recorded: int = RECORDED_MESSAGES) -> None:
        self._recorded_max = recorded
        self.reset()

    def reset(self) -> None:
        self.counts: dict[str, int] = {}  # target -> accepted messages; one int per target, cheap at 1M
        self.recorded: deque[tuple[str, str, bytes]] = deque(maxlen=self._recorded_max)  # (target, name, body)
        self.answers: Counter[str] = Counter()
        self.accepted = 0
        self.max_per_target = 0
        self.targets_over_one = 0
        self.faults: dict[str, _Fault] = {}
        self.prefix_faults: dict[str, _Fault] = {DEAD_PREFIX: _Fault("UNREGISTERED", None, None)}
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{int(time.time()):x}"

    def set_fault(self, rule: FaultRule) -> None:
        if (rule.token is None) == (rule.prefix is None):
            raise ValueError("exactly one of token and prefix")
        if rule.times is not None and rule.times < 0:
            raise ValueError("times must be >= 0")
        fault = _Fault(rule.answer, rule.times, rule.retry_after)
        if rule.token is not None:
            self.faults[rule.token] = fault
        else:
            self.prefix_faults[rule.prefix] = fault  # type: ignore[index]

    def _fault_for(self, target: str) -> _Fault | None:
        fault = self.faults.get(target)
        if fault is None:
            for prefix, rule in self.prefix_faults.items():
                if target.startswith(prefix):
                    fault = rule
                    break
            else:
                return None
        if fault.left is not None:
            if fault.left <= 0:
                return None
            fault.left -= 1
        return fault

    def handle_send(self, project: str, body: bytes) -> tuple[int, bytes, dict[str, str] | None]:
        """One `messages:send`: (HTTP status, JSON body, extra headers)."""
        try:
            request = _decode_send(body)
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            return self._refuse(f"Invalid JSON payload received. {error}")
        message = request.message
        targets = [t for t in (message.token, message.fid, message.topic, message.condition) if t is not None]
        if len(targets) != 1 or not targets[0]:
            return self._refuse("Exactly one of token, fid, topic or condition must be set.")
        if message.token is not None or message.fid is not None:
            target = targets[0]
        elif message.topic is not None:
            target = "/topics/" + message.topic
        else:
            target = "condition:" + targets[0]
        size = len(message.notification)
        if message.data:
            size += sum(len(k.encode()) + len(v.encode()) for k, v in message.data.items())
        if size > MAX_PAYLOAD_BYTES:
            return self._refuse(f"Message is too big: {size} bytes of payload, at most {MAX_PAYLOAD_BYTES}.")

        fault = self._fault_for(target)
        if fault is not None:
            self.answers[fault.answer] += 1
            status, payload = error_body(fault.answer)
            headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else None
            return status, payload, headers

        self.answers["OK"] += 1
        if request.validate_only:
            return 200, b'{"name":"projects/%s/messages/fake_message_id"}' % project.encode(), None
        name = f"projects/{project}/messages/{self._id_prefix}{next(self._ids):x}"
        count = self.counts.get(target, 0) + 1
        self.counts[target] = count
        self.accepted += 1
        if count > self.max_per_target:
            self.max_per_target = count
        if count == 2:
            self.targets_over_one += 1
        self.recorded.append((target, name, body))
        return 200, msgspec.json.encode({"name": name}), None

    def _refuse(self, message: str) -> tuple[int, bytes, None]:
        self.answers["INVALID_ARGUMENT"] += 1
        status, payload = error_body("INVALID_ARGUMENT", message)
        return status, payload, None

    def messages_for(self, target: str | None) -> list[dict[str, Any]]:
        return [
            {"name": name, "target": t, **_decode_any(body)}
            for t, name, body in self.recorded
            if target is None or t == target
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "distinct_targets": len(self.counts),
            "max_per_target": self.max_per_target,
            "targets_over_one": self.targets_over_one,
            "answers": dict(self.answers),
        }


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def create_router(stand_in: FcmStandIn | None = None, path: str = "/") -> Router:
    """The stand-in's routes, bound to `stand_in` (a new one if None), e.g. mounted at `/stand-in/fcm`.

    The state is reachable as `router.opt["fcm_stand_in"]`.
    """
    state = stand_in if stand_in is not None else FcmStandIn()

    # The hot path: raw body in, bytes out, no Litestar parsing or serialisation.
    @post("/v1/projects/{project:str}/messages:send", status_code=200)
    async def send(request: Request, project: FromPath[str]) -> Response[bytes]:
        status, payload, headers = state.handle_send(project, await request.body())
        return Response(payload, status_code=status, media_type="application/json", headers=headers)

    @post("/_control/faults", status_code=200)
    async def set_fault(data: JSONBody[FaultRule]) -> Response[dict[str, Any]]:
        try:
            state.set_fault(data)
        except ValueError as error:
            return Response({"error": str(error)}, status_code=400)
        return Response({"ok": True})

    @get("/_control/messages")
    async def messages(token: FromQuery[str | None] = None) -> dict[str, Any]:
        return {"count": state.counts.get(token, 0) if token else state.accepted, "messages": state.messages_for(token)}

    @get("/_control/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @post("/_control/reset", status_code=200)
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"ok": True}

    return Router(
        path=path,
        route_handlers=[send, set_fault, messages, stats, reset],
        include_in_schema=False,
        # firebase-admin sends `Authorization: Bearer <its token>`: mounted in the app (dev), the kernel must not
        # take it for one of its own access tokens and answer 401
        opt={"fcm_stand_in": state, "bearer": "foreign"},
    )


def create_app(stand_in: FcmStandIn | None = None) -> Litestar:
    """The stand-in alone: `uvicorn --factory notifications.fcm_stand_in:create_app --port N`."""
    router = create_router(stand_in)
    app = Litestar([router], openapi_config=None)
    app.state["fcm_stand_in"] = router.opt["fcm_stand_in"]
    return app
