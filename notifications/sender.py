"""Push senders: the interface the delivery worker uses, and its firebase-admin implementation.

A sender sends one batch (at most 500, FCM's and firebase-admin's limit) and answers one `PushResult` per message,
in order. It never retries: the delivery worker decides what to do with each error code.

`FirebaseSender` uses firebase-admin's credential, message encoding and error mapping, and sends FCM HTTP v1
`messages:send` requests itself over a small keep-alive HTTP/1.1 pool (`notifications.http1`; see the class for why).
With `endpoint` set (dev, test, benchmarks) it talks to a server speaking FCM's HTTP v1 protocol, normally
`notifications.fcm_stand_in` mounted at `{base_url}/stand-in/fcm`, with a dummy bearer token; with `endpoint=None` it
talks to Google with application default credentials (production only, never in tests)."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import firebase_admin
import google.auth.credentials
import google.auth.transport.requests
import httpx
import msgspec
from firebase_admin import credentials, exceptions, messaging
from firebase_admin._http_client import METRICS_HEADERS as _METRICS_HEADERS
from google.auth.credentials import TokenState

from notifications import http1

log = logging.getLogger(__name__)

MAX_BATCH = 500
GOOGLE_FCM_URL = "https://fcm.googleapis.com/v1/projects/{0}/messages:send"


@dataclass
class PushMessage:
    token: str
    title: str
    body: str
    data: dict[str, str]
    urgency: Literal["normal", "emergency"]
    collapse_key: str | None = None
    ttl_seconds: int = 86400


@dataclass
class PushResult:
    token: str
    ok: bool
    message_id: str | None = None
    # UNREGISTERED, QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, INVALID_ARGUMENT, SENDER_ID_MISMATCH,
    # THIRD_PARTY_AUTH_ERROR, UNKNOWN; None when ok.
    error_code: str | None = None
    retry_after: float | None = field(default=None)  # seconds, from Retry-After on QUOTA_EXCEEDED (or 503)


class PushSender(Protocol):
    async def send(self, messages: Sequence[PushMessage]) -> list[PushResult]:
        """Send at most 500 messages; one result per message, in the same order."""
        ...


class _FixedToken(google.auth.credentials.Credentials):
    """A bearer token that never expires and "refreshes" as a no-op."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request: Any) -> None:
        pass


class StandInCredential(credentials.Base):
    """Credentials for a local FCM stand-in, which checks none: `Authorization: Bearer stand-in`.

    Not google-auth's AnonymousCredentials: firebase-admin's httpx auth flow answers every 401 by refreshing the
    credential and re-sending (up to 2 times), and AnonymousCredentials.refresh() raises, which turns the answer
    into an UnknownError (FCM answers THIRD_PARTY_AUTH_ERROR with a 401).
    """

    def get_credential(self) -> google.auth.credentials.Credentials:
        return _FixedToken("stand-in")


# Most specific first: UnregisteredError is a NotFoundError, QuotaExceededError a ResourceExhaustedError,
# SenderIdMismatchError a PermissionDeniedError, ThirdPartyAuthError an UnauthenticatedError.
_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (messaging.UnregisteredError, "UNREGISTERED"),
    (messaging.QuotaExceededError, "QUOTA_EXCEEDED"),
    (messaging.SenderIdMismatchError, "SENDER_ID_MISMATCH"),
    (messaging.ThirdPartyAuthError, "THIRD_PARTY_AUTH_ERROR"),
    (exceptions.ResourceExhaustedError, "QUOTA_EXCEEDED"),  # a 429 without FCM's errorCode detail
    (exceptions.UnavailableError, "UNAVAILABLE"),  # 503, and also "could not connect"
    (exceptions.InternalError, "INTERNAL"),
    (exceptions.InvalidArgumentError, "INVALID_ARGUMENT"),
)
# Everything else is UNKNOWN, notably DeadlineExceededError (a timeout: the message may or may not have gone out).

_app_names = itertools.count(1)


def error_code(error: BaseException | None) -> str:
    for cls, code in _ERROR_CODES:
        if isinstance(error, cls):
            return code
    return "UNKNOWN"


def retry_after_seconds(error: BaseException | None) -> float | None:
    """Retry-After of the HTTP answer behind a FirebaseError, in seconds (delta-seconds or an HTTP date)."""
    response = getattr(error, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def to_fcm_message(message: PushMessage) -> messaging.Message:
    """The firebase-admin `Message` for one push: notification + data, priorities and TTL per platform."""
    emergency = message.urgency == "emergency"
    apns_headers = {
        "apns-priority": "10" if emergency else "5",
        "apns-push-type": "alert",
        # APNs wants an absolute expiry (UNIX seconds); 0 means "try once, do not store".
        "apns-expiration": str(int(time.time()) + message.ttl_seconds) if message.ttl_seconds > 0 else "0",
    }
    if message.collapse_key:
        apns_headers["apns-collapse-id"] = message.collapse_key
    fcm = messaging.Message(
        notification=messaging.Notification(title=message.title, body=message.body),
        data=message.data,
        android=messaging.AndroidConfig(
            collapse_key=message.collapse_key,
            priority="high" if emergency else "normal",
            ttl=message.ttl_seconds,
        ),
        apns=messaging.APNSConfig(headers=apns_headers),
    )
    # firebase-admin 7.7 deprecates `Message(token=...)` in favour of `fid` (a Firebase installation ID) and warns
    # in the constructor. Apps register FCM *registration tokens* (FirebaseMessaging.getToken()), which is what
    # `token` carries and what FCM v1 still accepts; a token is not an installation ID, so `fid` would be wrong.
    # Setting the public attribute after construction sends `token` without the warning and without touching the
    # process-wide warning filters (warnings.catch_warnings is not thread- or task-safe).
    fcm.token = message.token
    return fcm


def _check(message: PushMessage) -> str | None:
    """Why firebase-admin would refuse to encode this message (its ValueError would fail the whole send), or None."""
    if not isinstance(message.token, str) or not message.token:
        return "token must be a non-empty string"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in message.data.items()):
        return "data keys and values must be strings"
    if not isinstance(message.ttl_seconds, int) or message.ttl_seconds < 0:
        return "ttl_seconds must be a non-negative integer"
    if message.urgency not in ("normal", "emergency"):
        return "urgency must be normal or emergency"
    return None


class FirebaseSender:
    """`PushSender`: firebase-admin's credential and message encoding, HTTP v1 requests sent over one keep-alive pool.

    What stays firebase-admin's (one firebase app per sender, checked against firebase-admin 7.7.0):
    - the credential: `app.credential.get_credential()`, a google-auth credential. Its `before_request` (the same call
      firebase-admin's `GoogleAuthCredentialFlow` makes per request) fills the Authorization header, refreshing the
      access token when it is stale. Here it runs once per token, not per message: the prepared headers are reused
      until the token changes or google-auth no longer calls it fresh (a few minutes before it expires), and then it
      runs in a thread, so fetching a token never blocks the event loop. A 401 is answered like firebase-admin does:
      an explicit `refresh()` and the request sent again, up to 2 times (so FCM's THIRD_PARTY_AUTH_ERROR, a 401,
      reaches FCM 3 times before it surfaces).
    - the message: `messaging.Message` encoded by `_MessagingService.encode_message`, sent as `{"message": ...}`, with
      the service's own FCM headers (`X-GOOG-API-FORMAT-VERSION`, `X-FIREBASE-CLIENT`) and firebase-admin's metrics
      header.
    - the errors: a non-2xx answer becomes the `httpx.HTTPStatusError` firebase-admin's async client would raise and
      goes through the service's `_handle_fcm_httpx_error`, which reads `error.details[].errorCode` into
      `UnregisteredError`, `QuotaExceededError` and the rest; a connection that cannot be made becomes an
      `httpx.ConnectError` (UnavailableError), a timeout an `httpx.TimeoutException` (DeadlineExceededError), any
      other transport failure UnknownError, as on firebase-admin's path.

    What is ours: the HTTP exchange. `send_each_async` costs about 1 ms of CPU per message (a deep copy of its retry
    config, a `requests.Session` built per request by the auth flow, httpx's request/response model and httpcore's
    pool bookkeeping); aiohttp posted the same bytes for about 0.2 ms here, `http1.Http1Pool` (one write of prebuilt
    bytes per request, httptools parsing the answer, no task or request object per message) for a few tens of
    microseconds. There are no transport retries: the delivery worker owns retries (firebase-admin's default 500/503
    retries, which slept 7 s and hid one-off faults, were already switched off). FCM accepts HTTP/1.1 as well as
    HTTP/2; firebase-admin's client spoke HTTP/2 to Google (and HTTP/1.1 to a plain-http stand-in, which uvicorn
    serves), this one speaks HTTP/1.1 (TLS to Google) to both, over up to `max_in_flight` connections instead of one
    multiplexed one.

    At most `max_in_flight` requests are in flight per sender (`IHANOI_FCM_CONCURRENCY`, shared by every batch being
    sent at once), over at most as many keep-alive connections. A batch goes out as one request per message; a
    failure outside the HTTP exchange fails only its own message.
    """

    def __init__(
        self,
        project_id: str,
        endpoint: str | None = None,
        credential: credentials.Base | None = None,
        *,
        timeout: float = 30.0,
        max_in_flight: int = 16,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if credential is None:
            credential = StandInCredential() if endpoint else credentials.ApplicationDefault()
        self.project_id = project_id
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        base = self.endpoint + "/v1/projects/{0}/messages:send" if self.endpoint else GOOGLE_FCM_URL
        self.fcm_url = base.format(project_id)
        self.max_in_flight = max_in_flight
        self._timeout = timeout
        self._app = firebase_admin.initialize_app(
            credential, {"projectId": project_id, "httpTimeout": timeout}, name=f"ihanoi-push-{next(_app_names)}",
        )
        # The messaging service is used for its FCM headers and its error mapping only; it never sends here.
        self._service = messaging._get_messaging_service(self._app)
        self._google_credential = self._app.credential.get_credential()
        self._base_headers = {**_METRICS_HEADERS, **self._service._fcm_headers, "Content-Type": "application/json"}
        self._auth_request: Any = None  # google-auth's requests transport, built once, for token refreshes only
        self._headers: dict[str, str] | None = None  # _base_headers + the credential's, for `_headers_token`
        self._headers_token: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auth_lock: asyncio.Lock | None = None
        self._pool: http1.Http1Pool | None = None
        self._head: tuple[dict[str, str], bytes] | None = None  # headers -> request line and headers, encoded
        self._path = ""

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        # connections and asyncio primitives belong to the loop they first ran on: new ones for this loop
        self._loop = loop
        self._auth_lock = asyncio.Lock()
        # The pool's limit is the window of requests in flight, shared by every batch being sent at once. Idle
        # connections are dropped after 4 s, under the 5 s after which common servers (uvicorn's default, many
        # proxies) close them, so a request is never written to a connection the server is closing.
        self._pool = http1.Http1Pool(self.fcm_url, limit=self.max_in_flight, timeout=self._timeout, idle_timeout=4.0)
        self._path = urlsplit(self.fcm_url).path

    async def send(self, messages: Sequence[PushMessage]) -> list[PushResult]:
        if len(messages) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} messages a batch, got {len(messages)}")
        if not messages:
            return []
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start_on(loop)
        # A few lanes each sending one message after another, not a task per message: creating and scheduling 500
        # tasks a batch cost more than the requests' own bookkeeping. The lanes of every batch being sent share the
        # window, which keeps `max_in_flight` requests in flight; a batch gets no more lanes than that.
        results: list[PushResult | None] = [None] * len(messages)
        pending = iter(enumerate(messages))

        async def lane() -> None:
            for index, message in pending:
                results[index] = await self._send_one(message)

        await asyncio.gather(*(lane() for _ in range(min(self.max_in_flight, len(messages)))))
        return results  # type: ignore[return-value]  # every index was filled by a lane

    async def _send_one(self, message: PushMessage) -> PushResult:
        problem = _check(message)
        body = None
        if not problem:
            try:
                encoded = messaging._MessagingService.encode_message(to_fcm_message(message))
                body = msgspec.json.encode({"message": encoded})
            except (ValueError, TypeError, msgspec.EncodeError) as error:
                problem = str(error)
        if body is None:  # firebase-admin would have raised ValueError before sending
            log.warning("push refused before sending: %s", problem)
            return PushResult(token=str(message.token), ok=False, error_code="INVALID_ARGUMENT")
        try:
            status, content, headers = await self._post(body)
        except (http1.TransportError, TimeoutError, OSError) as error:
            return self._failed(message.token, self._service._handle_fcm_httpx_error(_as_httpx_error(error)))
        except Exception:
            # e.g. google-auth failing to refresh the token: whether the request went out is unknown
            log.exception("FCM send failed outside the HTTP exchange")
            return PushResult(token=message.token, ok=False, error_code="UNKNOWN")
        if 200 <= status < 300:
            try:
                name = _decode_name(content).name
            except msgspec.DecodeError:
                log.warning("FCM answered %s without a message name", status)
                return PushResult(token=message.token, ok=False, error_code="UNKNOWN")
            return PushResult(token=message.token, ok=True, message_id=name)
        request = httpx.Request("POST", self.fcm_url)
        response = httpx.Response(status, headers=headers, content=content, request=request)
        error = httpx.HTTPStatusError(f"FCM answered {status}", request=request, response=response)
        return self._failed(message.token, self._service._handle_fcm_httpx_error(error))

    @staticmethod
    def _failed(token: str, error: exceptions.FirebaseError) -> PushResult:
        code = error_code(error)
        retry_after = retry_after_seconds(error) if code in ("QUOTA_EXCEEDED", "UNAVAILABLE") else None
        return PushResult(token=token, ok=False, error_code=code, retry_after=retry_after)

    async def _post(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]] | None]:
        """One `messages:send`, sent again after a 401 with a refreshed token (twice at most, as firebase-admin)."""
        assert self._pool is not None
        refreshes = 0
        while True:
            headers = await self._auth_headers()
            if self._head is None or self._head[0] is not headers:  # once per token
                self._head = (headers, self._pool.request_head("POST", self._path, headers))
            # the answer's headers come only for errors (Retry-After): not on the hot path
            status, answer_headers, content = await self._pool.request(self._head[1], body)
            if status != 401 or refreshes >= 2:
                return status, content, answer_headers
            refreshes += 1
            await self._refresh(headers)

    def _headers_fresh(self) -> bool:
        credential = self._google_credential
        if self._headers is None:
            return False
        if credential.token is None:  # a credential without tokens (anonymous): nothing to refresh
            return True
        return credential.token == self._headers_token and credential.token_state is TokenState.FRESH

    async def _auth_headers(self) -> dict[str, str]:
        if self._headers_fresh():
            return self._headers  # type: ignore[return-value]
        assert self._auth_lock is not None
        async with self._auth_lock:  # one refresh at a time; the others wait and then find the headers fresh
            if not self._headers_fresh():
                headers = dict(self._base_headers)
                await asyncio.to_thread(self._before_request, headers)
                self._headers, self._headers_token = headers, self._google_credential.token
        return self._headers  # type: ignore[return-value]

    def _before_request(self, headers: dict[str, str]) -> None:
        """google-auth's per-request step (refresh when not fresh, then apply the token), in a worker thread."""
        if self._auth_request is None:
            self._auth_request = google.auth.transport.requests.Request()
        self._google_credential.before_request(self._auth_request, "POST", self.fcm_url, headers)

    async def _refresh(self, used: dict[str, str]) -> None:
        """A forced refresh after a 401, unless another request already replaced the headers it was sent with."""
        assert self._auth_lock is not None
        async with self._auth_lock:
            if self._headers is not used:
                return
            if self._auth_request is None:
                self._auth_request = google.auth.transport.requests.Request()
            await asyncio.to_thread(self._google_credential.refresh, self._auth_request)
            self._headers = None  # rebuilt with the new token by the next _auth_headers

    async def aclose(self) -> None:
        """Close the connections and delete the firebase app."""
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.close()
        self._pool = None
        self._loop = None
        if self._app is not None:
            # delete_app() calls the service's close(), which does asyncio.run(aclose()) on firebase-admin's own
            # (unused) httpx client: not allowed on a running loop, fine in a worker thread.
            await asyncio.to_thread(firebase_admin.delete_app, self._app)
            self._app = None  # type: ignore[assignment]


class _Name(msgspec.Struct):
    name: str


_decode_name = msgspec.json.Decoder(_Name).decode


def _as_httpx_error(error: BaseException) -> httpx.HTTPError:
    """The httpx error firebase-admin's async client would have raised for this transport failure."""
    if isinstance(error, TimeoutError):
        return httpx.TimeoutException(str(error) or "timed out")
    if isinstance(error, http1.ConnectError):  # the connection could not be made: nothing was sent
        return httpx.ConnectError(str(error))
    return httpx.TransportError(f"{type(error).__name__}: {error}")
