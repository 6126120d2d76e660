"""Parking's SQL (asyncpg, plain parameterised statements)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

Rows = list[asyncpg.Record]
Row = asyncpg.Record | None

_LOT = """SELECT l.id, l.code, l.name, l.kind, l.operator_slug, l.address, l.latitude, l.longitude, l.opens_at,
                 l.closes_at, l.capacity_motorbike, l.capacity_car, l.capacity_large FROM parking_lot l"""

# the tariff in force at $at for lot l and vehicle $v: the lot's own before the city's default
TARIFF_IN_FORCE = """SELECT t.* FROM parking_tariff t
                      WHERE (t.lot_id = {lot} OR t.lot_id IS NULL) AND t.vehicle = {vehicle}
                        AND t.effective_from <= {at}
                      ORDER BY t.lot_id NULLS LAST, t.effective_from DESC LIMIT 1"""


async def insert_lot(conn: asyncpg.Connection, **v) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """INSERT INTO parking_lot (code, name, kind, operator_slug, address, latitude, longitude, capacity_motorbike,
                                    capacity_car, capacity_large, opens_at, closes_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (code) DO NOTHING RETURNING id""",
        v["code"], v["name"], v["kind"], v["operator"], v["address"], v["latitude"], v["longitude"],
        v["capacity_motorbike"], v["capacity_car"], v["capacity_large"], v["opens_at"], v["closes_at"])


async def lot(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOT + " WHERE l.code = $1", code)


async def occupied(conn: asyncpg.Connection, lot_id: int) -> dict[str, int]:
    """Occupied spaces by vehicle type, from the counter (migration 002)."""
    rows = await conn.fetch("SELECT vehicle, occupied FROM parking_occupancy WHERE lot_id = $1", lot_id)
    return {r["vehicle"]: r["occupied"] for r in rows}


async def count_in(conn: asyncpg.Connection, lot_id: int, vehicle: str, capacity: int) -> int | None:
    """Take a space: the counter + 1 if it is below `capacity` (> 0), in one statement; None when the lot is full.
    The row lock is held to the end of the caller's transaction, so call it last (after the session's INSERT)."""
    return await conn.fetchval(
        """INSERT INTO parking_occupancy AS o (lot_id, vehicle, occupied) VALUES ($1, $2, 1)
           ON CONFLICT (lot_id, vehicle) DO UPDATE SET occupied = o.occupied + 1 WHERE o.occupied < $3
           RETURNING occupied""", lot_id, vehicle, capacity)


async def count_out(conn: asyncpg.Connection, lot_id: int, vehicle: str) -> None:
    await conn.execute("UPDATE parking_occupancy SET occupied = occupied - 1 WHERE lot_id = $1 AND vehicle = $2",
                       lot_id, vehicle)


async def tariff_in_force(conn: asyncpg.Connection, lot_id: int, vehicle: str, at: dt.datetime) -> Row:
    return await conn.fetchrow(TARIFF_IN_FORCE.format(lot="$1", vehicle="$2", at="$3"), lot_id, vehicle, at)


async def tariff(conn: asyncpg.Connection, tariff_id: int) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM parking_tariff WHERE id = $1", tariff_id)


async def insert_tariff(conn: asyncpg.Connection, lot_id: int | None, body) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """INSERT INTO parking_tariff (lot_id, vehicle, effective_from, mode, day_vnd, night_vnd, day_night_vnd,
                                       hour_rates, month_vnd, day_starts, day_ends)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING RETURNING *""",
        lot_id, body.vehicle, body.effective_from, body.mode, body.day_vnd, body.night_vnd, body.day_night_vnd,
        body.hour_rates_vnd, body.month_vnd, body.day_starts, body.day_ends)


async def tariffs(conn: asyncpg.Connection, lot_id: int | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT t.*, l.code AS lot_code FROM parking_tariff t LEFT JOIN parking_lot l ON l.id = t.lot_id
            WHERE ($1::bigint IS NULL AND t.lot_id IS NULL) OR t.lot_id = $1
            ORDER BY t.vehicle, t.effective_from""", lot_id)


async def prices_in_force(conn: asyncpg.Connection, lot_id: int, at: dt.datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT t.* FROM unnest(ARRAY['motorbike', 'car', 'large']) AS v(vehicle)
              CROSS JOIN LATERAL ({TARIFF_IN_FORCE.format(lot='$1', vehicle='v.vehicle', at='$2')}) t""", lot_id, at)


# Lots within the radius, nearest first (GiST), each with its occupied spaces (the counter) and tariff for $4.
NEAR = f"""
    SELECT l.code, l.name, l.kind, l.operator_slug, l.address, l.latitude, l.longitude, l.opens_at,
           l.closes_at, l.capacity_motorbike, l.capacity_car, l.capacity_large,
           (l.location <-> parking_metres($1, $2)) AS distance,
           coalesce(o.occupied, 0) AS occupied,
           t.id AS tariff_id, t.mode, t.day_vnd, t.night_vnd, t.day_night_vnd, t.hour_rates, t.month_vnd,
           t.day_starts, t.day_ends, t.effective_from, t.vehicle
      FROM parking_lot l
      LEFT JOIN parking_occupancy o ON o.lot_id = l.id AND o.vehicle = $4
      LEFT JOIN LATERAL ({TARIFF_IN_FORCE.format(lot='l.id', vehicle='$4', at='$5')}) t ON true
     WHERE l.location <@ circle(parking_metres($1, $2), $3)
     ORDER BY l.location <-> parking_metres($1, $2) LIMIT $6"""


async def near(conn: asyncpg.Connection, lat: float, lng: float, radius_m: float, vehicle: str, at: dt.datetime,
               limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(NEAR, lat, lng, radius_m, vehicle, at, limit)


async def vehicle_by_tag(conn: asyncpg.Connection, tag: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM parking_vehicle WHERE rfid_tag = $1", tag)


async def owner_of(conn: asyncpg.Connection, plate: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM parking_vehicle WHERE plate = $1 ORDER BY created_at, resident_id LIMIT 1", plate)


async def use_pass_code(conn: asyncpg.Connection, code: str, now: dt.datetime) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """UPDATE parking_pass_code SET used_at = $2 WHERE code = $1 AND used_at IS NULL AND expires_at > $2
           RETURNING resident_id, plate""", code, now)


async def close_expired_street(conn: asyncpg.Connection, plate: str | None, now: dt.datetime) -> None:
    """On-street sessions past their paid time end then (by the plate's next check-in, or by the job); their
    spaces are given back to the counter in the same statement."""
    await conn.execute(
        """WITH closed AS (
             UPDATE parking_session SET ended_at = paid_until
              WHERE via = 'app' AND ended_at IS NULL AND paid_until <= $2 AND ($1::text IS NULL OR plate = $1)
             RETURNING lot_id, vehicle),
           freed AS (SELECT lot_id, vehicle, count(*) AS n FROM closed GROUP BY lot_id, vehicle)
           UPDATE parking_occupancy o SET occupied = o.occupied - freed.n FROM freed
            WHERE o.lot_id = freed.lot_id AND o.vehicle = freed.vehicle""", plate, now)


async def insert_session(conn: asyncpg.Connection, **v) -> asyncpg.Record | None:
    """None when the vehicle already has an open session (the partial unique index decides, race-free)."""
    return await conn.fetchrow(
        """INSERT INTO parking_session (lot_id, plate, vehicle, via, resident_id, tariff_id, started_at, paid_until,
                                        fee_vnd, device_in, photo_in)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (plate) WHERE ended_at IS NULL DO NOTHING RETURNING *""",
        v["lot_id"], v["plate"], v["vehicle"], v["via"], v["resident_id"], v["tariff_id"], v["started_at"],
        v.get("paid_until"), v.get("fee_vnd"), v.get("device"), v.get("photo"))


async def open_session(conn: asyncpg.Connection, plate: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT s.*, l.code AS lot_code FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id "
        "WHERE s.plate = $1 AND s.ended_at IS NULL" + (" FOR UPDATE OF s" if lock else ""), plate)


async def session(conn: asyncpg.Connection, session_id: int, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT s.*, l.code AS lot_code, l.operator_slug FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id "
        "WHERE s.id = $1" + (" FOR UPDATE OF s" if lock else ""), session_id)


async def end_session(conn: asyncpg.Connection, session_id: int, ended_at: dt.datetime, fee: int, device: str | None,
                      overstay: bool) -> asyncpg.Record | None:
    """Close an open session (this UPDATE is its lock); None when another check-out closed it first."""
    return await conn.fetchrow(
        """UPDATE parking_session SET ended_at = $2, fee_vnd = $3, device_out = $4, overstay = $5
            WHERE id = $1 AND ended_at IS NULL RETURNING *""", session_id, ended_at, fee, device, overstay)


async def record_charge(conn: asyncpg.Connection, session_id: int, transaction_id: int, amount: int) -> None:
    """Link a ledger charge to its session and add it to what the session was charged (once per transaction)."""
    await conn.execute(
        """WITH charged AS (INSERT INTO parking_charge (session_id, transaction_id, amount_vnd) VALUES ($1, $2, $3)
                            ON CONFLICT (transaction_id) DO NOTHING RETURNING amount_vnd)
           UPDATE parking_session s SET charged_vnd = s.charged_vnd + charged.amount_vnd FROM charged
            WHERE s.id = $1""", session_id, transaction_id, amount)


async def finish_check_out(conn: asyncpg.Connection, session_id: int, lot_id: int, vehicle: str,
                           transaction_id: int | None, amount: int) -> None:
    """The check-out's last statement: the charge linked (if any) and the space given back to the counter.
    Last, so the lot's counter row is locked only until the commit that follows."""
    await conn.execute(
        """WITH charged AS (INSERT INTO parking_charge (session_id, transaction_id, amount_vnd)
                            SELECT $1, $4, $5 WHERE $4::bigint IS NOT NULL
                            ON CONFLICT (transaction_id) DO NOTHING RETURNING amount_vnd),
                linked AS (UPDATE parking_session s SET charged_vnd = s.charged_vnd + charged.amount_vnd FROM charged
                            WHERE s.id = $1 RETURNING s.id)
           UPDATE parking_occupancy SET occupied = occupied - 1 WHERE lot_id = $2 AND vehicle = $3""",
        session_id, lot_id, vehicle, transaction_id, amount)


async def check_in_context(conn: asyncpg.Connection, code: str, plate: str, vehicle: str | None,
                           at: dt.datetime) -> asyncpg.Record | None:
    """One round trip for a check-in: the lot, the plate's saved owner and vehicle type, and the tariff in force
    for the vehicle (the one given, else the saved one). None when there is no such lot."""
    return await conn.fetchrow(
        f"""WITH o AS (SELECT resident_id, vehicle FROM parking_vehicle WHERE plate = $2
                        ORDER BY created_at, resident_id LIMIT 1)
            SELECT l.id, l.code, l.name, l.kind, l.operator_slug, l.opens_at, l.closes_at, l.capacity_motorbike,
                   l.capacity_car, l.capacity_large, o.resident_id AS owner_id, o.vehicle AS owner_vehicle,
                   t.id AS tariff_id
              FROM parking_lot l LEFT JOIN o ON true
              LEFT JOIN LATERAL ({TARIFF_IN_FORCE.format(lot='l.id', vehicle='coalesce($3, o.vehicle)', at='$4')}) t
                     ON true
             WHERE l.code = $1""", code, plate, vehicle, at)


async def check_out_context(conn: asyncpg.Connection, code: str, plate: str, month: dt.date) -> asyncpg.Record | None:
    """One round trip for a check-out: the lot, the plate's open session (not locked: end_session's UPDATE is
    the lock), the session's tariff, and whether the plate holds this month's permit here."""
    return await conn.fetchrow(
        """SELECT l.id, l.code, l.name, l.kind, l.operator_slug,
                  s.id AS session_id, s.lot_id AS session_lot_id, s.via, s.vehicle, s.resident_id, s.started_at,
                  t.mode, t.day_vnd, t.night_vnd, t.day_night_vnd, t.hour_rates, t.day_starts, t.day_ends,
                  EXISTS (SELECT 1 FROM parking_permit p WHERE p.lot_id = l.id AND p.plate = $2 AND p.month = $3)
                    AS permit
             FROM parking_lot l
             LEFT JOIN parking_session s ON s.plate = $2 AND s.ended_at IS NULL
             LEFT JOIN parking_tariff t ON t.id = s.tariff_id
            WHERE l.code = $1""", code, plate, month)


async def insert_photo(conn: asyncpg.Connection, session_id: int, side: str, photo) -> None:
    await conn.execute(
        """INSERT INTO parking_photo (session_id, side, content_type, content, thumbnail, sha256)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        session_id, side, photo.content_type, photo.data, photo.thumbnail, photo.sha256)


async def photo(conn: asyncpg.Connection, session_id: int, side: str) -> asyncpg.Record | None:
    """A session's evidence photo with what authorises it (the lot's operator); `legacy` is a photo stored as
    uploaded before migration 002 (cleaned when read)."""
    return await conn.fetchrow(
        """SELECT l.operator_slug, p.content_type, p.content, p.thumbnail, p.sha256,
                  CASE WHEN $2 = 'in' THEN s.photo_in ELSE s.photo_out END AS legacy
             FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id
             LEFT JOIN parking_photo p ON p.session_id = s.id AND p.side = $2
            WHERE s.id = $1""", session_id, side)


async def insert_debt(conn: asyncpg.Connection, session_id: int, resident_id: uuid.UUID | None, plate: str,
                      amount: int) -> int:
    return await conn.fetchval(
        "INSERT INTO parking_debt (session_id, resident_id, plate, amount_vnd) VALUES ($1, $2, $3, $4) RETURNING id",
        session_id, resident_id, plate, amount)


async def debts_of_plate(conn: asyncpg.Connection, plate: str) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(amount_vnd), 0)::bigint FROM parking_debt WHERE plate = $1 AND settled_at IS NULL", plate)


async def debts_due(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT d.id FROM parking_debt d WHERE d.settled_at IS NULL AND d.resident_id IS NOT NULL
            ORDER BY d.attempts, d.id LIMIT $1""", limit)


async def debt(conn: asyncpg.Connection, debt_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT d.*, l.code AS lot_code, l.operator_slug FROM parking_debt d
             JOIN parking_session s ON s.id = d.session_id JOIN parking_lot l ON l.id = s.lot_id
            WHERE d.id = $1 AND d.settled_at IS NULL FOR UPDATE OF d SKIP LOCKED""", debt_id)


async def settle_debt(conn: asyncpg.Connection, debt_id: int, transaction_id: int) -> None:
    await conn.execute("UPDATE parking_debt SET settled_at = now(), transaction_id = $2 WHERE id = $1",
                       debt_id, transaction_id)


async def debt_attempted(conn: asyncpg.Connection, debt_id: int) -> None:
    await conn.execute("UPDATE parking_debt SET attempts = attempts + 1 WHERE id = $1", debt_id)


async def extend(conn: asyncpg.Connection, session_id: int, paid_until: dt.datetime, fee: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE parking_session SET paid_until = $2, fee_vnd = $3, reminded_at = NULL WHERE id = $1 RETURNING *",
        session_id, paid_until, fee)


async def due_reminders(conn: asyncpg.Connection, now: dt.datetime, lead: dt.timedelta, limit: int) -> Rows:
    return await conn.fetch(
        """UPDATE parking_session s SET reminded_at = $1 FROM parking_lot l
            WHERE l.id = s.lot_id AND s.id IN (
                  SELECT id FROM parking_session WHERE via = 'app' AND ended_at IS NULL AND reminded_at IS NULL
                     AND paid_until > $1 AND paid_until <= $1 + $2 LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING s.id, s.resident_id, s.plate, s.paid_until, l.name AS lot_name""", now, lead, limit)


async def vehicles(conn: asyncpg.Connection, resident: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM parking_vehicle WHERE resident_id = $1 ORDER BY created_at", resident)


async def save_vehicle(conn: asyncpg.Connection, resident: uuid.UUID, plate: str, vehicle: str,
                       tag: str | None) -> asyncpg.Record:
    return await conn.fetchrow(
        """INSERT INTO parking_vehicle (resident_id, plate, vehicle, rfid_tag) VALUES ($1, $2, $3, $4)
           ON CONFLICT (resident_id, plate) DO UPDATE SET vehicle = EXCLUDED.vehicle, rfid_tag = EXCLUDED.rfid_tag
           RETURNING *""", resident, plate, vehicle, tag)


async def insert_pass_code(conn: asyncpg.Connection, code: str, resident: uuid.UUID, plate: str,
                           expires_at: dt.datetime) -> None:
    await conn.execute("INSERT INTO parking_pass_code (code, resident_id, plate, expires_at) VALUES ($1, $2, $3, $4)",
                       code, resident, plate, expires_at)


async def insert_permit(conn: asyncpg.Connection, **v) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """INSERT INTO parking_permit (lot_id, plate, vehicle, resident_id, month, amount_vnd, transaction_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING *""",
        v["lot_id"], v["plate"], v["vehicle"], v["resident_id"], v["month"], v["amount"], v["transaction_id"])


async def permit_exists(conn: asyncpg.Connection, lot_id: int, plate: str, month: dt.date) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM parking_permit WHERE lot_id = $1 AND plate = $2 AND month = $3)",
        lot_id, plate, month)


async def permit_for(conn: asyncpg.Connection, plate: str, month: dt.date) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT p.*, l.code AS lot_code FROM parking_permit p JOIN parking_lot l ON l.id = p.lot_id
            WHERE p.plate = $1 AND p.month = $2 ORDER BY p.id LIMIT 1""", plate, month)


async def reconciliation_rows(conn: asyncpg.Connection, operator: str, start: dt.datetime,
                              end: dt.datetime) -> list[asyncpg.Record]:
    """Per lot and local day the fee was set (check-out; purchase for on-street sessions)."""
    return await conn.fetch(
        """WITH s AS (
             SELECT s.*, l.code AS lot_code,
                    (CASE WHEN s.via = 'app' THEN s.started_at ELSE s.ended_at END) AS priced_at
               FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id
              WHERE l.operator_slug = $1 AND s.fee_vnd IS NOT NULL)
           SELECT s.lot_code, (s.priced_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day, count(*) AS sessions,
                  coalesce(sum(s.fee_vnd), 0)::bigint AS fees, coalesce(sum(s.charged_vnd), 0)::bigint AS charged,
                  coalesce(sum(d.amount_vnd) FILTER (WHERE d.settled_at IS NULL), 0)::bigint AS debts_open
             FROM s LEFT JOIN parking_debt d ON d.session_id = s.id
            WHERE s.priced_at >= $2 AND s.priced_at < $3
            GROUP BY 1, 2 ORDER BY 2, 1""", operator, start, end)


async def unaccounted(conn: asyncpg.Connection, operator: str, start: dt.datetime, end: dt.datetime) -> Rows:
    """Sessions whose fee is not covered by what was charged plus what is recorded as still owed."""
    return await conn.fetch(
        """SELECT s.id, l.code AS lot_code, s.fee_vnd, s.charged_vnd,
                  coalesce((SELECT d.amount_vnd FROM parking_debt d
                             WHERE d.session_id = s.id AND d.settled_at IS NULL), 0) AS owed,
                  (SELECT coalesce(sum(c.amount_vnd), 0) FROM parking_charge c WHERE c.session_id = s.id) AS charges,
                  ((CASE WHEN s.via = 'app' THEN s.started_at ELSE s.ended_at END)
                    AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day
             FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id
            WHERE l.operator_slug = $1 AND s.fee_vnd IS NOT NULL
              AND (CASE WHEN s.via = 'app' THEN s.started_at ELSE s.ended_at END) >= $2
              AND (CASE WHEN s.via = 'app' THEN s.started_at ELSE s.ended_at END) < $3
              AND (s.fee_vnd <> s.charged_vnd + coalesce((SELECT d.amount_vnd FROM parking_debt d
                                                            WHERE d.session_id = s.id AND d.settled_at IS NULL), 0)
                   OR s.charged_vnd <> (SELECT coalesce(sum(c.amount_vnd), 0) FROM parking_charge c
                                         WHERE c.session_id = s.id))
            ORDER BY s.id""", operator, start, end)


async def charges_by_day(conn: asyncpg.Connection, operator: str, start: dt.datetime, end: dt.datetime) -> Rows:
    """What parking recorded as charged, per lot and local day of the charge (to compare with the ledger)."""
    return await conn.fetch(
        """SELECT l.code AS lot_code, (c.created_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day,
                  sum(c.amount_vnd)::bigint AS charged
             FROM parking_charge c JOIN parking_session s ON s.id = c.session_id JOIN parking_lot l ON l.id = s.lot_id
            WHERE l.operator_slug = $1 AND c.created_at >= $2 AND c.created_at < $3
            GROUP BY 1, 2""", operator, start, end)


async def permits_by_day(conn: asyncpg.Connection, operator: str, start: dt.datetime, end: dt.datetime) -> Rows:
    """Monthly permits sold, per lot and local day of the sale."""
    return await conn.fetch(
        """SELECT l.code AS lot_code, (p.created_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day,
                  sum(p.amount_vnd)::bigint AS charged
             FROM parking_permit p JOIN parking_lot l ON l.id = p.lot_id
            WHERE l.operator_slug = $1 AND p.created_at >= $2 AND p.created_at < $3
            GROUP BY 1, 2""", operator, start, end)


async def figures(conn: asyncpg.Connection, lot_id: int, since: dt.datetime) -> asyncpg.Record:
    return await conn.fetchrow(
        """SELECT (SELECT count(*) FROM parking_session WHERE lot_id = $1 AND started_at >= $2) AS sessions,
                  (SELECT coalesce(sum(fee_vnd), 0) FROM parking_session WHERE lot_id = $1 AND started_at >= $2)::bigint
                    AS fees,
                  (SELECT coalesce(sum(c.amount_vnd), 0) FROM parking_charge c
                     JOIN parking_session s ON s.id = c.session_id
                    WHERE s.lot_id = $1 AND c.created_at >= $2)::bigint AS collected,
                  (SELECT count(*) FROM parking_debt d JOIN parking_session s ON s.id = d.session_id
                    WHERE s.lot_id = $1 AND d.settled_at IS NULL) AS open_debts,
                  (SELECT coalesce(sum(d.amount_vnd), 0) FROM parking_debt d
                     JOIN parking_session s ON s.id = d.session_id
                    WHERE s.lot_id = $1 AND d.settled_at IS NULL)::bigint AS open_debts_vnd""", lot_id, since)


async def open_debts_of(conn: asyncpg.Connection, resident_id: uuid.UUID) -> Rows:
    """A resident's open debts, oldest first, locked; one the settling job holds is skipped (it settles it)."""
    return await conn.fetch(
        """SELECT d.*, l.code AS lot_code, l.operator_slug FROM parking_debt d
             JOIN parking_session s ON s.id = d.session_id JOIN parking_lot l ON l.id = s.lot_id
            WHERE d.resident_id = $1 AND d.settled_at IS NULL
            ORDER BY d.id FOR UPDATE OF d SKIP LOCKED""", resident_id)


async def lock_lot(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOT + " WHERE l.code = $1 FOR UPDATE", code)


async def update_lot(conn: asyncpg.Connection, lot_id: int, values: dict) -> None:
    columns = sorted(values)  # names come from LotEdit's fields, never from the request's keys
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, start=2))
    await conn.execute(f"UPDATE parking_lot SET {sets} WHERE id = $1", lot_id, *(values[c] for c in columns))


async def copy_tariff(conn: asyncpg.Connection, source_id: int, lot_id: int,
                      effective_from: dt.datetime) -> asyncpg.Record | None:
    """A new row for the lot with the rates of tariff `source_id`, from `effective_from` on; None if the lot has a
    tariff for that vehicle starting at that very moment."""
    return await conn.fetchrow(
        """INSERT INTO parking_tariff (lot_id, vehicle, effective_from, mode, day_vnd, night_vnd, day_night_vnd,
                                       hour_rates, month_vnd, day_starts, day_ends)
           SELECT $2, vehicle, $3, mode, day_vnd, night_vnd, day_night_vnd, hour_rates, month_vnd, day_starts, day_ends
             FROM parking_tariff WHERE id = $1
           ON CONFLICT DO NOTHING RETURNING *""", source_id, lot_id, effective_from)


async def insert_lot_change(conn: asyncpg.Connection, lot_id: int, changed_by: str, changes: dict) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO parking_lot_change (lot_id, changed_by, changes) VALUES ($1, $2, $3) RETURNING *",
        lot_id, changed_by, changes)


async def lot_changes(conn: asyncpg.Connection, lot_id: int, limit: int) -> Rows:
    return await conn.fetch(
        "SELECT * FROM parking_lot_change WHERE lot_id = $1 ORDER BY id DESC LIMIT $2", lot_id, limit)


async def overstays(conn: asyncpg.Connection, operator: str, longer_than: dt.timedelta, since: dt.datetime,
                    now: dt.datetime, limit: int) -> Rows:
    """Gate sessions of the operator's lots over the maximum: vehicles still inside, then those flagged at check-out
    since `since`, longest first."""
    return await conn.fetch(
        """SELECT s.*, l.code AS lot_code FROM parking_session s JOIN parking_lot l ON l.id = s.lot_id
            WHERE l.operator_slug = $1 AND s.via <> 'app'
              AND ((s.ended_at IS NULL AND s.started_at < $4::timestamptz - $2::interval)
                   OR (s.overstay AND s.ended_at >= $3))
            ORDER BY s.ended_at IS NOT NULL, coalesce(s.ended_at, $4) - s.started_at DESC, s.id LIMIT $5""",
        operator, longer_than, since, now, limit)
