"""`ihanoi seed` for feedback: public demo reports in every state, once."""

from __future__ import annotations

from feedback import demo


async def test_demo_reports_are_seeded_once_and_shown_publicly(client, conn):
    lines: list[str] = []
    assert await demo.seed(conn, lines.append) == {"reports": demo.COUNT}
    assert lines[-1] == f"{demo.COUNT}/{demo.COUNT} reports"
    assert await demo.seed(conn, lines.append) == {"reports": 0}
    statuses = {r["status"] for r in await conn.fetch("SELECT status FROM report WHERE source = 'demo'")}
    assert statuses == set(demo.STATES)
    page = (await client.get("/v1/feedback/public/reports", params={"limit": 100})).json()
    assert len(page["items"]) == demo.COUNT
    stats = (await client.get("/v1/feedback/public/stats")).json()["units"]
    assert sum(u["received"] for u in stats) == demo.COUNT
    hidden = [r for r in await conn.fetch("SELECT id FROM report WHERE source = 'demo' AND hide_name")]
    shown = (await client.get(f"/v1/feedback/reports/{hidden[0]['id']}")).json()
    assert shown["reporter_name"] is None
