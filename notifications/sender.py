"""Push senders: the interface the delivery worker uses, and its firebase-admin implementation.

A sender sends one batch (at most 500, FCM's and firebase-admin's limit) and answers one `PushResult` per message,
in order. It never retries: the delivery worker decides what to do with each error code.

`FirebaseSender` goes through the real firebase-admin client (`messaging.send_each_async`). With `endpoint` set (dev,
test, benchmarks) it talks to a server speaking FCM's HTTP v1 protocol, normally `notifications.fcm_stand_in` mounted
at `{base_url}/stand-in/fcm`, with a dummy bearer token; with `endpoint=None` it talks to Google with application
default credentials (production only, never in tests).
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import firebase_admin
import google.auth.credentials
from firebase_admin import credentials, exceptions, messaging

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


def _use_endpoint(app: firebase_admin.App, fcm_url: str, timeout: float) -> Any:
    """Point `app`'s messaging service at `fcm_url` and give it a fresh async HTTP client without internal retries.

    The one place that touches firebase-admin internals (checked against firebase-admin 7.7.0):
    - `_MessagingService._fcm_url` is the per-instance URL built from the class attribute `FCM_URL` in __init__;
      setting it on this app's instance (not the class) leaves other apps, e.g. a real sender, alone.
    - `_MessagingService._async_client` is the `HttpxAsyncClient` that `send_each_async` uses. By default it wraps
      httpx in `HttpxRetryTransport` with `HttpxRetry(max_retries=4, status_forcelist=[500, 503],
      backoff_factor=0.5)`: a 500/503 is sent up to 5 times in all, sleeping 0 + 1 + 2 + 4 s in between (7 s)
      before the error surfaces, and a single transient fault (`times: 1`) is hidden entirely. The delivery worker
      owns retries, so we install the same client class with `max_retries=0`: one attempt, every 500/503 surfaces
      at once. (The SDK never retries 429 either way: 429 is not in the list and Retry-After is not honoured.)
      Connection errors and timeouts were never retried on this path (httpx transport retries=0).
    - Left as it is: the credential's auth flow (`GoogleAuthCredentialFlow`, above the transport) answers a 401 by
      refreshing the OAuth token and re-sending, up to 2 times. Against Google a 401 may really be an expired token;
      it is also how FCM answers THIRD_PARTY_AUTH_ERROR, which therefore reaches FCM 3 times before it surfaces.
    - httpx clients are bound to the event loop they first run on, so `FirebaseSender` calls this again when it
      finds itself on a new loop.
    - Called once per shard (firebase app) of a `FirebaseSender`: each gets its own client, so its own pool.
    Returns the installed client (its `aclose()` is public).
    """
    from firebase_admin._http_client import HttpxAsyncClient
    from firebase_admin._retry import HttpxRetry

    service = messaging._get_messaging_service(app)
    service._fcm_url = fcm_url
    client = HttpxAsyncClient(credential=service._credential, timeout=timeout, retry_config=HttpxRetry(max_retries=0))
    service._async_client = client
    return client


@dataclass
class _Shard:
    """One firebase app of a sender: its own firebase-admin HTTP client, so its own connection pool."""

    app: firebase_admin.App
    client: Any = None  # the HttpxAsyncClient installed on the current event loop, None until first used there
    in_flight: int = 0


class FirebaseSender:
    """`PushSender` through firebase-admin's `send_each_async`, over a few named firebase apps per sender.

    Why `send_each_async` and not `send_each` in a thread: the async path runs on our event loop over httpx clients
    (HTTP/2 to Google, keep-alive HTTP/1.1 to a local stand-in) with no thread per message; `send_each` starts a
    ThreadPoolExecutor of up to 500 threads for every batch. Its built-in 500/503 retries are removed in
    `_use_endpoint`.

    At most `max_in_flight` requests are in flight per sender (`IHANOI_FCM_CONCURRENCY`, shared by every batch
    being sent at once): a batch goes out as one-message `send_each_async` calls through that window rather than
    one call that starts all 500 requests together. One-message calls also keep a failure outside the HTTP
    exchange from failing the others.

    The window is spread over shards of at most `per_client` requests, each shard a firebase app of its own (one
    firebase-admin `HttpxAsyncClient`, so one httpcore connection pool), created when the window first needs it.
    Why: httpcore's pool walks every pooled connection on each request start and each response close, and for every
    idle one asks anyio whether the socket is readable (which rebuilds the socket's attribute table with a
    getpeername() and then poll()s), and counts the idle connections again for each idle one. Measured over loopback
    HTTP/1.1 on 2 cores, one client with 16 connections spent 36% of the worker's CPU there (2.0 ms CPU a message
    in all); four clients of four connections each send the same 16 at once for about 1.1 ms a message. Against
    Google (HTTP/2) each shard is one connection with up to `per_client` streams.
    """

    def __init__(
        self,
        project_id: str,
        endpoint: str | None = None,
        credential: credentials.Base | None = None,
        *,
        timeout: float = 30.0,
        max_in_flight: int = 16,
        per_client: int = 4,
    ) -> None:
        if max_in_flight < 1 or per_client < 1:
            raise ValueError("max_in_flight and per_client must be at least 1")
        if credential is None:
            credential = StandInCredential() if endpoint else credentials.ApplicationDefault()
        self.project_id = project_id
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        base = self.endpoint + "/v1/projects/{0}/messages:send" if self.endpoint else GOOGLE_FCM_URL
        self.fcm_url = base.format(project_id)
        self.max_in_flight = max_in_flight
        self.max_clients = -(-max_in_flight // per_client)  # ceil
        self.per_client = -(-max_in_flight // self.max_clients)  # the window spread evenly
        self._timeout = timeout
        self._credential = credential
        self._shards: list[_Shard] = []  # apps outlive event loops; their clients do not
        self._live = 0  # shards with a client on the current loop: self._shards[:self._live]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._window: asyncio.Semaphore | None = None
        self._add_app()  # the first app at once (as before); the others when the window first needs them

    def _add_app(self) -> _Shard:
        app = firebase_admin.initialize_app(
            self._credential, {"projectId": self.project_id, "httpTimeout": self._timeout},
            name=f"ihanoi-push-{next(_app_names)}",
        )
        shard = _Shard(app)
        self._shards.append(shard)
        return shard

    def _shard(self) -> _Shard:
        """The least busy shard on this loop, a new one if every live shard has `per_client` in flight."""
        live = self._shards[: self._live]
        shard = min(live, key=lambda s: s.in_flight) if live else None
        if shard is None or (shard.in_flight >= self.per_client and self._live < self.max_clients):
            shard = self._shards[self._live] if self._live < len(self._shards) else self._add_app()
            shard.client = _use_endpoint(shard.app, self.fcm_url, self._timeout)
            shard.in_flight = 0
            self._live += 1
        return shard

    async def send(self, messages: Sequence[PushMessage]) -> list[PushResult]:
        if len(messages) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} messages a batch, got {len(messages)}")
        if not messages:
            return []
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # httpx clients (and asyncio primitives) belong to the loop they first ran on: new ones for this loop
            self._loop = loop
            self._window = asyncio.Semaphore(self.max_in_flight)
            self._live = 0
        return list(await asyncio.gather(*(self._send_one(message) for message in messages)))

    async def _send_one(self, message: PushMessage) -> PushResult:
        problem = _check(message)
        if problem:  # firebase-admin would raise ValueError before sending
            log.warning("push refused before sending: %s", problem)
            return PushResult(token=str(message.token), ok=False, error_code="INVALID_ARGUMENT")
        fcm = to_fcm_message(message)
        assert self._window is not None
        async with self._window:
            shard = self._shard()
            shard.in_flight += 1
            try:
                [response] = (await messaging.send_each_async([fcm], app=shard.app)).responses
            except exceptions.FirebaseError:
                # send_each_async answers per message; it raises (UnknownError) only when something outside the HTTP
                # exchange fails, e.g. refreshing credentials. Whether the request went out is unknown.
                log.exception("FCM send failed outside the HTTP exchange")
                return PushResult(token=message.token, ok=False, error_code="UNKNOWN")
            finally:
                shard.in_flight -= 1
        if response.success:
            return PushResult(token=message.token, ok=True, message_id=response.message_id)
        code = error_code(response.exception)
        retry_after = retry_after_seconds(response.exception) if code in ("QUOTA_EXCEEDED", "UNAVAILABLE") else None
        return PushResult(token=message.token, ok=False, error_code=code, retry_after=retry_after)

    async def aclose(self) -> None:
        """Close the HTTP clients and delete the firebase apps."""
        if self._loop is asyncio.get_running_loop():
            for shard in self._shards[: self._live]:
                await shard.client.aclose()
        # delete_app() calls the service's close(), which does asyncio.run(aclose()): not allowed on a running
        # loop, fine (and then a no-op on the closed client) in a worker thread.
        for shard in self._shards:
            await asyncio.to_thread(firebase_admin.delete_app, shard.app)
        self._shards.clear()
        self._live = 0
        self._loop = None
