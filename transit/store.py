"""Transit's SQL (asyncpg, plain parameterised statements)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

# A ticket's longest validity (a monthly pass: a calendar month): two accepted boardings of one ticket are never
# further apart. Validators' clocks run a few seconds off; a day's margin covers them.
TICKET_LONGEST_LIFE = dt.timedelta(days=32)
TAP_CLOCK_MARGIN = dt.timedelta(days=1)

PRODUCT_COLUMNS = """p.id, p.code, p.product_id, p.operator_slug, p.name_vi, p.name_en, p.kind, p.network, p.min_km,
    p.max_km, p.rider_category_id, p.amount_vnd, p.fare_media_id, p.effective_from, p.effective_to"""


async def fare_media(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, name, media_type FROM transit_fare_media ORDER BY id")


async def rider_categories(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM transit_rider_category ORDER BY code")


async def products_on(conn: asyncpg.Connection, day: dt.date, operator: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {PRODUCT_COLUMNS} FROM transit_fare_product p WHERE p.effective_from <= $1 "
        "AND (p.effective_to IS NULL OR p.effective_to > $1) AND ($2::text IS NULL OR p.operator_slug = $2) "
        "ORDER BY p.code, p.rider_category_id", day, operator)


async def product_price(conn: asyncpg.Connection, product_id: str, category: str, day: dt.date):
    return await conn.fetchrow(
        f"SELECT {PRODUCT_COLUMNS} FROM transit_fare_product p WHERE p.product_id = $1 AND p.rider_category_id = $2 "
        "AND p.effective_from <= $3 AND (p.effective_to IS NULL OR p.effective_to > $3)", product_id, category, day)


async def routes(conn: asyncpg.Connection, operator: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM transit_route WHERE $1::text IS NULL OR operator_slug = $1 ORDER BY id",
                            operator)


async def route(conn: asyncpg.Connection, route_id: int):
    return await conn.fetchrow("SELECT * FROM transit_route WHERE id = $1", route_id)


async def operator(conn: asyncpg.Connection, slug: str):
    return await conn.fetchrow("SELECT code, slug, name FROM transit_operator WHERE slug = $1", slug)


async def operators(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT code, slug, name FROM transit_operator ORDER BY code")


# ---- applications -------------------------------------------------------------------------------------------

APPLICATION = ("id, rider_category_id, operator_slug, status, note, valid_until, created_at, decided_at, resident_id, "
               "card_id")


async def insert_application(conn, resident: uuid.UUID, category: str, operator_slug: str, photo: bytes,
                             photo_type: str, card_id: int | None = None):
    return await conn.fetchrow(
        "INSERT INTO transit_application (resident_id, rider_category_id, operator_slug, photo, photo_type, card_id) "
        f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {APPLICATION}", resident, category, operator_slug, photo,
        photo_type, card_id)


async def applications_of(conn, resident: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {APPLICATION} FROM transit_application WHERE resident_id = $1 ORDER BY id DESC",
                            resident)


async def application_queue(conn, operator_slug: str, status: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {APPLICATION} FROM transit_application WHERE operator_slug = $1 AND status = $2 "
                            "ORDER BY id LIMIT $3", operator_slug, status, limit)


async def application(conn, application_id: int, *, lock: bool = False):
    return await conn.fetchrow(f"SELECT {APPLICATION}, photo, photo_type FROM transit_application WHERE id = $1"
                               + (" FOR UPDATE" if lock else ""), application_id)


async def decide(conn, application_id: int, status: str, valid_until: dt.date | None, note: str | None,
                 by: uuid.UUID):
    return await conn.fetchrow(
        "UPDATE transit_application SET status = $2, valid_until = $3, note = $4, decided_by = $5, decided_at = now() "
        f"WHERE id = $1 RETURNING {APPLICATION}", application_id, status, valid_until, note, by)


async def approved_categories(conn, resident: uuid.UUID, day: dt.date,
                              card_id: int | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT rider_category_id, max(valid_until) AS valid_until FROM transit_application "
        "WHERE resident_id = $1 AND card_id IS NOT DISTINCT FROM $3 AND status = 'approved' AND valid_until >= $2 "
        "GROUP BY rider_category_id", resident, day, card_id)


async def insert_card(conn, owner: uuid.UUID, holder_name: str, birth_date: dt.date):
    return await conn.fetchrow("INSERT INTO transit_card (owner_id, holder_name, birth_date) VALUES ($1, $2, $3) "
                               "RETURNING *", owner, holder_name, birth_date)


async def card(conn, card_id: int):
    return await conn.fetchrow("SELECT * FROM transit_card WHERE id = $1", card_id)


async def cards_of(conn, owner: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM transit_card WHERE owner_id = $1 ORDER BY id", owner)


# ---- devices ------------------------------------------------------------------------------------------------


async def insert_device(conn, resident: uuid.UUID, session: uuid.UUID, public_key: bytes):
    return await conn.fetchrow(
        "INSERT INTO transit_device (resident_id, session_id, public_key) VALUES ($1, $2, $3) "
        "ON CONFLICT (public_key) DO NOTHING RETURNING id, resident_id, session_id, created_at, revoked_at",
        resident, session, public_key)


async def device(conn, device_id: int):
    return await conn.fetchrow("SELECT * FROM transit_device WHERE id = $1", device_id)


async def revoke_session_devices(conn, session: uuid.UUID) -> int:
    result = await conn.execute("UPDATE transit_device SET revoked_at = now() WHERE session_id = $1 "
                                "AND revoked_at IS NULL", session)
    return int(result.split()[-1])


async def revoked_devices(conn, since: dt.datetime) -> list[bytes]:
    return [r["public_key"] for r in await conn.fetch(
        "SELECT public_key FROM transit_device WHERE revoked_at IS NOT NULL AND revoked_at > $1 ORDER BY id", since)]


# ---- tickets ------------------------------------------------------------------------------------------------

TICKET = """t.id, t.resident_id, t.operator_slug, t.fare_product_id, t.kind, t.route_id, t.rider_category_id,
    t.amount_vnd, t.charge_id, t.valid_from, t.valid_until, t.paper, t.status, t.idempotency_key, t.card_id,
    p.product_id, p.code AS product_code, o.code AS operator_code, c.code AS category_code"""
TICKET_FROM = """transit_ticket t JOIN transit_fare_product p ON p.id = t.fare_product_id
    JOIN transit_operator o ON o.slug = t.operator_slug JOIN transit_rider_category c ON c.id = t.rider_category_id"""


async def ticket(conn, ticket_id: int, *, lock: bool = False):
    return await conn.fetchrow(f"SELECT {TICKET} FROM {TICKET_FROM} WHERE t.id = $1"
                               + (" FOR UPDATE OF t" if lock else ""), ticket_id)


async def ticket_by_key(conn, key: str):
    return await conn.fetchrow(f"SELECT {TICKET} FROM {TICKET_FROM} WHERE t.idempotency_key = $1", key)


async def tickets_of(conn, resident: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {TICKET} FROM {TICKET_FROM} WHERE t.resident_id = $1 ORDER BY t.id DESC LIMIT 100",
                            resident)


async def overlapping_pass(conn, resident: uuid.UUID, operator_slug: str, kind: str, start: dt.datetime,
                           end: dt.datetime, card_id: int | None = None):
    return await conn.fetchrow(
        "SELECT id, valid_until FROM transit_ticket WHERE resident_id = $1 AND operator_slug = $2 AND kind = $3 "
        "AND card_id IS NOT DISTINCT FROM $6 AND status = 'active' AND valid_from < $5 AND valid_until > $4 "
        "ORDER BY valid_until DESC LIMIT 1", resident, operator_slug, kind, start, end, card_id)


async def latest_pass_end(conn, resident: uuid.UUID, operator_slug: str, kind: str, now: dt.datetime):
    return await conn.fetchval(
        "SELECT max(valid_until) FROM transit_ticket WHERE resident_id = $1 AND operator_slug = $2 AND kind = $3 "
        "AND status = 'active' AND valid_until > $4", resident, operator_slug, kind, now)


async def insert_ticket(conn, **values) -> int:
    return await conn.fetchval(
        "INSERT INTO transit_ticket (resident_id, operator_slug, fare_product_id, kind, route_id, rider_category_id, "
        "amount_vnd, charge_id, valid_from, valid_until, paper, idempotency_key, card_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        values["resident_id"], values["operator_slug"], values["fare_product_id"], values["kind"], values["route_id"],
        values["rider_category_id"], values["amount_vnd"], values["charge_id"], values["valid_from"],
        values["valid_until"], values["paper"], values["idempotency_key"], values.get("card_id"))


async def set_status(conn, ticket_id: int, status: str) -> None:
    await conn.execute("UPDATE transit_ticket SET status = $2, status_at = now() WHERE id = $1", ticket_id, status)


async def use_single(conn, ticket_id: int) -> bool:
    """A single ride is used once: only the first use finds it active."""
    return await conn.fetchval("UPDATE transit_ticket SET status = 'used', status_at = now() WHERE id = $1 "
                               "AND status = 'active' RETURNING true", ticket_id) is not None


async def was_tapped(conn, ticket_id: int, valid_from: dt.datetime, valid_until: dt.datetime) -> bool:
    """Whether a validator or gate accepted the ticket. It accepts a ticket only while it is valid (by its own
    clock, a few seconds off at most), so only the months of the ticket's validity, a day either side, are read."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM transit_tap WHERE ticket_id = $1 AND accepted AND at >= $2 AND at < $3)",
        ticket_id, valid_from - TAP_CLOCK_MARGIN, valid_until + TAP_CLOCK_MARGIN))


async def denied_tickets(conn, operator_slug: str, now: dt.datetime) -> list[int]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM transit_ticket WHERE operator_slug = $1 AND status IN ('revoked', 'refunded') "
        "AND valid_until > $2 ORDER BY id", operator_slug, now)]


async def gate_state(conn, ticket_id: int, device_key: bytes | None):
    """What a gate caches per process: the ticket's status and kind, the device key's session and whether it
    was ended (None when unknown)."""
    return await conn.fetchrow(
        "SELECT (SELECT status FROM transit_ticket WHERE id = $1) AS status, "
        "(SELECT kind FROM transit_ticket WHERE id = $1) AS kind, d.session_id, d.revoked_at IS NULL AS device_live "
        "FROM (SELECT 1) one LEFT JOIN transit_device d ON d.public_key = $2", ticket_id, device_key)


async def insert_boardings(conn, rows: list[tuple]) -> list[uuid.UUID]:
    """Online boardings drained from Redis: (tap_id, validator, operator, ticket, route, vehicle, at, fingerprint,
    single). A tap id is written once, so a drain repeated after a crash counts nothing twice; a single ride
    is used up with it."""
    stored = await conn.fetch(
        "INSERT INTO transit_tap (tap_id, validator, operator_slug, ticket_id, route_id, vehicle, direction, at, "
        "accepted, fingerprint) "
        "SELECT u.tap_id, u.validator, u.operator_slug, u.ticket_id, u.route_id, u.vehicle, 'on', u.at, true, "
        "u.fingerprint FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::text[], "
        "$7::timestamptz[], $8::bytea[]) AS u(tap_id, validator, operator_slug, ticket_id, route_id, vehicle, at, "
        "fingerprint) ON CONFLICT (tap_id, at) DO NOTHING RETURNING tap_id",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
        [r[5] for r in rows], [r[6] for r in rows], [r[7] for r in rows])
    singles = sorted({r[3] for r in rows if r[8]})
    if singles:
        await conn.execute("UPDATE transit_ticket SET status = 'used', status_at = now() WHERE id = ANY($1::bigint[]) "
                           "AND status = 'active'", singles)
    return [r["tap_id"] for r in stored]


async def due_reminders(conn, until: dt.datetime, now: dt.datetime, limit: int) -> list[asyncpg.Record]:
    """Monthly passes ending soon, not yet reminded, with no later pass bought already."""
    return await conn.fetch(
        f"SELECT {TICKET}, p.name_vi, p.name_en FROM {TICKET_FROM} WHERE t.kind = 'monthly' AND NOT t.reminded "
        "AND t.status = 'active' AND t.resident_id IS NOT NULL AND t.valid_until > $2 AND t.valid_until <= $1 "
        "AND NOT EXISTS (SELECT 1 FROM transit_ticket n WHERE n.resident_id = t.resident_id "
        "  AND n.operator_slug = t.operator_slug AND n.kind = 'monthly' AND n.status = 'active' "
        "  AND n.card_id IS NOT DISTINCT FROM t.card_id "
        "  AND n.valid_until > t.valid_until) "
        "ORDER BY t.valid_until LIMIT $3 FOR UPDATE OF t SKIP LOCKED", until, now, limit)


async def mark_reminded(conn, ticket_id: int) -> None:
    await conn.execute("UPDATE transit_ticket SET reminded = true WHERE id = $1", ticket_id)


# ---- issuer keys --------------------------------------------------------------------------------------------


async def live_keys(conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, public_key, private_sealed, retired_at, verify_until FROM transit_issuer_key "
                            "WHERE verify_until IS NULL OR verify_until > now() ORDER BY id")


async def lock_keys(conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('transit_issuer_key'))")


async def retire_signing_keys(conn, overlap: dt.timedelta) -> list[int]:
    return [r["id"] for r in await conn.fetch(
        "UPDATE transit_issuer_key SET retired_at = now(), verify_until = now() + $1 WHERE retired_at IS NULL "
        "RETURNING id", overlap)]


async def insert_key(conn, public_key: bytes, sealed: bytes) -> int:
    return await conn.fetchval(
        "INSERT INTO transit_issuer_key (id, public_key, private_sealed) "
        "VALUES ((SELECT coalesce(max(id), 0) % 65535 + 1 FROM transit_issuer_key), $1, $2) RETURNING id",
        public_key, sealed)


# ---- taps, flags, reports -----------------------------------------------------------------------------------


async def insert_taps(conn, validator: str, operator_slug: str, taps: list) -> list[asyncpg.Record]:
    """The taps not stored before, as (tap_id, at): a tap is its id at its time, and a batch sent again counts
    once (ON CONFLICT on the primary key, which holds the partition key)."""
    return await conn.fetch(
        "INSERT INTO transit_tap (tap_id, validator, operator_slug, ticket_id, route_id, vehicle, direction, at, "
        "accepted, reason, fingerprint) "
        "SELECT u.tap_id, $1, $2, u.ticket_id, u.route_id, u.vehicle, u.direction, u.at, u.accepted, u.reason, "
        "u.fingerprint FROM unnest($3::uuid[], $4::bigint[], $5::int[], $6::text[], $7::text[], $8::timestamptz[], "
        "$9::bool[], $10::text[], $11::bytea[]) AS u(tap_id, ticket_id, route_id, vehicle, direction, at, accepted, "
        "reason, fingerprint) ON CONFLICT (tap_id, at) DO NOTHING RETURNING tap_id, at",
        validator, operator_slug, [t.tap_id for t in taps], [t.ticket_id for t in taps], [t.route_id for t in taps],
        [t.vehicle for t in taps], [t.direction for t in taps], [t.at for t in taps], [t.accepted for t in taps],
        [t.reason for t in taps], [bytes.fromhex(t.fingerprint) for t in taps])


async def flag_new_taps(conn, new_taps: list[asyncpg.Record], impossible: dt.timedelta) -> int:
    """Pairs of accepted boardings involving a new tap (tap_id, at): the same bytes twice (a screenshot, a reused
    paper ticket), or the same ticket on two vehicles closer in time than a rider could change between them.

    Two accepted boardings of one ticket both lie within its validity, so at most TICKET_LONGEST_LIFE apart: the
    earlier boardings are read from the months around the new ones only, never the whole history."""
    ats = [t["at"] for t in new_taps]
    first, last = min(ats), max(ats)
    span = TICKET_LONGEST_LIFE + TAP_CLOCK_MARGIN
    result = await conn.execute(
        "INSERT INTO transit_flag (operator_slug, ticket_id, reason, first_tap, second_tap) "
        "SELECT n.operator_slug, n.ticket_id, CASE WHEN n.fingerprint = o.fingerprint THEN 'replayed-code' "
        "  ELSE 'impossible-journey' END, "
        "  CASE WHEN (o.at, o.tap_id) < (n.at, n.tap_id) THEN o.tap_id ELSE n.tap_id END, "
        "  CASE WHEN (o.at, o.tap_id) < (n.at, n.tap_id) THEN n.tap_id ELSE o.tap_id END "
        "FROM unnest($1::uuid[], $2::timestamptz[]) AS new(tap_id, at) "
        "JOIN transit_tap n ON n.tap_id = new.tap_id AND n.at = new.at AND n.at >= $4 AND n.at <= $5 "
        "JOIN transit_tap o ON o.ticket_id = n.ticket_id AND o.tap_id <> n.tap_id "
        "  AND o.accepted AND o.direction = 'on' AND o.at >= $4::timestamptz - $6::interval "
        "  AND o.at <= $5::timestamptz + $6::interval "
        "WHERE n.accepted AND n.direction = 'on' "
        "  AND (n.fingerprint = o.fingerprint OR (n.vehicle <> o.vehicle AND abs(extract(epoch FROM n.at - o.at)) "
        "       < extract(epoch FROM $3::interval))) "
        "ON CONFLICT DO NOTHING", [t["tap_id"] for t in new_taps], ats, impossible, first, last, span)
    return int(result.split()[-1])


async def flags(conn, operator_slug: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM transit_flag WHERE operator_slug = $1 ORDER BY id DESC LIMIT $2",
                            operator_slug, limit)


async def rides(conn, operator_slug: str, start: dt.datetime, end: dt.datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT tap.route_id, p.product_id, count(*) AS rides FROM transit_tap tap "
        "JOIN transit_ticket t ON t.id = tap.ticket_id JOIN transit_fare_product p ON p.id = t.fare_product_id "
        "WHERE tap.operator_slug = $1 AND t.operator_slug = $1 AND tap.accepted AND tap.direction = 'on' "
        "AND tap.at >= $2 AND tap.at < $3 GROUP BY 1, 2 ORDER BY 1, 2", operator_slug, start, end)


async def revenue(conn, operator_slug: str, start: dt.datetime, end: dt.datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT p.product_id, count(*) AS tickets, sum(t.amount_vnd) AS revenue FROM transit_ticket t "
        "JOIN transit_fare_product p ON p.id = t.fare_product_id WHERE t.operator_slug = $1 "
        "AND t.status <> 'refunded' AND t.created_at >= $2 AND t.created_at < $3 GROUP BY 1 ORDER BY 1",
        operator_slug, start, end)


async def flag_count(conn, operator_slug: str, start: dt.datetime, end: dt.datetime) -> int:
    return await conn.fetchval("SELECT count(*) FROM transit_flag WHERE operator_slug = $1 AND created_at >= $2 "
                               "AND created_at < $3", operator_slug, start, end)
