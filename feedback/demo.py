"""Demo data for `ihanoi dev` / `ihanoi seed`: public reports around central Hanoi in every state.

Idempotent: each report has a fixed key, so seeding twice creates nothing new.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import asyncpg

from app import identity
from feedback import service, store
from feedback.context import nfc, utcnow

# (ward, latitude, longitude): approximate centres of central wards
PLACES = [
    ("phuong-hoan-kiem", 21.0287, 105.8524), ("phuong-cua-nam", 21.0245, 105.8430),
    ("phuong-ba-dinh", 21.0368, 105.8342), ("phuong-dong-da", 21.0180, 105.8290),
    ("phuong-hai-ba-trung", 21.0090, 105.8520), ("phuong-cau-giay", 21.0320, 105.7950),
    ("phuong-tay-ho", 21.0700, 105.8200), ("phuong-long-bien", 21.0470, 105.8870),
]
PROBLEMS = [
    ("ve-sinh-moi-truong", "Rác thải tập kết sai quy định, bốc mùi hôi cả ngày"),
    ("ha-tang-giao-thong", "Mặt đường hỏng, nhiều ổ gà sâu gây nguy hiểm cho xe máy"),
    ("trat-tu-do-thi", "Hàng quán lấn chiếm vỉa hè, người đi bộ phải xuống lòng đường"),
    ("dien-chieu-sang", "Đèn đường không sáng cả đoạn, buổi tối rất tối"),
    ("cap-thoat-nuoc", "Nắp cống bị vỡ, nước thải tràn ra đường khi mưa"),
    ("cay-xanh", "Cây xanh nghiêng sắp đổ sau mưa bão, cần xử lý gấp"),
    ("trat-tu-giao-thong", "Ô tô đỗ sai quy định chắn lối vào ngõ"),
    ("trat-tu-xay-dung", "Công trình xây dựng không che chắn, vật liệu rơi xuống đường"),
]
REPORTERS = ["Nguyễn Thị Hoa", "Trần Văn Nam", "Lê Thu Trang", "Phạm Đức Long", "Hoàng Minh Anh",
             "Vũ Thị Lan", "Đặng Quang Huy", "Bùi Ngọc Mai"]
STATES = ["submitted", "received", "in_progress", "answered", "closed", "rejected"]
COUNT = 48


async def seed(conn: asyncpg.Connection, progress: Callable[[str], None]) -> Mapping[str, int]:
    now = utcnow()
    reporters = [await identity.demo_resident(conn, key=f"feedback-{i}", full_name=name)
                 for i, name in enumerate(REPORTERS)]
    created = 0
    for i in range(COUNT):
        ward, lat, lng = PLACES[i % len(PLACES)]
        category_code, text = PROBLEMS[i % len(PROBLEMS)]
        category = await store.category(conn, category_code)
        state = STATES[i % len(STATES)]
        submitted = now - dt.timedelta(hours=7 * i + 1)
        receive_due, answer_due = service.deadlines(submitted, category["receive_hours"], category["answer_hours"])
        # spread the points over about 600 m around the ward's centre
        lat += ((i * 37) % 11 - 5) * 0.0011
        lng += ((i * 53) % 11 - 5) * 0.0011
        report_id = await store.insert_report(
            conn, reporter_id=reporters[i % len(reporters)], idempotency_key=f"demo-{i}",
            reporter_name=REPORTERS[i % len(REPORTERS)], hide_name=i % 5 == 0, visibility="public", source="demo",
            category_code=category_code, urgency=category["urgency"], description=f"{text} (số {i + 1})",
            latitude=lat, longitude=lng, address=f"Số {i * 3 + 1}, {nfc(ward.replace('-', ' ').title())}",
            ward_code=ward, unit_code=service.route(category, ward), submitted_at=submitted, routed_at=submitted,
            receive_due_at=receive_due, answer_due_at=answer_due, updated_at=submitted)
        if report_id is None:
            continue
        created += 1
        await store.insert_event(conn, report_id=report_id, at=submitted, kind="submitted", public=True,
                                 actor_id=reporters[i % len(reporters)], actor_role="reporter",
                                 to_status="submitted")
        step = submitted + dt.timedelta(hours=2)
        if state != "submitted":
            await store.update_report(conn, report_id, step, status="received", received_at=step)
            await store.insert_event(conn, report_id=report_id, at=step, kind="received", public=True, actor_id=None,
                                     actor_role="staff", from_status="submitted", to_status="received")
        if state == "in_progress":
            await store.update_report(conn, report_id, step, status="in_progress")
        if state in ("answered", "closed"):
            answer = "Đơn vị đã kiểm tra hiện trường và khắc phục xong. Cảm ơn Ông/Bà đã phản ánh."
            at = step + dt.timedelta(hours=3)
            await store.update_report(conn, report_id, at, status="answered", answered_at=at,
                                      answered_on_time=at <= answer_due, answer_text=answer)
            await store.insert_event(conn, report_id=report_id, at=at, kind="answered", public=True, actor_id=None,
                                     actor_role="staff", from_status="received", to_status="answered",
                                     message=answer)
        if state == "closed":
            at = step + dt.timedelta(hours=5)
            await store.update_report(conn, report_id, at, status="closed", closed_at=at, close_reason="rated",
                                      rating=3 + i % 3, rated_at=at)
            await store.insert_event(conn, report_id=report_id, at=at, kind="rated", public=True,
                                     actor_id=reporters[i % len(reporters)], actor_role="reporter",
                                     from_status="answered", to_status="closed", data={"stars": 3 + i % 3})
        if state == "rejected":
            reason = "Nội dung không thuộc phạm vi tiếp nhận của hệ thống."
            await store.update_report(conn, report_id, step, status="rejected", closed_at=step,
                                      close_reason="rejected")
            await store.insert_event(conn, report_id=report_id, at=step, kind="rejected", public=True, actor_id=None,
                                     actor_role="staff", from_status="received", to_status="rejected",
                                     message=reason)
        if (i + 1) % 12 == 0:
            progress(f"{i + 1}/{COUNT} reports")
    return {"reports": created}
