"""A report's life through the HTTP API: submit, receive, handle, answer, rate, reopen, reject, transfer,
merge, and who may take each step."""

from __future__ import annotations

import datetime as dt

from feedback import jobs, service
from tests.feedback.support import (
    CITY_STAFF,
    CLERK,
    HEAD,
    OTHER_WARD,
    RESIDENT_B,
    WARD,
    act,
    bearer,
    grant,
    inbox_titles,
    key,
    report_body,
    submit,
)


async def test_categories_are_public_data_with_units_and_deadlines(client):
    response = await client.get("/v1/feedback/categories", headers={"Accept-Language": "en"})
    assert response.status_code == 200
    by_code = {c["code"]: c for c in response.json()["categories"]}
    assert by_code["ve-sinh-moi-truong"]["name"] == "Environment and sanitation"
    assert by_code["ve-sinh-moi-truong"]["default_unit"] == "ward"
    assert (by_code["cay-xanh"]["urgency"], by_code["cay-xanh"]["receive_hours"], by_code["cay-xanh"]["answer_hours"]) \
        == ("urgent", 4, 4)
    assert by_code["ha-tang-giao-thong"]["default_unit"] == "so-xay-dung"
    assert (await client.get("/v1/feedback/categories/no-such")).status_code == 404


async def test_submit_routes_sets_deadlines_and_is_idempotent(client, conn, people):
    headers = people["a"] | key()
    response = await client.post("/v1/feedback/reports", json=report_body(), headers=headers)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "submitted" and report["unit"]["code"] == WARD  # 'ward' category: the ward's own
    assert report["mine"] is True and report["submitted_at"].endswith("+07:00")
    submitted = dt.datetime.fromisoformat(report["submitted_at"])
    cal = service.calendar()
    assert dt.datetime.fromisoformat(report["receive_due_at"]) == cal.add_working_hours(submitted, 8)
    assert dt.datetime.fromisoformat(report["answer_due_at"]) == cal.add_working_hours(submitted, 40)

    again = await client.post("/v1/feedback/reports", json=report_body(), headers=headers)  # a retried request
    assert again.status_code == 201 and again.json()["id"] == report["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/feedback/reports", json=report_body(description="Một nội dung khác hẳn"),
                              headers=headers)
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    assert await conn.fetchval("SELECT count(*) FROM report WHERE reporter_id = "
                               "(SELECT reporter_id FROM report WHERE id = $1)", report["id"]) == 1

    roads = await submit(client, people["a"], category="ha-tang-giao-thong", description="Ổ gà lớn giữa đường")
    assert roads["unit"]["code"] == "so-xay-dung"


async def test_bad_submissions_name_the_field(client, people):
    async def problem(body, headers=None):
        response = await client.post("/v1/feedback/reports", json=body, headers=headers or (people["a"] | key()))
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        return response.status_code, [e["field"] for e in response.json().get("errors", [])]

    assert await problem(report_body(), headers=people["a"]) == (400, ["Idempotency-Key"])
    assert await problem(report_body(latitude=10.77, longitude=106.70)) == (400, ["latitude"])  # Ho Chi Minh City
    assert await problem(report_body(ward="phuong-khong-co")) == (422, ["ward"])
    assert await problem(report_body(category="nope")) == (422, ["category"])
    assert (await problem(report_body(description="ngắn")))[0] == 400
    assert (await problem(report_body(photos=[{"id": "not-a-uuid"}])))[1] == ["photos"]
    status, fields = await problem(report_body(extra_field=1))
    assert status == 400
    unauthenticated = await client.post("/v1/feedback/reports", json=report_body(), headers=key())
    assert unauthenticated.status_code == 401


async def test_full_life_with_notifications_to_reporter_and_followers(client, conn, people):
    report = await submit(client, people["a"])
    rid = report["id"]
    followed = await client.post(f"/v1/feedback/reports/{rid}/follow", headers=people["b"])
    assert followed.status_code == 200 and followed.json()["follower_count"] == 1

    assert (await act(client, people["clerk"], rid, "receive"))["status"] == "received"
    assert (await act(client, people["clerk"], rid, "start"))["status"] == "in_progress"
    answered = await act(client, people["clerk"], rid, "answer",
                         {"template": "da-khac-phuc", "values": {"details": "Đã thu gom 2 tấn rác."}})
    assert answered["status"] == "answered" and answered["answer"]["on_time"] is True
    assert "Phường Hoàn Kiếm đã kiểm tra hiện trường" in answered["answer"]["text"]
    rated = await act(client, people["a"], rid, "rating", {"stars": 4, "comment": "Xử lý nhanh"})
    assert rated["status"] == "closed" and rated["close_reason"] == "rated" and rated["rating"]["stars"] == 4
    await act(client, people["a"], rid, "rating", {"stars": 5}, expect=409)  # one rating per answer

    timeline = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])).json()["events"]
    assert [e["kind"] for e in timeline] == ["submitted", "received", "started", "answered", "rated"]
    # the reporter heard of every step staff took (not of their own), the follower of every step after following
    a_titles = await inbox_titles(client, people["a"])
    assert sum(t.startswith(f"Phản ánh #{rid}") for t in a_titles) == 3
    b_titles = await inbox_titles(client, people["b"])
    assert sum(t.startswith(f"Phản ánh #{rid}") for t in b_titles) == 4
    assert f"Phản ánh #{rid}: Đã đóng" in b_titles
    # the messages come from the templates feedback declares with its notification category
    from modules.registry import REGISTRY

    assert {key: owner for (kind, key), owner in REGISTRY.owners.items() if kind == "template"
            and key.startswith("feedback.")} == {"feedback.status": "feedback", "feedback.escalated": "feedback"}


async def test_each_step_only_from_its_states_and_only_by_its_people(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    # another unit's clerk, a resident, the reporter: none may act as the ward's staff
    for who in ("other_clerk", "b", "a"):
        await act(client, people[who], rid, "receive", expect=403)
    await act(client, people["clerk"], rid, "answer", {"text": "Đã xử lý xong rồi nhé"}, expect=409)
    await act(client, people["clerk"], rid, "start", expect=409)
    await act(client, people["a"], rid, "close", expect=409)
    await act(client, people["a"], rid, "reopen", {"reason": "Chưa được xử lý"}, expect=409)
    await act(client, people["clerk"], rid, "receive")
    await act(client, people["clerk"], rid, "receive", expect=409)
    await act(client, people["b"], rid, "rating", {"stars": 1}, expect=403)
    assert (await conn.fetchval("SELECT status FROM report WHERE id = $1", rid)) == "received"


async def test_staff_of_a_parent_unit_may_act(client, conn, people):
    await grant(client, conn, CITY_STAFF, "staff", "hanoi")
    city = await bearer(client, CITY_STAFF)
    rid = (await submit(client, people["a"]))["id"]
    assert (await act(client, city, rid, "receive"))["status"] == "received"


async def test_level_one_staff_must_step_up(client, conn, people):
    clerk_level1 = await bearer(client, CLERK, level=1)
    rid = (await submit(client, people["a"]))["id"]
    response = await client.post(f"/v1/feedback/reports/{rid}/receive", json={}, headers=clerk_level1)
    assert response.status_code == 403 and response.json()["type"].endswith("step-up-required")


async def test_reject_needs_a_reason_and_ends_the_report(client, people):
    rid = (await submit(client, people["a"]))["id"]
    await act(client, people["clerk"], rid, "reject", {}, expect=400)
    rejected = await act(client, people["clerk"], rid, "reject", {"template": "khong-thuoc-tham-quyen",
                                                                  "values": {"details": "Tòa án nhân dân"}})
    assert rejected["status"] == "rejected" and rejected["close_reason"] == "rejected"
    events = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])).json()["events"]
    assert "Tòa án nhân dân" in events[-1]["message"]
    await act(client, people["clerk"], rid, "answer", {"text": "Đã xử lý xong rồi nhé"}, expect=409)


async def test_transfer_moves_the_report_and_its_deadlines(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    await act(client, people["clerk"], rid, "receive")
    await act(client, people["clerk"], rid, "transfer", {"unit": OTHER_WARD, "reason": ""}, expect=400)
    await act(client, people["clerk"], rid, "transfer", {"unit": "nowhere", "reason": "Sai địa bàn"}, expect=422)
    moved = await act(client, people["clerk"], rid, "transfer", {"unit": OTHER_WARD, "reason": "Thuộc địa bàn khác"})
    assert moved["status"] == "submitted" and moved["unit"]["code"] == OTHER_WARD
    await act(client, people["clerk"], rid, "receive", expect=403)  # no longer theirs
    assert (await act(client, people["other_clerk"], rid, "receive"))["status"] == "received"
    events = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])).json()["events"]
    assert [e["kind"] for e in events] == ["submitted", "received", "transferred", "received"]
    assert events[2]["message"] == "Thuộc địa bàn khác"


async def test_reopen_within_seven_days_only(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    await act(client, people["clerk"], rid, "receive")
    await act(client, people["clerk"], rid, "answer", {"text": "Đã khắc phục xong, cảm ơn."})
    await act(client, people["b"], rid, "reopen", {"reason": "Chưa xử lý triệt để"}, expect=403)
    reopened = await act(client, people["a"], rid, "reopen", {"reason": "Rác vẫn còn nguyên"})
    assert reopened["status"] == "in_progress" and reopened["reopen_count"] == 1
    await act(client, people["clerk"], rid, "answer", {"text": "Đã thu gom lần hai."})
    await conn.execute("UPDATE report SET answered_at = answered_at - interval '8 days' WHERE id = $1", rid)
    late = await client.post(f"/v1/feedback/reports/{rid}/reopen", json={"reason": "Vẫn còn rác"},
                             headers=people["a"])
    assert late.status_code == 409 and "7 days" in late.json()["detail"]


async def test_answers_nobody_reopened_close_after_seven_days(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    await act(client, people["clerk"], rid, "receive")
    await act(client, people["clerk"], rid, "answer", {"text": "Đã khắc phục xong, cảm ơn."})
    units = client.app.state.identity.units
    assert await jobs.close_expired_answers(conn, units) == 0
    await conn.execute("UPDATE report SET answered_at = answered_at - interval '7 days 1 minute' WHERE id = $1", rid)
    assert await jobs.close_expired_answers(conn, units) == 1
    report = (await client.get(f"/v1/feedback/reports/{rid}", headers=people["a"])).json()
    assert report["status"] == "closed" and report["close_reason"] == "expired"


async def test_assign_only_to_the_units_staff_and_only_staff_see_it(client, conn, people):
    other_id = await grant(client, conn, RESIDENT_B, "staff", OTHER_WARD)
    clerk_id = await conn.fetchval("SELECT resident_id FROM role_grant WHERE role = 'staff' AND scope = $1", WARD)
    rid = (await submit(client, people["a"]))["id"]
    await act(client, people["clerk"], rid, "assign", {"assignee_id": str(other_id)}, expect=400)
    assigned = await act(client, people["clerk"], rid, "assign", {"assignee_id": str(clerk_id)})
    assert assigned["assignee_id"] == str(clerk_id)
    seen_by_reporter = (await client.get(f"/v1/feedback/reports/{rid}", headers=people["a"])).json()
    assert "assignee_id" not in seen_by_reporter
    mine = await client.get(f"/v1/feedback/units/{WARD}/reports?assignee=me", headers=people["clerk"])
    assert [r["id"] for r in mine.json()["items"]] == [rid]


async def test_escalation_reaches_the_head_and_the_parent_unit_once_per_deadline(client, conn, people):
    await grant(client, conn, HEAD, "unit_head", WARD)
    await grant(client, conn, CITY_STAFF, "staff", "hanoi")
    head, city = await bearer(client, HEAD), await bearer(client, CITY_STAFF)
    rid = (await submit(client, people["a"]))["id"]
    units = client.app.state.identity.units
    assert await jobs.escalate_overdue(conn, units) == 0
    await conn.execute("UPDATE report SET receive_due_at = now() - interval '1 minute' WHERE id = $1", rid)
    assert await jobs.escalate_overdue(conn, units) == 1
    assert await jobs.escalate_overdue(conn, units) == 0  # once per deadline
    assert any(t.startswith(f"Phản ánh #{rid} quá hạn tiếp nhận") for t in await inbox_titles(client, head))
    assert any(t.startswith(f"Phản ánh #{rid} quá hạn tiếp nhận") for t in await inbox_titles(client, city))
    assert not any("quá hạn" in t for t in await inbox_titles(client, people["clerk"]))

    await act(client, people["clerk"], rid, "receive")
    await conn.execute("UPDATE report SET answer_due_at = now() - interval '1 minute' WHERE id = $1", rid)
    assert await jobs.escalate_overdue(conn, units) == 1
    assert any(t.startswith(f"Phản ánh #{rid} quá hạn trả lời") for t in await inbox_titles(client, head))
    staff_view = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["clerk"])).json()["events"]
    assert [e["data"]["deadline"] for e in staff_view if e["kind"] == "escalated"] == ["receipt", "answer"]
    resident_view = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])).json()["events"]
    assert "escalated" not in [e["kind"] for e in resident_view]
    overdue = await client.get(f"/v1/feedback/units/{WARD}/reports?overdue=true", headers=people["clerk"])
    assert [r["id"] for r in overdue.json()["items"]] == [rid] and overdue.json()["items"][0]["overdue"] is True


async def test_merge_closes_the_duplicate_and_moves_its_people(client, conn, people):
    original = (await submit(client, people["a"]))["id"]
    duplicate = (await submit(client, people["b"], duplicates_checked=True))["id"]
    await act(client, people["clerk"], duplicate, "merge", {"into": duplicate}, expect=400)
    merged = await act(client, people["clerk"], duplicate, "merge", {"into": original})
    assert merged["status"] == "closed" and merged["duplicate_of"] == original
    b_view = (await client.get(f"/v1/feedback/reports/{original}", headers=people["b"])).json()
    assert b_view["following"] is True and b_view["follower_count"] == 1
    await act(client, people["clerk"], original, "receive")
    assert any(t.startswith(f"Phản ánh #{original}: Đã tiếp nhận") for t in await inbox_titles(client, people["b"]))


async def test_a_failed_write_is_not_replayed_and_a_successful_one_is(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    same = people["clerk"] | key()
    early = await client.post(f"/v1/feedback/reports/{rid}/start", json={}, headers=same)
    assert early.status_code == 409  # not received yet: nothing is stored under the key
    await act(client, people["clerk"], rid, "receive")
    started = await client.post(f"/v1/feedback/reports/{rid}/start", json={}, headers=same)
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    replayed = await client.post(f"/v1/feedback/reports/{rid}/start", json={}, headers=same)
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    events = await conn.fetchval("SELECT count(*) FROM report_event WHERE report_id = $1 AND kind = 'started'", rid)
    assert events == 1
    bad_key = await client.post(f"/v1/feedback/reports/{rid}/notes", json={"text": "x"},
                                headers=people["clerk"] | {"Idempotency-Key": "short"})
    assert bad_key.status_code == 400 and bad_key.json()["errors"][0]["field"] == "Idempotency-Key"


STAFF_ACTIONS = [("receive", {}), ("assign", {"assignee_id": "00000000-0000-0000-0000-000000000000"}),
                 ("start", {}), ("answer", {"text": "Đã xử lý xong rồi nhé"}), ("reject", {"reason": "Không rõ"}),
                 ("transfer", {"unit": OTHER_WARD, "reason": "Sai địa bàn"}), ("notes", {"text": "ghi chú"}),
                 ("merge", {"into": 1})]
REPORTER_ACTIONS = [("close", {}), ("rating", {"stars": 3}), ("reopen", {"reason": "Chưa xử lý xong"})]


async def test_who_may_take_each_step(client, conn, people):
    rid = (await submit(client, people["a"]))["id"]
    for action, body in STAFF_ACTIONS:  # another unit's clerk, the reporter, another resident: never
        for who in ("other_clerk", "a", "b"):
            await act(client, people[who], rid, action, body, expect=403)
    await act(client, people["clerk"], rid, "receive")
    await act(client, people["clerk"], rid, "answer", {"text": "Đã xử lý xong rồi nhé"})
    for action, body in REPORTER_ACTIONS:  # only the reporter: not another resident, not the unit's clerk
        for who in ("b", "clerk"):
            await act(client, people[who], rid, action, body, expect=403)
    events = await conn.fetch("SELECT kind FROM report_event WHERE report_id = $1 ORDER BY id", rid)
    assert [e["kind"] for e in events] == ["submitted", "received", "answered"]
