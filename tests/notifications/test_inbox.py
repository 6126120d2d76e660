"""Devices, the inbox written through notify() in the caller's transaction, preferences, quiet hours."""

from __future__ import annotations

import datetime as dt
import uuid

import jwt
import pytest

from app import web
from app.identity.devlogin import sign_in
from notifications import service

AN, BINH = "001085012345", "001192034567"


async def resident(client, personal_id=AN, **kw) -> tuple[dict, dict]:
    response = await sign_in(client, personal_id, **kw)
    assert response.status_code == 200, response.text
    pair = response.json()
    return {"Authorization": f"Bearer {pair['access_token']}"}, jwt.decode(pair["access_token"],
                                                                         options={"verify_signature": False})


async def register(client, headers, token=None, locale="vi", platform="android") -> dict:
    body = {"fcm_token": token or f"tok-{uuid.uuid4().hex}", "platform": platform, "locale": locale,
            "app_version": "3.2.1"}
    response = await client.put("/v1/notifications/devices", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_devices_register_refresh_and_unregister(client, conn):
    headers, claims = await resident(client)
    first = await register(client, headers, token="fcm-token-0001")
    again = await register(client, headers, token="fcm-token-0001", locale="en")
    assert again["id"] == first["id"] and again["locale"] == "en"  # a refresh, not a second device
    listed = (await client.get("/v1/notifications/devices", headers=headers)).json()
    assert [d["id"] for d in listed] == [first["id"]]
    assert (await client.delete(f"/v1/notifications/devices/{first['id']}", headers=headers)).status_code == 204
    assert (await client.get("/v1/notifications/devices", headers=headers)).json() == []
    other_headers, _ = await resident(client, BINH)
    response = await client.delete(f"/v1/notifications/devices/{first['id']}", headers=other_headers)
    assert response.status_code == 404


async def test_logout_unregisters_the_sessions_device(client, conn):
    headers, claims = await resident(client)
    device = await register(client, headers)
    assert (await client.post("/v1/auth/logout", headers=headers)).status_code == 204
    reason = await conn.fetchval("SELECT deactivated_reason FROM notification_device WHERE id = $1::uuid",
                                 device["id"])
    assert reason == "signed out"


async def test_bad_path_ids_name_the_parameter(client):
    headers, _ = await resident(client)
    bad = await client.delete("/v1/notifications/devices/not-a-uuid", headers=headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "device_id"
    too_big = await client.post(f"/v1/notifications/{2**63}/read", headers=headers)  # not a database error
    assert too_big.status_code == 400 and too_big.json()["errors"][0]["field"] == "notification_id"
    assert (await client.post(f"/v1/notifications/{2**63 - 1}/archive", headers=headers)).status_code == 404


async def test_bad_device_body_names_fields(client):
    headers, _ = await resident(client)
    response = await client.put("/v1/notifications/devices", json={"fcm_token": "x", "platform": "symbian"},
                                headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] in {"fcm_token", "platform", "app_version"}


async def test_notify_writes_the_inbox_in_the_callers_transaction(client, conn):
    headers, claims = await resident(client)
    # rolled back with the caller's change: nothing in the inbox, nothing queued
    async with conn.transaction():
        savepoint = conn.transaction()
        await savepoint.start()
        await service.notify(conn, [claims["sub"]], "account.welcome", {"name": "An"}, category="account",
                             idempotency_key="welcome")
        await savepoint.rollback()
    assert (await client.get("/v1/notifications", headers=headers)).json()["items"] == []
    ids = await service.notify(conn, [claims["sub"]], "account.welcome", {"name": "An"}, category="account",
                               idempotency_key="welcome", deep_link="ihanoi://account")
    again = await service.notify(conn, [claims["sub"]], "account.welcome", {"name": "An"}, category="account",
                                 idempotency_key="welcome")
    assert len(ids) == 1 and again == []  # a retried caller does not notify twice
    assert await conn.fetchval("SELECT count(*) FROM notification_outbox WHERE notification_id = $1", ids[0]) == 1

    page = (await client.get("/v1/notifications", headers=headers)).json()
    assert page["unread"] == 1
    assert page["items"][0]["title"] == "Chào mừng An đến với iHaNoi"
    assert page["items"][0]["deep_link"] == "ihanoi://account"
    english = (await client.get("/v1/notifications", headers=headers | {"Accept-Language": "en"})).json()
    assert english["items"][0]["title"] == "Welcome to iHaNoi, An"


async def test_notify_refuses_bad_arguments(conn):
    from app.errors import InvalidInput

    someone = uuid.uuid4()
    with pytest.raises(InvalidInput, match="needs name"):
        await service.notify(conn, [someone], "account.welcome", {}, category="account", idempotency_key="k")
    with pytest.raises(InvalidInput, match="unknown template"):
        await service.notify(conn, [someone], "nope", {}, category="account", idempotency_key="k")
    with pytest.raises(InvalidInput, match="category"):
        await service.notify(conn, [someone], "account.welcome", {"name": "x"}, category="sport", idempotency_key="k")


async def test_inbox_pages_read_and_archive(client, conn):
    headers, claims = await resident(client)
    other_headers, _ = await resident(client, BINH)
    for n in range(5):
        await service.notify(conn, [claims["sub"]], "city.announcement",
                             {"title_vi": f"Tin {n}", "body_vi": "Nội dung", "title_en": f"News {n}",
                              "body_en": "Text"}, category="city", idempotency_key=f"news-{n}")
    first = (await client.get("/v1/notifications?limit=2", headers=headers)).json()
    assert [i["title"] for i in first["items"]] == ["Tin 4", "Tin 3"] and first["next_cursor"]
    second = (await client.get(f"/v1/notifications?limit=2&cursor={first['next_cursor']}", headers=headers)).json()
    assert [i["title"] for i in second["items"]] == ["Tin 2", "Tin 1"]
    newest = first["items"][0]["id"]
    # another resident can neither read nor change it
    assert (await client.post(f"/v1/notifications/{newest}/read", headers=other_headers)).status_code == 404
    assert (await client.get("/v1/notifications", headers=other_headers)).json()["items"] == []
    assert (await client.post(f"/v1/notifications/{newest}/read", headers=headers)).status_code == 204
    assert (await client.get("/v1/notifications/unread-count", headers=headers)).json() == {"unread": 4}
    assert (await client.post(f"/v1/notifications/{newest}/archive", headers=headers)).status_code == 204
    listed = (await client.get("/v1/notifications", headers=headers)).json()
    assert newest not in [i["id"] for i in listed["items"]]
    assert (await client.post("/v1/notifications/read-all", headers=headers)).json() == {"unread": 0}
    assert (await client.get("/v1/notifications?cursor=%%%", headers=headers)).status_code == 400
    assert (await client.get("/v1/notifications?limit=1000", headers=headers)).status_code == 400


async def test_preferences_round_trip_and_validation(client):
    headers, _ = await resident(client)
    defaults = (await client.get("/v1/notifications/preferences", headers=headers)).json()
    assert defaults["push"]["feedback"] is True and defaults["quiet_hours"] is None
    body = {"push": {"city": False}, "quiet_hours": {"start": "22:00:00", "end": "06:30:00"},
            "home_unit": "phuong-hoan-kiem"}
    saved = (await client.put("/v1/notifications/preferences", json=body, headers=headers)).json()
    assert saved["push"]["city"] is False and saved["push"]["feedback"] is True
    assert saved["quiet_hours"] == {"start": "22:00:00", "end": "06:30:00"} and saved["timezone"] == "Asia/Ho_Chi_Minh"
    bad = await client.put("/v1/notifications/preferences", json=body | {"home_unit": "so-y-te"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "home_unit"
    # the categories are those the loaded modules declared (no module declares these)
    for unknown in ("sport", "weather_radar"):
        bad = await client.put("/v1/notifications/preferences", json={"push": {unknown: True}}, headers=headers)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == f"push.{unknown}"
    from tests.conftest import TEST_MODULES

    declared = {c.name for m in TEST_MODULES for c in m.notification_categories}
    assert {"city", "account", "feedback", "fixture"} <= declared
    assert set(saved["push"]) == declared


@pytest.mark.parametrize(
    ("local_now", "start", "end", "expected_local_end"),
    [
        ("2026-11-22 23:10", "22:00", "06:30", "2026-11-23 06:30"),  # across midnight, before it
        ("2026-11-23 05:00", "22:00", "06:30", "2026-11-23 06:30"),  # across midnight, after it
        ("2026-11-23 07:00", "22:00", "06:30", None),
        ("2026-11-23 13:00", "12:00", "14:00", "2026-11-23 14:00"),
        ("2026-11-23 14:00", "12:00", "14:00", None),  # the end itself is no longer quiet
    ],
)
def test_quiet_hours_in_hanoi_time(local_now, start, end, expected_local_end):
    tz = web.CITY_TZ
    now = dt.datetime.fromisoformat(local_now).replace(tzinfo=tz).astimezone(dt.UTC)
    until = service.quiet_until(now, dt.time.fromisoformat(start), dt.time.fromisoformat(end))
    if expected_local_end is None:
        assert until is None
    else:
        assert until == dt.datetime.fromisoformat(expected_local_end).replace(tzinfo=tz)
        assert until.tzinfo is dt.UTC
