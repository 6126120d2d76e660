"""On-street sessions, permits, enforcement, near me, live availability, reconciliation and public figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from app import live
from parking import service
from tests.parking.support import (
    LAT,
    LNG,
    OFFICER,
    OPERATOR_STAFF,
    RESIDENT,
    admin,
    backdate,
    bearer,
    check_in,
    check_out,
    gate,
    grant,
    key,
    make_lot,
    operator,
    topup,
)


async def street(client, conn):
    op = await operator(conn)
    zone = await make_lot(client, await admin(client, conn), op, kind="street", capacity_car=5)
    headers = await bearer(client, RESIDENT)
    return op, zone["code"], headers


async def test_on_street_session_paid_ahead_reminded_and_extended_up_to_the_maximum(client, conn):
    op, zone, headers = await street(client, conn)
    await topup(client, headers, 500_000)
    response = await client.post("/v1/parking/street-sessions", headers=headers | key(),
                                 json={"lot": zone, "plate": "30K12345", "vehicle": "car", "minutes": 90})
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["fee_vnd"] == 50_000 and session["charged_vnd"] == 50_000 and session["paid_until"]
    # the reminder goes once the end is within the lead time
    # as if it had started 90 minutes ago and bought 95: five minutes left
    await conn.execute("UPDATE parking_session SET started_at = $2::timestamptz - interval '90 minutes', "
                       "paid_until = $2::timestamptz + interval '5 minutes' WHERE id = $1", session["id"],
                       dt.datetime.now(dt.UTC))
    assert await service.remind(client.app.state.pool, service.ParkingSettings()) == 1
    assert await service.remind(client.app.state.pool, service.ParkingSettings()) == 0
    titles = [i["title"] for i in (await client.get("/v1/notifications", headers=headers)).json()["items"]]
    assert "Sắp hết giờ gửi xe" in titles
    # extending prices the whole stay: 95 minutes were paid as 2 hours, 60 more make hour 3 at 35,000
    extended = await client.post(f"/v1/parking/street-sessions/{session['id']}/extend", headers=headers | key(),
                                 json={"minutes": 60})
    assert extended.status_code == 200, extended.text
    assert extended.json()["fee_vnd"] == 85_000 and extended.json()["charged_vnd"] == 85_000
    # past the zone's maximum (240 minutes): refused, nothing charged
    too_long = await client.post(f"/v1/parking/street-sessions/{session['id']}/extend", headers=headers | key(),
                                 json={"minutes": 200})
    assert too_long.status_code == 422 and too_long.json()["type"].endswith(":stay-too-long")
    assert too_long.json()["errors"][0]["field"] == "minutes"
    assert (await client.get("/v1/payments/wallet", headers=headers)).json()["balance_vnd"] == 415_000
    # enforcement sees a valid session
    await grant(client, conn, OFFICER, "parking_enforcement")
    officer = await bearer(client, OFFICER)
    found = (await client.get("/v1/parking/enforcement/plates/30K-123.45", headers=officer)).json()
    assert found["valid"] and found["reason"] == "session" and found["session"]["lot"] == zone


async def test_on_street_refusals_write_nothing(client, conn):
    op, zone, headers = await street(client, conn)
    too_long = await client.post("/v1/parking/street-sessions", headers=headers | key(),
                                 json={"lot": zone, "plate": "30K22222", "vehicle": "car", "minutes": 300})
    assert too_long.status_code == 422 and too_long.json()["type"].endswith(":stay-too-long")
    broke = await client.post("/v1/parking/street-sessions", headers=headers | key(),
                              json={"lot": zone, "plate": "30K22222", "vehicle": "car", "minutes": 30})
    assert broke.status_code == 402 and broke.json()["type"].endswith(":insufficient-funds")
    assert await conn.fetchval("SELECT count(*) FROM parking_session WHERE plate = '30K-222.22'") == 0


async def test_monthly_permit_makes_check_out_free_and_enforcement_valid(client, conn):
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    gate_headers = await gate(client, conn, op)
    headers = await bearer(client, RESIDENT)
    await topup(client, headers, 200_000)
    month = dt.datetime.now(dt.UTC).astimezone(service.web.CITY_TZ).strftime("%Y-%m")
    body = {"lot": lot, "plate": "29-B1 555.55", "vehicle": "motorbike", "month": month}
    permit = await client.post("/v1/parking/permits", json=body, headers=headers | key())
    assert permit.status_code == 201, permit.text
    assert permit.json()["amount_vnd"] == 120_000
    again = await client.post("/v1/parking/permits", json=body, headers=headers | key())
    assert again.status_code == 409
    no_car_permit = await client.post("/v1/parking/permits", json=body | {"vehicle": "car", "plate": "30A11111"},
                                      headers=headers | key())
    assert no_car_permit.status_code == 422 and no_car_permit.json()["type"].endswith(":no-tariff")
    await grant(client, conn, OFFICER, "parking_enforcement")
    officer = await bearer(client, OFFICER)
    found = (await client.get("/v1/parking/enforcement/plates/29B155555", headers=officer)).json()
    assert found["valid"] and found["reason"] == "permit"
    await check_in(client, gate_headers, lot, plate="29B155555", vehicle="motorbike")
    out = await check_out(client, gate_headers, lot, plate="29-B1 555.55")
    assert out["fee_vnd"] == 0 and out["message"] == "permit: no fee"
    nobody = (await client.get("/v1/parking/enforcement/plates/30Z99999", headers=officer)).json()
    assert nobody == {"plate": "30Z-999.99", "valid": False, "reason": "none", "session": None, "permit": None,
                      "open_debts_vnd": 0}
    # only enforcement staff look plates up
    assert (await client.get("/v1/parking/enforcement/plates/30Z99999", headers=headers)).status_code == 403


async def test_near_me_lists_lots_within_the_radius_nearest_first_with_free_spaces_and_a_quote(client, conn):
    op = await operator(conn)
    admin_headers = await admin(client, conn)
    near = await make_lot(client, admin_headers, op, latitude=LAT + 100 / 110748.0, capacity_car=3)
    far = await make_lot(client, admin_headers, op, latitude=LAT + 600 / 110748.0)
    await make_lot(client, admin_headers, op, latitude=LAT + 5000 / 110748.0)  # outside 1 km
    gate_headers = await gate(client, conn, op)
    await check_in(client, gate_headers, near["code"], plate="30L12345", vehicle="car")
    response = await client.get("/v1/parking/lots/near", params={"lat": LAT, "lng": LNG, "radius_m": 1000,
                                                                  "vehicle": "car", "minutes": 150})
    assert response.status_code == 200, response.text
    items = [i for i in response.json()["items"] if i["code"] in (near["code"], far["code"])]
    mine = [i["code"] for i in response.json()["items"]]
    assert mine.index(near["code"]) < mine.index(far["code"])
    assert len(items) == 2 and 90 <= items[0]["distance_m"] <= 110
    assert items[0]["spaces"] == [{"vehicle": "car", "capacity": 3, "free": 2}]
    assert items[0]["quote_vnd"] == 85_000  # 3 started hours
    bad = await client.get("/v1/parking/lots/near", params={"lat": 48.85, "lng": LNG})
    assert bad.status_code == 400


async def test_availability_is_published_to_every_listener_after_the_write(client, conn, redis):
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    gate_headers = await gate(client, conn, op)
    # a second Redis connection listens, as another API process's stream does
    pubsub = redis.client.pubsub()
    await pubsub.subscribe(live.channel(redis, "parking", "availability"))
    try:
        await check_in(client, gate_headers, lot, plate="30M12345", vehicle="car")
        event = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                event = json.loads(message["data"])
                break
            await asyncio.sleep(0.01)
        assert event == {"lot": lot, "free": {"motorbike": 50, "car": 1}}
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def test_reconciliation_lists_sessions_fees_debts_and_every_gap(client, conn):
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    gate_headers = await gate(client, conn, op)
    headers = await bearer(client, RESIDENT)
    await client.post("/v1/parking/vehicles", json={"plate": "30N11111", "vehicle": "car"}, headers=headers)
    await topup(client, headers, 300_000)
    paid = await check_in(client, gate_headers, lot, plate="30N11111")
    await backdate(conn, paid["id"], minutes=90)
    await check_out(client, gate_headers, lot, plate="30N11111")  # 50,000 charged
    await check_in(client, gate_headers, lot, plate="30N22222", vehicle="car")
    await check_out(client, gate_headers, lot, plate="30N22222")  # 25,000 owed
    await grant(client, conn, OPERATOR_STAFF, "parking_operator", op)
    staff = await bearer(client, OPERATOR_STAFF)
    today = dt.datetime.now(dt.UTC).astimezone(service.web.CITY_TZ).date().isoformat()
    url = f"/v1/parking/operators/{op}/reconciliation"
    month = dt.datetime.now(dt.UTC).astimezone(service.web.CITY_TZ).strftime("%Y-%m")
    permit = await client.post("/v1/parking/permits", headers=headers | key(),
                               json={"lot": lot, "plate": "29-B2 111.11", "vehicle": "motorbike", "month": month})
    assert permit.status_code == 201, permit.text
    view = (await client.get(url, params={"from": today, "to": today}, headers=staff)).json()
    assert view["rows"] == [{"lot": lot, "day": today, "sessions": 2, "fees_vnd": 75_000, "charged_vnd": 50_000,
                             "debts_open_vnd": 25_000, "ledger_collected_vnd": 50_000}]
    assert view["gaps"] == [] and view["outstanding_vnd"] == 50_000 + 120_000
    # inject a gap: a session whose fee was neither charged nor recorded as owed (an attendant's "free" exit)
    gap = await check_in(client, gate_headers, lot, plate="30N33333", vehicle="car")
    await conn.execute("UPDATE parking_session SET ended_at = started_at + interval '1 minute', fee_vnd = 25000 "
                       "WHERE id = $1", gap["id"])
    # and money in the ledger for this lot that parking never recorded
    await service.payments.charge(conn, await conn.fetchval(
        "SELECT resident_id FROM parking_vehicle WHERE plate = '30N-111.11'"), op, 10_000, lot, "stray-charge-1")
    view = (await client.get(url, params={"from": today, "to": today}, headers=staff)).json()
    # and a permit sale whose record was lost
    await conn.execute("DELETE FROM parking_permit WHERE id = $1", permit.json()["id"])
    view = (await client.get(url, params={"from": today, "to": today}, headers=staff)).json()
    kinds = {(g["kind"], g.get("session_id"), g["amount_vnd"], g["detail"].split(":")[0]) for g in view["gaps"]}
    assert kinds == {
        ("fee-not-accounted", gap["id"], 25_000, "fee 25000 VND; charged 0 VND (charges recorded 0); owed 0 VND"),
        ("ledger-mismatch", None, 10_000, "sessions"), ("ledger-mismatch", None, 120_000, "monthly permits")}
    # money not remitted in time is a gap too
    await conn.execute("SET session_replication_role = replica")  # the ledger is append-only: age it by force
    await conn.execute("UPDATE payment_transaction SET created_at = created_at - interval '10 days' "
                       "WHERE operator_slug = $1", op)
    await conn.execute("SET session_replication_role = DEFAULT")
    view = (await client.get(url, params={"from": today, "to": today}, headers=staff)).json()
    assert any(g["kind"] == "not-remitted" and g["amount_vnd"] == 180_000 for g in view["gaps"])
    # another operator's staff and residents see nothing
    assert (await client.get(url, params={"from": today, "to": today}, headers=headers)).status_code == 403


async def test_public_figures_are_cached_for_a_minute(client, conn):
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    gate_headers = await gate(client, conn, op)
    first = (await client.get(f"/v1/parking/lots/{lot}/figures")).json()
    assert first["sessions"] == 0
    await check_in(client, gate_headers, lot, plate="30P12345", vehicle="car")
    assert (await client.get(f"/v1/parking/lots/{lot}/figures")).json()["sessions"] == 0  # from the cache
    await client.app.state.redis.client.delete(client.app.state.redis.key("parking", "figures", lot, 30))
    assert (await client.get(f"/v1/parking/lots/{lot}/figures")).json()["sessions"] == 1
    assert (await client.get("/v1/parking/lots/no-such-lot/figures")).status_code == 404


async def test_lots_and_tariffs_are_the_citys_to_set(client, conn):
    op = await operator(conn)
    resident = await bearer(client, RESIDENT)
    body = {"code": "lot-refused", "name": "x", "kind": "lot", "operator": op, "latitude": LAT, "longitude": LNG,
            "capacity_car": 1}
    assert (await client.post("/v1/parking/lots", json=body, headers=resident)).status_code == 403
    admin_headers = await admin(client, conn)
    past = await client.post("/v1/parking/tariffs", headers=admin_headers, json={
        "vehicle": "car", "effective_from": "2020-01-01T00:00:00+07:00", "mode": "hourly", "hour_rates_vnd": [1]})
    assert past.status_code == 400 and past.json()["errors"][0]["field"] == "effective_from"
    defaults = (await client.get("/v1/parking/tariffs")).json()["items"]
    motorbike = next(t["price"] for t in defaults if t["price"]["vehicle"] == "motorbike")
    assert (motorbike["day_vnd"], motorbike["night_vnd"], motorbike["day_night_vnd"], motorbike["month_vnd"]) == \
        (5_000, 8_000, 12_000, 120_000)
