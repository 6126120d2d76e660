"""Deadlines in working hours as a client sees them: a report sent on the Friday before Tết 2026."""

from __future__ import annotations

import datetime as dt
import uuid

from app import web
from app.identity.models import Principal
from feedback import context, service
from feedback.models import ReportCreate
from tests.feedback.support import LAT, LNG, RESIDENT_A, WARD, bearer, grant

FRIDAY_BEFORE_TET = dt.datetime(2026, 2, 13, 16, 0, tzinfo=web.CITY_TZ)  # Tết holiday: Mon 16 - Fri 20 Feb


async def test_a_report_sent_before_tet_is_due_after_the_holiday_and_the_weekend(client, conn):
    resident_id = await grant(client, conn, RESIDENT_A, "staff", "phuong-ba-dinh")  # any role: just to exist
    headers = await bearer(client, RESIDENT_A)
    principal = Principal(sub=str(resident_id), kind="resident", level=2)
    ctx = context.Ctx(units=client.app.state.identity.units)
    ids = {}
    for category in ("ve-sinh-moi-truong", "cay-xanh"):  # normal (8 h / 40 h) and urgent (4 h / 4 h)
        body = ReportCreate(category=category, description="Phản ánh gửi chiều thứ Sáu trước Tết",
                            latitude=LAT, longitude=LNG, ward=WARD, duplicates_checked=True)
        report = await service.submit(conn, ctx, principal, body, idempotency_key=uuid.uuid4().hex,
                                      now=FRIDAY_BEFORE_TET.astimezone(dt.UTC))
        ids[category] = report.id

    normal = (await client.get(f"/v1/feedback/reports/{ids['ve-sinh-moi-truong']}", headers=headers)).json()
    # 1 h on Friday, then the holiday week and the weekend, then 7 h on Monday 23 Feb
    assert normal["receive_due_at"] == "2026-02-23T16:00:00+07:00"
    # 40 h: 1 h Friday, 8 h Monday to Thursday, 7 h on Friday 27 Feb
    assert normal["answer_due_at"] == "2026-02-27T16:00:00+07:00"
    urgent = (await client.get(f"/v1/feedback/reports/{ids['cay-xanh']}", headers=headers)).json()
    assert urgent["receive_due_at"] == urgent["answer_due_at"] == "2026-02-23T11:00:00+07:00"
