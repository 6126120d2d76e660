"""The staff console over HTTP (no browser): sign-in, cookie flags, headers, CSRF, authorization, stale pages,
the feedback steps, broadcasts, administration and a module's page through the hook."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest_asyncio

from console.session import COOKIE
from tests.console.support import console_sign_in, csrf_of, version_of
from tests.feedback.support import (
    CLERK,
    OTHER_CLERK,
    OTHER_WARD,
    RESIDENT_A,
    WARD,
    bearer,
    grant,
    inbox_titles,
    submit,
)

ADMIN, SECOND_ADMIN, KEEPER = "001078056789", "001085012345", "001301045678"


@asynccontextmanager
async def browser(client):
    """Another browser (its own cookie jar) on the same app."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://ihanoi.test") as other:
        yield other


@pytest_asyncio.fixture
async def setup(client, conn):
    await grant(client, conn, CLERK, "staff", WARD)
    await grant(client, conn, OTHER_CLERK, "staff", OTHER_WARD)
    resident = await bearer(client, RESIDENT_A)
    report = await submit(client, resident)
    return {"resident": resident, "report": report}


async def signed_in(client, personal_id: str, **kw) -> None:
    response = await console_sign_in(client, personal_id, **kw)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/console")


async def report_status(client, headers, report_id: int) -> str:
    return (await client.get(f"/v1/feedback/reports/{report_id}", headers=headers)).json()["status"]


async def test_pages_need_a_sign_in_and_residents_without_a_role_are_refused(client, setup):
    response = await client.get("/console/feedback")
    assert response.status_code == 303 and response.headers["location"].startswith("/console/login?next=")
    refused = await console_sign_in(client, RESIDENT_A)
    assert refused.status_code == 403
    assert "không có vai trò cán bộ" in refused.text
    assert COOKIE not in client.cookies


async def test_session_cookie_flags_and_headers(client, setup):
    response = await console_sign_in(client, CLERK)
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE + "="))
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=lax" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain http in test; outside dev and test it is Secure (next test)
    page = await client.get("/console/feedback")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and " onclick=" not in page.text
    assert 'src="/console/static/htmx.min.js"' in page.text
    static = await client.get("/console/static/htmx.min.js")
    assert static.status_code == 200 and "htmx" in static.text[:200]


def test_cookies_are_secure_outside_dev_and_test():
    from types import SimpleNamespace

    from console.session import secure_cookies

    assert secure_cookies(SimpleNamespace(settings=SimpleNamespace(env="prod")))
    assert not secure_cookies(SimpleNamespace(settings=SimpleNamespace(env="test")))


async def test_queue_and_answer_reach_the_residents_inbox(client, setup):
    report_id = setup["report"]["id"]
    await signed_in(client, CLERK)
    queue = await client.get("/console/feedback", params={"unit": WARD})
    assert f'href="/console/feedback/reports/{report_id}"' in queue.text
    page = await client.get(f"/console/feedback/reports/{report_id}")
    assert page.status_code == 200 and "Tiếp nhận" in page.text
    csrf, version = csrf_of(page.text), version_of(page.text)
    received = await client.post(f"/console/feedback/reports/{report_id}/receive",
                                 data={"csrf": csrf, "version": version})
    assert received.status_code == 303, received.text
    page = await client.get(received.headers["location"])
    answered = await client.post(f"/console/feedback/reports/{report_id}/answer", data={
        "csrf": csrf, "version": version_of(page.text), "template": "da-khac-phuc", "details": "Đã dọn sạch rác."})
    assert answered.status_code == 303, answered.text
    assert await report_status(client, setup["resident"], report_id) == "answered"
    titles = await inbox_titles(client, setup["resident"])
    assert any(str(report_id) in title for title in titles), titles


async def test_forms_without_the_sessions_token_change_nothing(client, setup):
    report_id = setup["report"]["id"]
    await signed_in(client, CLERK)
    page = await client.get(f"/console/feedback/reports/{report_id}")
    version = version_of(page.text)
    missing = await client.post(f"/console/feedback/reports/{report_id}/receive", data={"version": version})
    assert missing.status_code == 403 and "mã bảo vệ" in missing.text
    async with browser(client) as other:
        await signed_in(other, CLERK)
        other_page = await other.get(f"/console/feedback/reports/{report_id}")
        theirs = csrf_of(other_page.text)
    assert theirs != csrf_of(page.text)
    foreign = await client.post(f"/console/feedback/reports/{report_id}/receive",
                                data={"csrf": theirs, "version": version})
    assert foreign.status_code == 403
    assert await report_status(client, setup["resident"], report_id) == "submitted"


async def test_logout_ends_the_identity_session_and_later_forms_are_refused(client, setup):
    report_id = setup["report"]["id"]
    api = await bearer(client, CLERK)
    await signed_in(client, CLERK)
    sessions = (await client.get("/v1/me/sessions", headers=api)).json()["sessions"]
    assert any(s["device_name"] == "Bảng điều khiển cán bộ" for s in sessions)
    page = await client.get(f"/console/feedback/reports/{report_id}")
    csrf, version = csrf_of(page.text), version_of(page.text)
    out = await client.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 200 and "Đã đăng xuất" in out.text
    sessions = (await client.get("/v1/me/sessions", headers=api)).json()["sessions"]
    assert not any(s["device_name"] == "Bảng điều khiển cán bộ" for s in sessions)
    after = await client.post(f"/console/feedback/reports/{report_id}/receive", data={"csrf": csrf, "version": version})
    assert after.status_code == 401 and "Phiên làm việc đã kết thúc" in after.text
    assert await report_status(client, setup["resident"], report_id) == "submitted"
    assert (await client.get("/console/feedback")).status_code == 303


async def test_a_stale_page_does_not_act_on_a_report_that_changed(client, setup):
    report_id = setup["report"]["id"]
    await signed_in(client, CLERK)
    page = await client.get(f"/console/feedback/reports/{report_id}")
    csrf, stale = csrf_of(page.text), version_of(page.text)
    async with browser(client) as colleague:
        await signed_in(colleague, CLERK)
        theirs = await colleague.get(f"/console/feedback/reports/{report_id}")
        done = await colleague.post(f"/console/feedback/reports/{report_id}/reject", data={
            "csrf": csrf_of(theirs.text), "version": version_of(theirs.text), "reason": "Không đủ thông tin"})
        assert done.status_code == 303
    late = await client.post(f"/console/feedback/reports/{report_id}/receive", data={"csrf": csrf, "version": stale})
    assert late.status_code == 409 and "đã thay đổi" in late.text
    assert await report_status(client, setup["resident"], report_id) == "rejected"


async def test_a_clerk_of_another_ward_can_neither_open_nor_act(client, setup):
    report_id = setup["report"]["id"]
    await signed_in(client, OTHER_CLERK)
    page = await client.get(f"/console/feedback/reports/{report_id}")
    assert page.status_code == 403 and "only its staff" in page.text
    own = await client.get("/console/feedback")
    csrf = csrf_of(own.text)
    acted = await client.post(f"/console/feedback/reports/{report_id}/receive",
                              data={"csrf": csrf, "version": "anything"})
    assert acted.status_code == 403
    assert await report_status(client, setup["resident"], report_id) == "submitted"


async def test_level_one_staff_are_asked_to_sign_in_again(client, setup):
    await signed_in(client, CLERK, level=1)
    page = await client.get("/console/feedback")
    assert page.status_code == 403 and "/console/login/start?next=" in page.text


async def test_city_broadcast_needs_a_second_admin(client, conn, setup):
    await grant(client, conn, ADMIN, "admin")
    await grant(client, conn, SECOND_ADMIN, "admin")
    await signed_in(client, ADMIN, next="/console/broadcasts")
    page = await client.get("/console/broadcasts")
    csrf = csrf_of(page.text)
    form = {"csrf": csrf, "key": "k" * 16, "target_unit": "hanoi", "urgency": "normal",
            "title_vi": "Cắt nước", "body_vi": "Cắt nước toàn thành phố", "title_en": "Water cut",
            "body_en": "Water cut city-wide"}
    preview = await client.post("/console/broadcasts/preview", data=form, headers={"HX-Request": "true"})
    assert preview.status_code == 200 and "Water cut city-wide" in preview.text and "<html" not in preview.text
    made = await client.post("/console/broadcasts", data=form)
    assert made.status_code == 303, made.text
    detail = await client.get(made.headers["location"])
    assert "awaiting_approval" in detail.text
    broadcast_id = int(made.headers["location"].rsplit("/", 1)[1])
    own = await client.post(f"/console/broadcasts/{broadcast_id}/approve", data={"csrf": csrf})
    assert own.status_code == 403 and "second admin" in own.text
    async with browser(client) as second:
        await signed_in(second, SECOND_ADMIN, next="/console/broadcasts")
        listing = await second.get("/console/broadcasts")
        assert f"/console/broadcasts/{broadcast_id}" in listing.text
        approved = await second.post(f"/console/broadcasts/{broadcast_id}/approve",
                                     data={"csrf": csrf_of(listing.text)})
        assert approved.status_code == 303
        counts = await second.get(f"/console/broadcasts/{broadcast_id}", headers={"HX-Request": "true"})
        assert 'id="broadcast-status">scheduled' in counts.text and 'hx-trigger="every 2s"' in counts.text


async def test_admin_looks_up_grants_revokes_and_sees_the_audit(client, conn, setup):
    await grant(client, conn, ADMIN, "admin")
    await signed_in(client, ADMIN, next="/console/admin")
    page = await client.get("/console/admin")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    found = await client.post("/console/admin/lookup", data={"csrf": csrf, "personal_id": KEEPER})
    assert found.status_code == 404  # never signed in, never granted
    await bearer(client, KEEPER)
    found = await client.post("/console/admin/lookup", data={"csrf": csrf, "personal_id": KEEPER})
    assert found.status_code == 200 and "Lê Minh Châu" in found.text
    resident_id = found.text.split('name="resident_id" value="', 1)[1].split('"', 1)[0]
    granted = await client.post("/console/admin/grant", data={"csrf": csrf, "resident_id": resident_id,
                                                              "role": "staff", "scope": WARD})
    assert granted.status_code == 303
    shown = await client.get(granted.headers["location"])
    grant_id = shown.text.split('name="grant_id" value="', 1)[1].split('"', 1)[0]
    revoked = await client.post("/console/admin/revoke", data={"csrf": csrf, "grant_id": grant_id,
                                                               "resident_id": resident_id})
    assert revoked.status_code == 303
    audit = (await client.get("/console/admin")).text
    assert audit.count(f"staff:{WARD}") >= 2 and "thu hồi" in audit
    async with browser(client) as clerk:
        await signed_in(clerk, CLERK)
        assert (await clerk.get("/console/admin")).status_code == 403


async def test_a_module_adds_its_operator_page_through_the_hook(client, conn, setup):
    await grant(client, conn, KEEPER, "fixture_keeper", "kho-1")
    await signed_in(client, KEEPER, next="/console/m/fixture/items")
    page = await client.get("/console/m/fixture/items")
    assert page.status_code == 200 and 'href="/console/m/fixture/items"' in page.text
    assert page.headers["cache-control"] == "no-store"
    refused = await client.post("/console/m/fixture/items", data={"name": "Bàn"})
    assert refused.status_code == 403
    added = await client.post("/console/m/fixture/items", data={"name": "Ghế nhựa", "csrf": csrf_of(page.text)})
    assert added.status_code == 200 and "Đã thêm Ghế nhựa" in added.text and "Ghế nhựa × 1" in added.text
    assert await conn.fetchval("SELECT count(*) FROM fixture_item WHERE name = 'Bàn'") == 0
    async with browser(client) as clerk:
        await signed_in(clerk, CLERK)
        queue = await clerk.get("/console/feedback")
        assert "/console/m/fixture/items" not in queue.text
        assert (await clerk.get("/console/m/fixture/items")).status_code == 403


async def test_english_switch(client, setup):
    await signed_in(client, CLERK)
    switched = await client.get("/console/language/en", params={"next": "/console/feedback"})
    assert switched.status_code == 303
    page = await client.get("/console/feedback")
    assert '<html lang="en">' in page.text and "Feedback queue" in page.text
    report = await client.get(f"/console/feedback/reports/{setup['report']['id']}")
    assert "Urgency: Normal" in report.text


async def test_report_page_shows_photos_duplicates_and_takes_every_staff_step(client, conn, setup):
    from tests.feedback.support import LAT_50M, upload

    resident = setup["resident"]
    photo = await upload(client, resident)
    twin = await submit(client, resident, latitude=LAT_50M, duplicates_checked=True, photos=[{"id": photo}])
    await signed_in(client, CLERK)
    page = await client.get(f"/console/feedback/reports/{twin['id']}")
    assert f"/console/feedback/photos/{photo}?size=thumbnail" in page.text
    assert f'href="/console/feedback/reports/{setup["report"]["id"]}"' in page.text  # offered as a duplicate
    image = await client.get(f"/console/feedback/photos/{photo}", params={"size": "thumbnail"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    csrf = csrf_of(page.text)

    async def step(report_id: int, action: str, **fields) -> httpx.Response:
        current = await client.get(f"/console/feedback/reports/{report_id}")
        return await client.post(f"/console/feedback/reports/{report_id}/{action}",
                                 data={"csrf": csrf, "version": version_of(current.text), **fields})

    assert (await step(twin["id"], "note", text="Đã gọi điện cho tổ trưởng dân phố")).status_code == 303
    clerk_id = page.text.split('name="assignee_id"><option value="', 1)[1].split('"', 1)[0]
    assert (await step(twin["id"], "assign", assignee_id=clerk_id)).status_code == 303
    assert (await step(twin["id"], "receive", urgency="urgent")).status_code == 303
    assert (await step(twin["id"], "start")).status_code == 303
    assert "Mức độ: Khẩn" in (await client.get(f"/console/feedback/reports/{twin['id']}")).text  # not the code
    short = await step(twin["id"], "answer", text="ngắn")
    assert short.status_code == 400 and "10" in short.text  # the service's rule, shown on the page
    assert (await step(twin["id"], "merge", into=str(setup["report"]["id"]))).status_code == 303
    shown = await client.get(f"/console/feedback/reports/{twin['id']}")
    assert "Đã gọi điện cho tổ trưởng dân phố" in shown.text and "nội bộ" in shown.text
    assert await report_status(client, resident, twin["id"]) == "closed"
    third = await submit(client, resident, duplicates_checked=True, description="Đèn đường hỏng cả tuần nay rồi")
    moved = await step(third["id"], "transfer", unit=OTHER_WARD, reason="Thuộc địa bàn phường Ba Đình")
    assert moved.status_code == 303
    gone = await client.get(moved.headers["location"])
    assert gone.status_code == 403  # now another ward's
    fourth = await submit(client, resident, duplicates_checked=True, description="Lấn chiếm vỉa hè bán hàng rong")
    rejected = await step(fourth["id"], "reject", template="thieu-thong-tin", details="ảnh chụp rõ vị trí")
    assert rejected.status_code == 303
    assert await report_status(client, resident, fourth["id"]) == "rejected"


async def test_weekly_figures_chart(client, setup):
    await signed_in(client, CLERK)
    page = await client.get("/console/feedback/figures", params={"unit": WARD, "weeks": 8})
    assert page.status_code == 200
    assert page.text.count("<rect class=\"bar-received\"") == 8 + 1  # a bar a week, and the legend's swatch
    assert "<td>1</td>" in page.text  # this week's report in the table
    other = await client.get("/console/feedback/figures", params={"unit": OTHER_WARD})
    assert other.status_code == 403


async def test_an_idle_session_expires_and_its_identity_session_ends(client, setup):
    from console.session import _idle_index, _key

    api = await bearer(client, CLERK)
    await signed_in(client, CLERK)
    redis = client.app.state.redis
    key = _key(redis, client.cookies[COOKIE])
    assert 1790 <= await redis.client.ttl(key) <= 1800  # IHANOI_CONSOLE_IDLE_MINUTES, 30 by default
    await redis.client.expire(key, 5)
    assert (await client.get("/console/feedback")).status_code == 200
    assert await redis.client.ttl(key) > 1790  # each request starts the idle time again
    await redis.client.delete(key)  # what expiry does, at the time the index says
    index = _idle_index(redis)
    (member,) = await redis.client.zrange(index, 0, -1)
    await redis.client.zadd(index, {member: 1})
    assert (await client.get("/console/feedback")).status_code == 303
    # the next console request (anyone's) ended the identity session it held
    sessions = (await client.get("/v1/me/sessions", headers=api)).json()["sessions"]
    assert [s["device_name"] for s in sessions] == ["Thiết bị thử"]
    assert await redis.client.zcard(index) == 0


async def test_map_tiles_come_from_the_configured_url(make_client, conn, database_url, redis_url):
    from app.settings import load_settings
    from tests.conftest import MASTER_KEY

    tiled = load_settings({"IHANOI_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                           "IHANOI_MASTER_KEY": MASTER_KEY, "IHANOI_PUBLIC_URL": "http://ihanoi.test",
                           "IHANOI_LOG_LEVEL": "WARNING",
                           "IHANOI_CONSOLE_TILES_URL": "https://tiles.example.vn/{z}/{x}/{y}.png"})
    async with make_client(tiled) as client:
        await grant(client, conn, CLERK, "staff", WARD)
        report = await submit(client, await bearer(client, RESIDENT_A))
        await signed_in(client, CLERK)
        page = await client.get(f"/console/feedback/reports/{report['id']}")
        # Hoàn Kiếm lake (21.0287, 105.8524) at zoom 16 is tile x 52037, y 28850 (slippy-map numbering)
        assert '<image href="https://tiles.example.vn/16/52037/28850.png"' in page.text
        assert "img-src 'self' data: https://tiles.example.vn;" in page.headers["content-security-policy"]


async def test_roles_and_broadcasts_ask_for_a_recent_sign_in(client, conn, setup, monkeypatch):
    import time
    from types import SimpleNamespace

    from app.identity import service as identity_service

    await grant(client, conn, ADMIN, "admin")
    await signed_in(client, ADMIN, next="/console/admin")
    csrf = csrf_of((await client.get("/console/admin")).text)
    # sixteen minutes later, as the identity rules see it
    later = time.time() + 16 * 60
    monkeypatch.setattr(identity_service, "time", SimpleNamespace(time=lambda: later))
    asked = await client.post("/console/admin/lookup", data={"csrf": csrf, "personal_id": CLERK})
    assert asked.status_code == 403 and 'href="/console/login/start?next=' in asked.text
    made = await client.post("/console/broadcasts", data={
        "csrf": csrf, "key": "s" * 16, "target_unit": WARD, "title_vi": "a", "body_vi": "b", "title_en": "c",
        "body_en": "d"})
    assert made.status_code == 403 and "đăng nhập gần đây" in made.text
    assert await conn.fetchval("SELECT count(*) FROM broadcast WHERE idempotency_key = $1", "console:" + "s" * 16) == 0
