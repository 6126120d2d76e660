"""FirebaseSender (firebase-admin's credential, encoding and error mapping) to the FCM stand-in as a real HTTP server.

The stand-in runs under uvicorn in a subprocess (the tests' event loop is session-wide, so no server in-process).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import google.auth.credentials
import httpx
import pytest
import pytest_asyncio
from firebase_admin import credentials, messaging

from notifications.sender import (
    FirebaseSender,
    PushMessage,
    StandInCredential,
    retry_after_seconds,
    to_fcm_message,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "demo-ihanoi"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stand_in_url(fcm_url: str) -> str:
    """The run's FCM stand-in (tests/conftest.py), a real HTTP server in its own process."""
    return fcm_url


@pytest_asyncio.fixture(scope="module")
async def control(stand_in_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stand_in_url) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def sender(stand_in_url: str) -> AsyncIterator[FirebaseSender]:
    firebase = FirebaseSender(PROJECT, endpoint=stand_in_url, timeout=10)
    yield firebase
    await firebase.aclose()


@pytest_asyncio.fixture(autouse=True)
async def clean(control: httpx.AsyncClient) -> None:
    (await control.post("/_control/reset")).raise_for_status()


def push(token: str, urgency: str = "normal", **kw) -> PushMessage:
    kw.setdefault("title", f"title {token}")
    kw.setdefault("body", f"body {token}")
    kw.setdefault("data", {"token": token, "kind": "test"})
    return PushMessage(token=token, urgency=urgency, **kw)  # type: ignore[arg-type]


async def fault(control: httpx.AsyncClient, **rule) -> None:
    (await control.post("/_control/faults", json=rule)).raise_for_status()


async def stats(control: httpx.AsyncClient) -> dict:
    return (await control.get("/_control/stats")).json()


async def recorded(control: httpx.AsyncClient, token: str) -> list[dict]:
    return (await control.get("/_control/messages", params={"token": token})).json()["messages"]


async def test_batch_of_500_is_delivered_once_each(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    messages = [
        push(f"tok-{i}", "emergency" if i % 2 else "normal", collapse_key=f"c{i}", ttl_seconds=600)
        for i in range(500)
    ]
    results = await sender.send(messages)

    assert [r.token for r in results] == [m.token for m in messages]
    assert all(r.ok and r.error_code is None for r in results)
    assert all(r.message_id and r.message_id.startswith(f"projects/{PROJECT}/messages/") for r in results)
    assert len({r.message_id for r in results}) == 500
    st = await stats(control)
    assert st["accepted"] == 500
    assert st["distinct_targets"] == 500
    assert st["max_per_target"] == 1
    assert st["targets_over_one"] == 0

    [normal] = await recorded(control, "tok-0")
    assert normal["name"] == results[0].message_id
    message = normal["message"]
    assert message["token"] == "tok-0"
    assert message["notification"] == {"title": "title tok-0", "body": "body tok-0"}
    assert message["data"] == {"token": "tok-0", "kind": "test"}
    assert message["android"] == {"collapse_key": "c0", "priority": "normal", "ttl": "600s"}
    assert message["apns"]["headers"]["apns-priority"] == "5"
    assert message["apns"]["headers"]["apns-collapse-id"] == "c0"
    assert 500 < int(message["apns"]["headers"]["apns-expiration"]) - time.time() <= 600

    [urgent] = await recorded(control, "tok-1")
    assert urgent["message"]["android"]["priority"] == "high"
    assert urgent["message"]["apns"]["headers"]["apns-priority"] == "10"


async def test_more_than_500_is_refused(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError):
        await sender.send([push(f"tok-{i}") for i in range(501)])
    assert (await stats(control))["answers"] == {}
    assert await sender.send([]) == []


async def test_unregistered(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    await fault(control, token="gone", answer="UNREGISTERED")
    results = await sender.send([push("dead-123"), push("gone"), push("alive")])
    assert [(r.ok, r.error_code) for r in results] == [(False, "UNREGISTERED"), (False, "UNREGISTERED"), (True, None)]
    assert results[0].message_id is None and results[0].retry_after is None
    # without `times` the fault stays
    assert (await sender.send([push("gone")]))[0].error_code == "UNREGISTERED"


async def test_quota_exceeded_carries_retry_after(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    await fault(control, token="busy", answer="QUOTA_EXCEEDED", retry_after=42, times=1)
    [result] = await sender.send([push("busy")])
    assert (result.ok, result.error_code, result.retry_after) == (False, "QUOTA_EXCEEDED", 42.0)
    assert (await sender.send([push("busy")]))[0].ok


@pytest.mark.parametrize("answer", ["UNAVAILABLE", "INTERNAL"])
async def test_server_errors_surface_without_sdk_retries(
    sender: FirebaseSender, control: httpx.AsyncClient, answer: str
) -> None:
    await fault(control, token="flaky", answer=answer, times=1)
    started = time.monotonic()
    [failed] = await sender.send([push("flaky")])
    assert time.monotonic() - started < 1  # the SDK's own retries would sleep and then hide the fault
    assert (failed.ok, failed.error_code) == (False, answer)
    assert (await stats(control))["answers"] == {answer: 1}  # exactly one attempt reached the server

    [again] = await sender.send([push("flaky")])
    assert again.ok and again.message_id


async def test_third_party_auth_error_goes_through_the_sdk_auth_retries(
    sender: FirebaseSender, control: httpx.AsyncClient
) -> None:
    await fault(control, token="ios", answer="THIRD_PARTY_AUTH_ERROR")
    [result] = await sender.send([push("ios")])
    assert (result.ok, result.error_code) == (False, "THIRD_PARTY_AUTH_ERROR")
    # FCM answers it with a 401; firebase-admin refreshes its credential and re-sends twice before giving up
    assert (await stats(control))["answers"] == {"THIRD_PARTY_AUTH_ERROR": 3}


async def test_oversized_payload_is_invalid_argument(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    [result] = await sender.send([push("big", data={"blob": "x" * 4100})])
    assert (result.ok, result.error_code) == (False, "INVALID_ARGUMENT")
    assert (await stats(control))["accepted"] == 0


async def test_locally_invalid_message_fails_alone(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    results = await sender.send([push("a"), push("b", data={"n": 1}), push("")])  # type: ignore[dict-item]
    assert [(r.ok, r.error_code) for r in results] == [(True, None), (False, "INVALID_ARGUMENT")] + [
        (False, "INVALID_ARGUMENT")
    ]
    assert (await stats(control))["accepted"] == 1


async def test_mixed_batch_keeps_order(sender: FirebaseSender, control: httpx.AsyncClient) -> None:
    await fault(control, token="quota", answer="QUOTA_EXCEEDED", retry_after=3)
    await fault(control, token="down", answer="UNAVAILABLE")
    await fault(control, token="broken", answer="INTERNAL")
    await fault(control, token="other-sender", answer="SENDER_ID_MISMATCH")
    await fault(control, prefix="apns-", answer="THIRD_PARTY_AUTH_ERROR")
    plan = [
        ("ok-1", None), ("dead-1", "UNREGISTERED"), ("quota", "QUOTA_EXCEEDED"), ("ok-2", None),
        ("down", "UNAVAILABLE"), ("broken", "INTERNAL"), ("other-sender", "SENDER_ID_MISMATCH"),
        ("apns-1", "THIRD_PARTY_AUTH_ERROR"), ("ok-3", None),
    ]
    messages = [push(token) for token, _ in plan]
    messages.insert(4, push("huge", data={"blob": "y" * 5000}))
    plan.insert(4, ("huge", "INVALID_ARGUMENT"))
    messages = messages * 20  # 200 messages, several in flight at once
    plan = plan * 20

    results = await sender.send(messages)

    assert [(r.token, r.error_code) for r in results] == plan
    assert all(r.ok == (code is None) for r, (_, code) in zip(results, plan, strict=True))
    assert {r.retry_after for r in results if r.error_code == "QUOTA_EXCEEDED"} == {3.0}
    st = await stats(control)
    assert st["accepted"] == 60
    assert st["max_per_target"] == 20  # the same three tokens, twenty times each


async def test_stand_in_checks_the_request_like_fcm(control: httpx.AsyncClient) -> None:
    url = f"/v1/projects/{PROJECT}/messages:send"
    bad = [
        {"message": {"token": "a", "topic": "b"}},
        {"message": {"notification": {"title": "no target"}}},
        {"message": {"token": "a", "data": {"n": 1}}},
        {"message": {"token": "a", "colour": "red"}},
        {"message": {"token": "a", "notification": {"body": "z" * 4097}}},
        {"not_a_message": {}},
    ]
    for body in bad:
        answer = await control.post(url, json=body)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["details"][0]["errorCode"] == "INVALID_ARGUMENT"
    answer = await control.post(url, content=b"{not json")
    assert answer.status_code == 400

    answer = await control.post(url, json={"message": {"topic": "ward-7"}, "validate_only": True})
    assert answer.json() == {"name": f"projects/{PROJECT}/messages/fake_message_id"}
    answer = await control.post(url, json={"message": {"topic": "ward-7", "data": {"a": "b"}}})
    assert answer.status_code == 200
    st = await stats(control)
    assert (st["accepted"], st["answers"]) == (1, {"INVALID_ARGUMENT": 7, "OK": 2})
    assert len(await recorded(control, "/topics/ward-7")) == 1

    assert (await control.post("/_control/faults", json={"answer": "NOPE", "token": "a"})).status_code == 400
    assert (await control.post("/_control/faults", json={"answer": "INTERNAL"})).status_code == 400


async def test_senders_do_not_share_endpoints(sender: FirebaseSender) -> None:
    google = FirebaseSender(PROJECT, credential=StandInCredential())  # never sends
    assert google.fcm_url == f"https://fcm.googleapis.com/v1/projects/{PROJECT}/messages:send"
    assert sender.fcm_url.startswith("http://127.0.0.1:")
    assert messaging._MessagingService.FCM_URL.startswith("https://fcm.googleapis.com/")  # no global patching
    await google.aclose()


class _Expiring(google.auth.credentials.Credentials):
    """An access token that google-auth refreshes when it is stale, counting the refreshes."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def refresh(self, request) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)  # google-auth: naive UTC


class _AppCredential(credentials.Base):
    def __init__(self, credential: google.auth.credentials.Credentials) -> None:
        self._credential = credential

    def get_credential(self) -> google.auth.credentials.Credentials:
        return self._credential


async def test_access_token_is_refreshed_by_google_auth_once_per_token(
    stand_in_url: str, control: httpx.AsyncClient
) -> None:
    token = _Expiring()
    sender = FirebaseSender(PROJECT, endpoint=stand_in_url, credential=_AppCredential(token))
    try:
        results = await sender.send([push(f"r-{i}") for i in range(50)])
        assert all(r.ok for r in results)
        assert token.refreshes == 1  # no token yet: one refresh, then the same token for every request

        token.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=1)  # about to expire
        assert all(r.ok for r in await sender.send([push(f"s-{i}") for i in range(20)]))
        assert token.refreshes == 2

        await fault(control, token="ios", answer="THIRD_PARTY_AUTH_ERROR")  # a 401: refreshed and sent again
        [result] = await sender.send([push("ios")])
        assert result.error_code == "THIRD_PARTY_AUTH_ERROR"
        assert token.refreshes == 4
        assert (await stats(control))["answers"] == {"OK": 70, "THIRD_PARTY_AUTH_ERROR": 3}
    finally:
        await sender.aclose()


async def test_no_connection_is_unavailable() -> None:
    sender = FirebaseSender(PROJECT, endpoint=f"http://127.0.0.1:{_free_port()}", timeout=5)
    try:
        [result] = await sender.send([push("nobody-listens")])
    finally:
        await sender.aclose()
    # as firebase-admin maps httpx.ConnectError: UnavailableError, which the delivery worker retries
    assert (result.ok, result.error_code, result.retry_after) == (False, "UNAVAILABLE", None)


def test_token_messages_do_not_warn() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = to_fcm_message(push("tok"))
    assert message.token == "tok" and message.fid is None
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]


def test_retry_after_forms() -> None:
    def error(value: str | None) -> SimpleNamespace:
        return SimpleNamespace(http_response=httpx.Response(429, headers={"Retry-After": value} if value else {}))

    assert retry_after_seconds(error("7")) == 7.0
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 115 < retry_after_seconds(error(later)) <= 121  # type: ignore[operator]
    assert retry_after_seconds(error(None)) is None
    assert retry_after_seconds(error("soon")) is None
    assert retry_after_seconds(ValueError()) is None
