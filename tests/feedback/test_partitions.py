"""A report's steps (report_event) are partitioned by month on their time: a step lands in its month, a timeline
reads only the months since its report was sent (EXPLAIN), and a month past the retention is detached although
answer photos name its events (the service keeps that rule: no foreign key into a partitioned table)."""

from __future__ import annotations

import datetime as dt

from app import partitions
from app.settings import load_settings
from feedback import store
from feedback.module import module as feedback_module
from tests.feedback.support import act, submit, upload
from tests.plans import Recorder

NOW = dt.datetime.now(dt.UTC)
THIS_MONTH = partitions.month_start(NOW)


def month(offset: int) -> dt.datetime:
    return partitions.add_months(THIS_MONTH, offset)


def name(offset: int) -> str:
    return partitions.partition_name("report_event", month(offset))


async def test_a_timeline_reads_only_the_months_since_its_report_and_old_months_detach(client, conn, people,
                                                                                        settings):
    await partitions.maintain(conn, [feedback_module], settings, now=month(-3))  # months -3 .. 0
    await partitions.maintain(conn, [feedback_module], settings)  # and 1 .. 3
    report = await submit(client, people["a"])
    rid = report["id"]
    await act(client, people["clerk"], rid, "receive")
    photo = await upload(client, people["clerk"])
    await act(client, people["clerk"], rid, "answer", {"text": "Đã thu gom, cảm ơn.", "photos": [{"id": photo}]})
    rows = await conn.fetch("SELECT kind, tableoid::regclass::text AS part FROM report_event WHERE report_id = $1 "
                            "ORDER BY id", rid)
    assert [(r["kind"], r["part"]) for r in rows] == [("submitted", name(0)), ("received", name(0)),
                                                      ("answered", name(0))]
    answered = await conn.fetchval("SELECT id FROM report_event WHERE report_id = $1 AND kind = 'answered'", rid)
    assert await conn.fetchval("SELECT event_id FROM report_photo WHERE id = $1", photo) == answered
    timeline = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])).json()["events"]
    assert [e["kind"] for e in timeline] == ["submitted", "received", "answered"]
    assert [p["id"] for p in timeline[2]["photos"]] == [photo]

    recorder = Recorder(conn)
    submitted_at = await conn.fetchval("SELECT submitted_at FROM report WHERE id = $1", rid)
    assert len(await store.events(recorder, rid, submitted_at, public_only=True)) == 3
    read = await recorder.tables(prefix="report_event")
    # the months before the report (a day's margin) are not read
    assert name(0) in read and not {name(-3), name(-2)} & read

    # three months on, keeping two: month 0 leaves the live table, though a photo names one of its events
    keep_two = load_settings({**settings.environ, "IHANOI_FEEDBACK_EVENT_RETENTION_MONTHS": "2"})
    done = await partitions.maintain(conn, [feedback_module], keep_two, now=month(2) + dt.timedelta(days=1))
    assert f"report_event: detached {name(0)} (older than 2 month(s); the table is kept)" in done
    assert await conn.fetchval(f"SELECT count(*) FROM {name(0)} WHERE report_id = $1", rid) == 3
    later = await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["a"])
    assert later.status_code == 200 and later.json()["events"] == []
    assert (await client.get(f"/v1/feedback/reports/{rid}", headers=people["a"])).status_code == 200
