"""Open and overdue mean the same everywhere: the public per-unit figures, the staff queue and its filter,
each report's own flag and Open311's status; and the workflow table agrees with the database on "open"."""

from __future__ import annotations

from feedback import workflow
from tests.feedback.support import LAT, WARD, act, submit


async def test_figures_queue_and_reports_agree_on_open_and_overdue(client, conn, people):
    fresh = await submit(client, people["a"], duplicates_checked=True)
    answer_late = await submit(client, people["a"], duplicates_checked=True, latitude=LAT + 0.01)
    receipt_late = await submit(client, people["b"], duplicates_checked=True, latitude=LAT + 0.02)
    received_late = await submit(client, people["b"], duplicates_checked=True, latitude=LAT + 0.03)
    answered_late = await submit(client, people["a"], duplicates_checked=True, latitude=LAT + 0.04)
    for report in (answer_late, received_late, answered_late):
        await act(client, people["clerk"], report["id"], "receive")
    await act(client, people["clerk"], answered_late["id"], "answer", {"text": "Đã xử lý xong, cảm ơn."})
    await conn.execute("UPDATE report SET answer_due_at = now() - interval '1 hour' WHERE id = ANY($1::bigint[])",
                       [answer_late["id"], answered_late["id"]])
    # past the receipt deadline: overdue while nobody has received it, not once it is received
    await conn.execute("UPDATE report SET receive_due_at = now() - interval '1 minute' WHERE id = ANY($1::bigint[])",
                       [receipt_late["id"], received_late["id"]])

    async def queue(**params) -> list[dict]:
        response = await client.get(f"/v1/feedback/units/{WARD}/reports", params=params, headers=people["clerk"])
        assert response.status_code == 200, response.text
        return response.json()["items"]

    overdue = {r["id"] for r in await queue(overdue="true")}
    assert overdue == {answer_late["id"], receipt_late["id"]}
    assert {r["id"] for r in await queue(overdue="false")} == {fresh["id"], received_late["id"]}
    open_ids = {r["id"] for r in await queue()}
    assert open_ids == {fresh["id"], answer_late["id"], receipt_late["id"], received_late["id"]}
    assert {r["id"] for r in await queue() if r["overdue"]} == overdue
    for report in (fresh, answer_late, receipt_late, received_late, answered_late):
        seen = (await client.get(f"/v1/feedback/reports/{report['id']}", headers=people["a"])).json()
        assert seen["overdue"] is (report["id"] in overdue), seen

    figures = (await client.get("/v1/feedback/public/stats", params={"unit": WARD})).json()["units"][0]
    assert (figures["open"], figures["overdue"]) == (len(open_ids), len(overdue)) == (4, 2)

    open311 = (await client.get("/open311/v2/requests.json")).json()
    assert {r["service_request_id"] for r in open311 if r["status"] == "open"} == open_ids
    closed = (await client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
    assert [r["service_request_id"] for r in closed] == [answered_late["id"]]


async def test_the_workflow_leaves_open_exactly_the_statuses_the_database_calls_open(conn):
    open_in_sql = {s for s in workflow.STATUSES if await conn.fetchval("SELECT feedback_report_is_open($1)", s)}
    # open: the unit still owes an answer, so it may still answer, reject or pass the report on
    for action in ("reject", "transfer", "merge", "assign", "escalate"):
        assert {s.from_status for s in workflow.TRANSITIONS if s.action == action} == open_in_sql, action
    answerable = {s.from_status for s in workflow.TRANSITIONS if s.action == "answer"}
    assert answerable < open_in_sql


def test_the_workflow_table_has_one_row_per_step_and_one_actor_per_action():
    steps = [(s.from_status, s.action) for s in workflow.TRANSITIONS]
    assert len(steps) == len(set(steps))
    for step in workflow.TRANSITIONS:
        assert step.actor == workflow.ACTORS[step.action], step
        assert {step.from_status, step.to_status} <= set(workflow.STATUSES), step
