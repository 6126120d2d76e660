"""The occupancy counter (parking_occupancy) against a full count of open sessions after every transition that
opens or closes one, through HTTP; and the last space taken by one of two gates at once, never both."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import payments
from app.identity import Principal
from parking import service
from parking.config import ParkingSettings
from parking.models import GateEvent
from tests.parking.support import (
    RESIDENT,
    admin,
    bearer,
    check_in,
    check_out,
    gate,
    key,
    make_lot,
    operator,
    topup,
)


async def counted(conn, *lots: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(lot, vehicle) -> (the counter, a full count of open sessions) for the given lots."""
    rows = await conn.fetch(
        """SELECT l.code, v.vehicle, coalesce(o.occupied, 0) AS counter,
                  (SELECT count(*) FROM parking_session s
                    WHERE s.lot_id = l.id AND s.vehicle = v.vehicle AND s.ended_at IS NULL) AS open
             FROM parking_lot l CROSS JOIN unnest(ARRAY['motorbike', 'car', 'large']) AS v(vehicle)
             LEFT JOIN parking_occupancy o ON o.lot_id = l.id AND o.vehicle = v.vehicle
            WHERE l.code = ANY($1::text[])""", list(lots))
    return {(r["code"], r["vehicle"]): (r["counter"], r["open"]) for r in rows}


async def agree(conn, *lots: str) -> dict[tuple[str, str], int]:
    """Assert the counter equals the full count for every lot and vehicle type; return the counts."""
    table = await counted(conn, *lots)
    assert all(counter == full for counter, full in table.values()), table
    return {k: v[0] for k, v in table.items()}


async def free(client, lot: str) -> dict[str, int]:
    return {s["vehicle"]: s["free"] for s in (await client.get(f"/v1/parking/lots/{lot}")).json()["spaces"]}


async def test_the_counter_equals_a_full_count_after_every_transition(client, conn):
    op = await operator(conn)
    headers = await admin(client, conn)
    lot = (await make_lot(client, headers, op, capacity_motorbike=3, capacity_car=1))["code"]
    zone = (await make_lot(client, headers, op, kind="street", capacity_motorbike=0, capacity_car=2))["code"]
    gate_headers = await gate(client, conn, op)
    resident = await bearer(client, RESIDENT)
    await topup(client, resident, 500_000)
    assert await agree(conn, lot, zone) == {(c, v): 0 for c in (lot, zone) for v in ("motorbike", "car", "large")}

    await check_in(client, gate_headers, lot, plate="29-B1 111.11", vehicle="motorbike")
    await check_in(client, gate_headers, lot, plate="29-B1 111.12", vehicle="motorbike")
    assert (await agree(conn, lot))[(lot, "motorbike")] == 2
    assert await free(client, lot) == {"motorbike": 1, "car": 1}
    # refused: a second check-in of a parked vehicle, a car when the car space is taken
    await check_in(client, gate_headers, lot, expect=409, plate="29-B1 111.11", vehicle="motorbike")
    await check_in(client, gate_headers, lot, plate="30A11111", vehicle="car")
    full = await check_in(client, gate_headers, lot, expect=409, plate="30A11112", vehicle="car")
    assert full["type"].endswith(":lot-full")
    assert await agree(conn, lot) == {(lot, "motorbike"): 2, (lot, "car"): 1, (lot, "large"): 0}
    # check-outs: one paid by nobody (unknown plate: a debt), one refused (never checked in)
    out = await check_out(client, gate_headers, lot, plate="29B111111")
    assert out["debt_vnd"] > 0
    await check_out(client, gate_headers, lot, expect=409, plate="29-B1 999.99")
    assert (await agree(conn, lot))[(lot, "motorbike")] == 1
    assert await free(client, lot) == {"motorbike": 2, "car": 0}

    # on-street: bought, refused when full, run out and closed by the job, closed by the plate's next check-in
    for plate in ("30B22221", "30B22222"):
        started = await client.post("/v1/parking/street-sessions", headers=resident | key(),
                                    json={"lot": zone, "plate": plate, "vehicle": "car", "minutes": 30})
        assert started.status_code == 201, started.text
    refused = await client.post("/v1/parking/street-sessions", headers=resident | key(),
                                json={"lot": zone, "plate": "30B22223", "vehicle": "car", "minutes": 30})
    assert refused.status_code == 409 and refused.json()["type"].endswith(":lot-full")
    assert (await agree(conn, zone))[(zone, "car")] == 2
    ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    run_out = "UPDATE parking_session SET started_at = $2::timestamptz - interval '30 minutes', paid_until = $2 WHERE "
    await conn.execute(run_out + "plate = ANY($1::text[]) AND via = 'app'", ["30B-222.21", "30B-222.22"], ago)
    await service.expire(client.app.state.pool)
    assert (await agree(conn, zone))[(zone, "car")] == 0
    again = await client.post("/v1/parking/street-sessions", headers=resident | key(),
                              json={"lot": zone, "plate": "30B22221", "vehicle": "car", "minutes": 30})
    assert again.status_code == 201, again.text
    await conn.execute(run_out + "id = $1", again.json()["id"], ago)
    await check_out(client, gate_headers, lot, plate="30A11111")  # frees the lot's car space
    await check_in(client, gate_headers, lot, plate="30B22221", vehicle="car")  # closes the run-out session
    assert await agree(conn, lot, zone) == {(lot, "motorbike"): 1, (lot, "car"): 1, (lot, "large"): 0,
                                            (zone, "motorbike"): 0, (zone, "car"): 0, (zone, "large"): 0}


async def test_two_gates_at_the_last_space_let_one_vehicle_in(pool):
    """Two real connections, each its own transaction (committed data in this run's throw-away database): the
    counter's `occupied < capacity` and its + 1 in one statement let exactly one of two simultaneous check-ins in."""
    op = f"op-race-{uuid.uuid4().hex[:8]}"
    lot = f"lot-race-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await payments.ensure_operator(conn, op, "Bãi đua", "parking")
        await conn.execute("INSERT INTO parking_lot (code, name, kind, operator_slug, latitude, longitude, "
                           "capacity_car) VALUES ($1, 'Một chỗ', 'lot', $2, 21.03, 105.85, 1)", lot, op)
    gate_principal = Principal(sub="client:race", kind="client", roles=(f"parking_gate:{op}",), client_id="race")
    both_inside = asyncio.Event()
    arrived = 0

    async def enter(plate: str) -> str:
        nonlocal arrived
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    event = GateEvent(lot=lot, device_time=dt.datetime.now(dt.UTC), plate=plate, vehicle="car")
                    # both transactions have begun before either checks in
                    arrived += 1
                    if arrived == 2:
                        both_inside.set()
                    await both_inside.wait()
                    await service.check_in(conn, gate_principal, event, ParkingSettings())
                return "in"
            except service.LotFull:
                return "full"

    assert sorted(await asyncio.gather(enter("30C-333.31"), enter("30C-333.32"))) == ["full", "in"]
    async with pool.acquire() as conn:
        assert await agree(conn, lot) == {(lot, "motorbike"): 0, (lot, "car"): 1, (lot, "large"): 0}
        assert await conn.fetchval("SELECT count(*) FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id "
                                   "WHERE l.code = $1", lot) == 1
