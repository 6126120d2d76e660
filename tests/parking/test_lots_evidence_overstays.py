"""Evidence photos read back cleaned, per object; lots edited by their operator or the city with an audit, past
sessions untouched; gate stays over the maximum flagged for staff."""

from __future__ import annotations

import base64
import datetime as dt
import io

from PIL import Image

from tests.parking.support import (
    OFFICER,
    OPERATOR_STAFF,
    RESIDENT,
    admin,
    backdate,
    bearer,
    camera_jpeg,
    check_in,
    check_out,
    gate,
    grant,
    key,
    make_lot,
    operator,
    topup,
)


async def setup(client, conn):
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    return op, lot, await gate(client, conn, op)


# ---- evidence photos ---------------------------------------------------------------------------------------------


async def test_evidence_photos_are_read_back_cleaned_by_the_operator_and_city_staff_only(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    photo_in, photo_out = camera_jpeg((200, 0, 0)), camera_jpeg((0, 200, 0))
    session = await check_in(client, gate_headers, lot, plate="30N40001", vehicle="car",
                             photo_base64=base64.b64encode(photo_in).decode())
    await check_out(client, gate_headers, lot, plate="30N40001", photo_base64=base64.b64encode(photo_out).decode())
    url = f"/v1/parking/sessions/{session['id']}/photos"
    await grant(client, conn, OPERATOR_STAFF, "parking_operator", op)
    staff = await bearer(client, OPERATOR_STAFF)
    answer = await client.get(f"{url}/in", headers=staff)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["x-content-type-options"] == "nosniff"
    image = Image.open(io.BytesIO(answer.content))
    assert image.size == (96, 64) and not image.getexif() and b"GateCam" not in answer.content
    assert image.getpixel((48, 32))[0] > 150  # the check-in photo (red), not the check-out one
    out = await client.get(f"{url}/out", headers=await admin(client, conn))
    assert out.status_code == 200 and Image.open(io.BytesIO(out.content)).getpixel((48, 32))[1] > 150
    thumb = await client.get(f"{url}/in", params={"thumbnail": "true"}, headers=staff)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    again = await client.get(f"{url}/in", headers=staff | {"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    await grant(client, conn, OFFICER, "parking_enforcement")
    assert (await client.get(f"{url}/out", headers=await bearer(client, OFFICER))).status_code == 200
    # another operator's staff, a resident, the gate itself, nobody: no such photo
    other = await operator(conn)
    await grant(client, conn, "001095077777", "parking_operator", other)
    for headers in (await bearer(client, "001095077777"), await bearer(client, RESIDENT), gate_headers):
        assert (await client.get(f"{url}/in", headers=headers)).status_code == 404
    assert (await client.get(f"{url}/in")).status_code == 401
    assert (await client.get(f"{url}/sideways", headers=staff)).status_code == 400


async def test_a_photo_stored_before_cleaning_is_cleaned_when_read_and_a_bad_upload_writes_nothing(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    session = await check_in(client, gate_headers, lot, plate="30N40002", vehicle="car")
    await conn.execute("UPDATE parking_session SET photo_in = $2 WHERE id = $1", session["id"], camera_jpeg())
    legacy = await client.get(f"/v1/parking/sessions/{session['id']}/photos/in", headers=await admin(client, conn))
    assert legacy.status_code == 200 and b"GateCam" not in legacy.content
    before = await conn.fetchval("SELECT count(*) FROM parking_session")
    bad = await check_in(client, gate_headers, lot, expect=422, plate="30N40003", vehicle="car",
                         photo_base64=base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 64).decode())
    assert bad["errors"][0]["field"] == "photo_base64"
    assert await conn.fetchval("SELECT count(*) FROM parking_session") == before
    missing = await client.get(f"/v1/parking/sessions/{session['id']}/photos/out", headers=await admin(client, conn))
    assert missing.status_code == 404


# ---- lot editing -------------------------------------------------------------------------------------------------


async def test_the_operator_edits_capacity_and_hours_and_every_change_is_audited(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    await grant(client, conn, OPERATOR_STAFF, "parking_operator", op)
    staff = await bearer(client, OPERATOR_STAFF)
    await check_in(client, gate_headers, lot, plate="30P50001", vehicle="car")
    await check_in(client, gate_headers, lot, plate="30P50002", vehicle="car")
    edited = await client.patch(f"/v1/parking/lots/{lot}", headers=staff | key(), json={
        "capacity_car": 1, "capacity_motorbike": 80, "opens_at": "06:00:00", "closes_at": "23:00:00",
        "name": "Bãi xe Hàng Bạc (mở rộng)"})
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["name"] == "Bãi xe Hàng Bạc (mở rộng)" and body["opens_at"] == "06:00:00"
    # two cars inside, room for one now: none free, and both still check out at their tariff
    assert {s["vehicle"]: (s["capacity"], s["free"]) for s in body["spaces"]} == {"motorbike": (80, 80),
                                                                                    "car": (1, 0)}
    changes = (await client.get(f"/v1/parking/lots/{lot}/changes", headers=staff)).json()["items"]
    assert len(changes) == 1 and changes[0]["changed_by"] and changes[0]["changes"] == {
        "capacity_car": [2, 1], "capacity_motorbike": [50, 80], "opens_at": [None, "06:00"],
        "closes_at": [None, "23:00"], "name": ["Bãi xe Hàng Bạc", "Bãi xe Hàng Bạc (mở rộng)"]}
    assert (await check_out(client, gate_headers, lot, plate="30P50001"))["fee_vnd"] == 25_000
    # the same values again change nothing and add no audit row; null hours make the lot always open
    same = await client.patch(f"/v1/parking/lots/{lot}", headers=staff | key(), json={"capacity_car": 1})
    assert same.status_code == 200
    opened = await client.patch(f"/v1/parking/lots/{lot}", headers=staff | key(),
                                json={"opens_at": None, "closes_at": None})
    assert opened.status_code == 200 and opened.json()["opens_at"] is None
    changes = (await client.get(f"/v1/parking/lots/{lot}/changes", headers=staff)).json()["items"]
    assert len(changes) == 2 and changes[0]["changes"] == {"opens_at": ["06:00", None], "closes_at": ["23:00", None]}


async def test_lot_edits_refused_write_nothing(client, conn):
    op, lot, _ = await setup(client, conn)
    await grant(client, conn, OPERATOR_STAFF, "parking_operator", op)
    staff = await bearer(client, OPERATOR_STAFF)
    before = await conn.fetchrow("SELECT * FROM parking_lot WHERE code = $1", lot)
    tariffs = await conn.fetchval("SELECT count(*) FROM parking_tariff")
    city_car = await conn.fetchval("SELECT id FROM parking_tariff WHERE lot_id IS NULL AND vehicle = 'car'")
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    refused = [
        (staff, {"opens_at": "06:00:00"}, 400, "closes_at"),
        (staff, {"capacity_motorbike": 0, "capacity_car": 0}, 400, "capacity_motorbike"),
        (staff, {"capacity_car": -1}, 400, None),
        (staff, {"colour": "red"}, 400, None),
        # prices are the city's: an operator may not assign a tariff, even with a capacity change alongside
        (staff, {"capacity_car": 5, "tariffs": [{"vehicle": "car", "tariff_id": city_car, "effective_from": soon}]},
         403, "tariffs"),
        (await bearer(client, RESIDENT), {"capacity_car": 5}, 403, None),
        (await admin(client, conn), {"tariffs": [{"vehicle": "motorbike", "tariff_id": city_car,
                                                  "effective_from": soon}]}, 400, "tariffs[0].tariff_id"),
        (await admin(client, conn), {"tariffs": [{"vehicle": "car", "tariff_id": city_car,
                                                  "effective_from": "2020-01-01T00:00:00+07:00"}]},
         400, "tariffs[0].effective_from"),
    ]
    for headers, body, status, field in refused:
        answer = await client.patch(f"/v1/parking/lots/{lot}", headers=headers | key(), json=body)
        assert answer.status_code == status, (body, answer.text)
        if field:
            assert answer.json()["errors"][0]["field"] == field, answer.text
    assert await conn.fetchrow("SELECT * FROM parking_lot WHERE code = $1", lot) == before
    assert await conn.fetchval("SELECT count(*) FROM parking_tariff") == tariffs
    assert await conn.fetchval("SELECT count(*) FROM parking_lot_change c JOIN parking_lot l ON l.id = c.lot_id "
                               "WHERE l.code = $1", lot) == 0
    assert (await client.patch("/v1/parking/lots/no-such-lot", headers=staff | key(),
                               json={"capacity_car": 1})).status_code == 404
    assert (await client.get(f"/v1/parking/lots/{lot}/changes", headers=await bearer(client, RESIDENT))).status_code \
        == 404


async def test_the_city_assigns_a_tariff_from_now_on_and_past_sessions_keep_theirs(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    city = await admin(client, conn)
    resident = await bearer(client, RESIDENT)
    saved = await client.post("/v1/parking/vehicles", json={"plate": "30Q60001", "vehicle": "car"}, headers=resident)
    assert saved.status_code == 201
    await topup(client, resident, 500_000)
    done = await check_in(client, gate_headers, lot, plate="30Q60001")
    await check_out(client, gate_headers, lot, plate="30Q60001")
    parked = await check_in(client, gate_headers, lot, plate="30Q60001")
    # a pricier car tariff of another lot, assigned to this one from a moment on
    other = (await make_lot(client, city, op))["code"]
    pricey = await client.post("/v1/parking/tariffs", headers=city | key(), json={
        "vehicle": "car", "lot": other, "mode": "hourly", "hour_rates_vnd": [40_000],
        "effective_from": (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()})
    assert pricey.status_code == 201, pricey.text
    effective = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    edited = await client.patch(f"/v1/parking/lots/{lot}", headers=city | key(), json={
        "tariffs": [{"vehicle": "car", "tariff_id": pricey.json()["id"], "effective_from": effective}]})
    assert edited.status_code == 200, edited.text
    change = (await client.get(f"/v1/parking/lots/{lot}/changes", headers=city)).json()["items"][0]["changes"]
    new_id = change["tariff_car"][1]["tariff_id"]
    assert change["tariff_car"][1]["copied_from"] == pricey.json()["id"]
    assert await conn.fetchval("SELECT hour_rates FROM parking_tariff WHERE id = $1", new_id) == [40_000]
    listed = (await client.get("/v1/parking/tariffs", params={"lot": lot})).json()["items"]
    assert [t["id"] for t in listed] == [new_id]
    # the same moment twice is a conflict, with nothing written
    twice = await client.patch(f"/v1/parking/lots/{lot}", headers=city | key(), json={
        "tariffs": [{"vehicle": "car", "tariff_id": pricey.json()["id"], "effective_from": effective}]})
    assert twice.status_code == 409
    await conn.execute("UPDATE parking_tariff SET effective_from = now() - interval '1 second' WHERE id = $1", new_id)
    # the vehicle parked before keeps its tariff; the finished session is not rewritten; the next one pays the new
    assert (await check_out(client, gate_headers, lot, plate="30Q60001"))["fee_vnd"] == 25_000
    first = await conn.fetchrow("SELECT tariff_id, fee_vnd FROM parking_session WHERE id = $1", done["id"])
    assert first["fee_vnd"] == 25_000 and first["tariff_id"] != new_id
    assert await conn.fetchval("SELECT tariff_id FROM parking_session WHERE id = $1", parked["id"]) != new_id
    await check_in(client, gate_headers, lot, plate="30Q60001")
    assert (await check_out(client, gate_headers, lot, plate="30Q60001"))["fee_vnd"] == 40_000


# ---- stays over the maximum --------------------------------------------------------------------------------------


async def test_a_gate_stay_over_the_maximum_checks_out_flagged_and_staff_see_it(client, conn):
    op, lot, gate_headers = await setup(client, conn)
    resident = await bearer(client, RESIDENT)
    saved = await client.post("/v1/parking/vehicles", json={"plate": "29-B2 700.01", "vehicle": "motorbike"},
                              headers=resident)
    assert saved.status_code == 201
    await topup(client, resident, 1_000_000)
    long_ago = await check_in(client, gate_headers, lot, plate="29-B2 700.01")
    await backdate(conn, long_ago["id"], days=31, hours=1)
    abandoned = await check_in(client, gate_headers, lot, plate="29-B2 700.02", vehicle="motorbike")
    await backdate(conn, abandoned["id"], days=40)
    recent = await check_in(client, gate_headers, lot, plate="29-B2 700.03", vehicle="motorbike")
    await grant(client, conn, OPERATOR_STAFF, "parking_operator", op)
    staff = await bearer(client, OPERATOR_STAFF)
    listed = (await client.get(f"/v1/parking/operators/{op}/overstays", headers=staff)).json()
    assert listed["max_days"] == 30
    assert [(i["session"]["id"], i["still_parked"]) for i in listed["items"]] == [
        (abandoned["id"], True), (long_ago["id"], True)]
    # the gate opens, the tariff's fee is charged (31 whole days of day-and-night turns, then one more turn)
    out = await check_out(client, gate_headers, lot, plate="29B270001")
    assert out["overstay"] is True and out["paid"] and "30-day maximum" in out["message"]
    assert out["fee_vnd"] >= 31 * 12_000 + 5_000
    assert await conn.fetchval("SELECT overstay FROM parking_session WHERE id = $1", long_ago["id"]) is True
    listed = (await client.get(f"/v1/parking/operators/{op}/overstays", headers=staff)).json()["items"]
    assert [(i["session"]["id"], i["still_parked"], i["days"]) for i in listed] == [
        (abandoned["id"], True, 40), (long_ago["id"], False, 31)]
    assert recent["id"] not in [i["session"]["id"] for i in listed]
    normal = await check_out(client, gate_headers, lot, plate="29B270003")
    assert normal["overstay"] is False
    # enforcement sees it too; another operator's staff and residents do not
    await grant(client, conn, OFFICER, "parking_enforcement")
    assert (await client.get(f"/v1/parking/operators/{op}/overstays",
                             headers=await bearer(client, OFFICER))).status_code == 200
    assert (await client.get(f"/v1/parking/operators/{op}/overstays", headers=resident)).status_code == 403
