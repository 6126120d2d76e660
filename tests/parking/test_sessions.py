"""Gate sessions over HTTP: check-in/out by plate, tag and pass code, the fee charged through payments,
an empty wallet's debt, settled by the next top-up itself; and every bad input a clear problem with nothing written."""

from __future__ import annotations

import base64
import datetime as dt

from parking import service
from tests.parking.support import (
    OTHER,
    RESIDENT,
    admin,
    backdate,
    bearer,
    camera_jpeg,
    check_in,
    check_out,
    counts,
    gate,
    make_lot,
    operator,
    topup,
)

JPEG = camera_jpeg()


async def setup(client, conn):
    op = await operator(conn)
    lot = await make_lot(client, await admin(client, conn), op)
    return op, lot["code"], await gate(client, conn, op)


async def resident_with_car(client, plate: str, personal_id: str = RESIDENT, **extra) -> dict[str, str]:
    headers = await bearer(client, personal_id)
    response = await client.post("/v1/parking/vehicles", json={"plate": plate, "vehicle": "car", **extra},
                                 headers=headers)
    assert response.status_code == 201, response.text
    return headers


async def test_check_in_and_out_charges_the_tariff_in_force_and_sends_a_receipt(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    headers = await resident_with_car(client, "30E12345")
    await topup(client, headers, 200_000)
    session = await check_in(client, gate_headers, lot, plate="30e-123.45",
                             photo_base64=base64.b64encode(JPEG).decode())
    assert session["plate"] == "30E-123.45" and session["vehicle"] == "car" and session["via"] == "plate"
    free = (await client.get(f"/v1/parking/lots/{lot}")).json()["spaces"]
    assert {s["vehicle"]: s["free"] for s in free} == {"motorbike": 50, "car": 1}
    await backdate(conn, session["id"], hours=2, minutes=30)  # three started hours: 25,000 + 25,000 + 35,000
    out = await check_out(client, gate_headers, lot, plate="30E 123 45")
    assert out["fee_vnd"] == 85_000 and out["paid"] and out["debt_vnd"] == 0 and out["gate"] == "open"
    assert (await client.get("/v1/payments/wallet", headers=headers)).json()["balance_vnd"] == 115_000
    receipt = await client.get(f"/v1/payments/receipts/{out['transaction_id']}", headers=headers)
    assert receipt.status_code == 200 and receipt.json()["reason"] == lot
    inbox = (await client.get("/v1/notifications", headers=headers)).json()["items"]
    assert any("85.000" in item["body"] for item in inbox)
    assert await conn.fetchval("SELECT charged_vnd FROM parking_session WHERE id = $1", session["id"]) == 85_000
    photo = await conn.fetchrow("SELECT content_type, content FROM parking_photo WHERE session_id = $1 AND side = 'in'",
                                session["id"])
    assert photo["content_type"] == "image/jpeg" and b"GateCam" not in photo["content"]  # stored cleaned


async def test_a_new_tariff_does_not_reprice_a_parked_vehicle(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    headers = await resident_with_car(client, "30E12346")
    await topup(client, headers, 200_000)
    session = await check_in(client, gate_headers, lot, plate="30E12346")
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    response = await client.post("/v1/parking/tariffs", headers=await admin(client, conn), json={
        "vehicle": "car", "lot": lot, "effective_from": soon, "mode": "hourly", "hour_rates_vnd": [99_000]})
    assert response.status_code == 201, response.text
    await conn.execute("UPDATE parking_tariff SET effective_from = now() - interval '1 second' WHERE id = $1",
                       response.json()["id"])
    out = await check_out(client, gate_headers, lot, plate="30E12346")
    assert out["fee_vnd"] == 25_000  # the tariff in force at check-in
    again = await check_in(client, gate_headers, lot, plate="30E12346")
    assert (await check_out(client, gate_headers, lot, plate="30E12346"))["fee_vnd"] == 99_000
    assert again["id"] != session["id"]


async def test_tags_and_pass_codes_name_the_vehicle(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    headers = await resident_with_car(client, "29A-123.45", rfid_tag="e2004f1a")
    await topup(client, headers, 100_000)
    by_tag = await check_in(client, gate_headers, lot, rfid_tag="E2004F1A")
    assert by_tag["plate"] == "29A-123.45" and by_tag["via"] == "rfid"
    code = await client.post("/v1/parking/pass-codes", json={"plate": "29A12345"}, headers=headers)
    assert code.status_code == 201, code.text
    out = await check_out(client, gate_headers, lot, pass_code=code.json()["code"])
    assert out["paid"]
    # a pass code is used once
    again = await check_in(client, gate_headers, lot, expect=400, pass_code=code.json()["code"])
    assert again["errors"][0]["field"] == "pass_code"


async def test_an_empty_wallet_records_a_debt_the_gate_is_told_and_the_next_top_up_settles_it(client, conn, pool):
    op, lot, gate_headers = await setup(client, conn)
    headers = await resident_with_car(client, "30F55555")
    session = await check_in(client, gate_headers, lot, plate="30F55555")
    out = await check_out(client, gate_headers, lot, plate="30F55555")
    assert out["paid"] is False and out["debt_vnd"] == 25_000 and out["gate"] == "open"
    assert "owed" in out["message"] and out["transaction_id"] is None
    lookup_headers = headers
    mine = (await client.get(f"/v1/parking/sessions/{session['id']}", headers=lookup_headers)).json()
    assert mine["debt_vnd"] == 25_000 and mine["charged_vnd"] == 0
    # no money yet: the settling job leaves it owed
    assert (await service.settle_debts(client.app.state.pool))["still_owed"] >= 1
    await topup(client, headers, 50_000)  # the VNPay stand-in's IPN credits the wallet; parking settles in it
    assert (await client.get("/v1/payments/wallet", headers=headers)).json()["balance_vnd"] == 25_000
    mine = (await client.get(f"/v1/parking/sessions/{session['id']}", headers=headers)).json()
    assert mine["debt_vnd"] == 0 and mine["charged_vnd"] == 25_000
    titles = [i["title"] for i in (await client.get("/v1/notifications", headers=headers)).json()["items"]]
    assert "Phí gửi xe chưa thanh toán" in titles and "Đã thanh toán phí gửi xe còn nợ" in titles


async def test_an_unknown_plate_owes_its_fee(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    await check_in(client, gate_headers, lot, plate="29-B1 123.45", vehicle="motorbike")
    out = await check_out(client, gate_headers, lot, plate="29B112345")
    assert out["debt_vnd"] in (5_000, 8_000) and not out["paid"]
    assert await conn.fetchval("SELECT resident_id FROM parking_debt WHERE plate = '29-B1 123.45'") is None


async def test_bad_gate_input_is_a_clear_problem_and_writes_nothing(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    await check_in(client, gate_headers, lot, plate="30G11111", vehicle="car")
    before = await counts(conn)
    # second check-in of a parked vehicle
    twice = await check_in(client, gate_headers, lot, expect=409, plate="30g-111.11", vehicle="car")
    assert twice["type"].endswith(":already-parked") and twice["errors"][0]["field"] == "plate"
    # check-out without check-in
    never = await check_out(client, gate_headers, lot, expect=409, plate="30G22222")
    assert never["type"].endswith(":not-parked")
    # unreadable plate
    unreadable = await check_in(client, gate_headers, lot, expect=422, plate="??", vehicle="car")
    assert unreadable["type"].endswith(":plate-unreadable") and unreadable["errors"][0]["field"] == "plate"
    # the device's clock far from the server's
    skewed = await check_in(client, gate_headers, lot, expect=422, plate="30G33333", vehicle="car",
                            device_time=(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).isoformat())
    assert skewed["type"].endswith(":device-clock-skew") and skewed["errors"][0]["field"] == "device_time"
    # a car when the lot's car spaces are full (capacity 2: one parked, fill the other)
    await check_in(client, gate_headers, lot, plate="30G44444", vehicle="car")
    full = await check_in(client, gate_headers, lot, expect=409, plate="30G55555", vehicle="car")
    assert full["type"].endswith(":lot-full")
    # not a photo; no vehicle type for an unknown plate; two ways of naming the vehicle at once
    assert (await check_in(client, gate_headers, lot, expect=422, plate="30G66666", vehicle="motorbike",
                           photo_base64="bm90IGEgcGhvdG8="))["errors"][0]["field"] == "photo_base64"
    assert (await check_in(client, gate_headers, lot, expect=400, plate="30G66666"))["errors"][0]["field"] == "vehicle"
    assert (await check_in(client, gate_headers, lot, expect=422, plate="30G66666", rfid_tag="ABCDEF12",
                           vehicle="car"))["errors"][0]["field"] == "plate"
    assert await counts(conn) == (before[0] + 1, before[1], before[2])  # only the one good check-in


async def test_only_the_operators_gates_may_check_vehicles(client, conn):
    op, lot, _ = await setup(client, conn)
    other_gate = await gate(client, conn, await operator(conn))
    await check_in(client, other_gate, lot, expect=403, plate="30H11111", vehicle="car")
    resident = await bearer(client, OTHER)
    await check_in(client, resident, lot, expect=403, plate="30H11111", vehicle="car")
    await check_in(client, {}, lot, expect=401, plate="30H11111", vehicle="car")
