"""Every notifications query, plain SQL through asyncpg."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

OUTBOX_CHANNEL = "ihanoi_notifications"
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "skipped")
# One answer to record: (notification_id, device_id, status, message_id, error_code, retry_in_seconds).
DeliveryUpdate: TypeAlias = tuple[int, uuid.UUID, str, str | None, str | None, float]
# notification_delivery is partitioned by month on created_at, its notification's time (migration 004). The worker
# claims from the deliveries of the last DELIVERY_WINDOW_DAYS only, so its statements read the latest month or two,
# never the whole history; a push still undelivered after it is no longer worth sending: expire_deliveries fails it.
DELIVERY_WINDOW_DAYS = 7


def _recent(column: str, days: int = DELIVERY_WINDOW_DAYS) -> str:
    """A bounded range of the partition key the planner prunes by: created_at is the database's now() of the
    notification's transaction, never ahead of this statement's (a day's margin all the same)."""
    return f"{column} >= now() - interval '{days} days' AND {column} < now() + interval '1 day'"


def _count_changes(changes: str) -> str:
    """SQL adding delivery status changes to `broadcast_delivery_count` (migration 003), for use as a CTE.

    `changes` is a relation of (broadcast_id, was, became), one row per delivery the same statement inserted (`was`
    NULL) or changed; rows of other notifications (broadcast_id NULL) and unchanged statuses are left out. Runs in
    the statement that changes the deliveries, so the counts commit (or roll back) with them.
    """
    deltas = ", ".join(f"count(*) FILTER (WHERE became = '{s}') - count(*) FILTER (WHERE was = '{s}')"
                       for s in DELIVERY_STATUSES)
    updates = ", ".join(f"{s} = c.{s} + EXCLUDED.{s}" for s in DELIVERY_STATUSES)
    return f"""
        INSERT INTO broadcast_delivery_count AS c (broadcast_id, {", ".join(DELIVERY_STATUSES)})
        SELECT broadcast_id, {deltas} FROM {changes}
        WHERE broadcast_id IS NOT NULL AND was IS DISTINCT FROM became
        GROUP BY broadcast_id ORDER BY broadcast_id
        ON CONFLICT (broadcast_id) DO UPDATE SET {updates}
    """

# ---- devices -------------------------------------------------------------------------------------------


async def upsert_device(conn: asyncpg.Connection, *, resident_id: uuid.UUID, session_id: uuid.UUID | None,
                        fcm_token: str, installation_id: str | None, platform: str, locale: str,
                        app_version: str) -> asyncpg.Record:
    """A token belongs to one phone: registering it again (maybe for another resident) moves it."""
    return await conn.fetchrow(
        """
        INSERT INTO notification_device (id, resident_id, session_id, fcm_token, installation_id, platform, locale,
                                         app_version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (fcm_token) DO UPDATE SET
            resident_id = EXCLUDED.resident_id, session_id = EXCLUDED.session_id,
            installation_id = EXCLUDED.installation_id, platform = EXCLUDED.platform, locale = EXCLUDED.locale,
            app_version = EXCLUDED.app_version, updated_at = now(), deactivated_at = NULL, deactivated_reason = NULL
        RETURNING id, platform, locale, app_version, created_at, updated_at
        """,
        uuid.uuid4(), resident_id, session_id, fcm_token, installation_id, platform, locale, app_version,
    )


async def deactivate_device(conn: asyncpg.Connection, device_id: uuid.UUID, resident_id: uuid.UUID,
                            reason: str) -> bool:
    row = await conn.fetchrow(
        "UPDATE notification_device SET deactivated_at = now(), deactivated_reason = $3 "
        "WHERE id = $1 AND resident_id = $2 AND deactivated_at IS NULL RETURNING id",
        device_id, resident_id, reason,
    )
    return row is not None


async def deactivate_session_devices(conn: asyncpg.Connection, session_id: uuid.UUID) -> int:
    result = await conn.execute(
        "UPDATE notification_device SET deactivated_at = now(), deactivated_reason = 'signed out' "
        "WHERE session_id = $1 AND deactivated_at IS NULL",
        session_id,
    )
    return int(result.split()[-1])


async def deactivate_devices(conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID], reasons: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE notification_device d SET deactivated_at = now(), deactivated_reason = r.reason "
        "FROM unnest($1::uuid[], $2::text[]) AS r(id, reason) WHERE d.id = r.id AND d.deactivated_at IS NULL",
        list(device_ids), list(reasons),
    )


async def list_devices(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, platform, locale, app_version, created_at, updated_at FROM notification_device "
        "WHERE resident_id = $1 AND deactivated_at IS NULL ORDER BY updated_at DESC",
        resident_id,
    )


# ---- preferences -----------------------------------------------------------------------------------------


async def get_preferences(conn: asyncpg.Connection,
                          resident_id: uuid.UUID) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
    push = await conn.fetch("SELECT category, push FROM notification_preference WHERE resident_id = $1", resident_id)
    setting = await conn.fetchrow(
        "SELECT quiet_start, quiet_end, home_unit FROM notification_setting WHERE resident_id = $1", resident_id
    )
    return push, setting


async def put_preferences(conn: asyncpg.Connection, resident_id: uuid.UUID, push: dict[str, bool],
                          quiet_start: dt.time | None, quiet_end: dt.time | None, home_unit: str | None) -> None:
    await conn.execute(
        "INSERT INTO notification_preference (resident_id, category, push) "
        "SELECT $1, c, p FROM unnest($2::text[], $3::boolean[]) AS t(c, p) "
        "ON CONFLICT (resident_id, category) DO UPDATE SET push = EXCLUDED.push",
        resident_id, list(push), list(push.values()),
    )
    await conn.execute(
        "INSERT INTO notification_setting (resident_id, quiet_start, quiet_end, home_unit) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (resident_id) DO UPDATE SET quiet_start = EXCLUDED.quiet_start, "
        "quiet_end = EXCLUDED.quiet_end, home_unit = EXCLUDED.home_unit",
        resident_id, quiet_start, quiet_end, home_unit,
    )


# ---- the inbox and the outbox ------------------------------------------------------------------------------


async def insert_notifications(conn: asyncpg.Connection, *, recipients: Sequence[uuid.UUID], category: str,
                               urgency: str, template: str, rendered: dict[str, str], deep_link: str | None,
                               data: dict[str, Any], idempotency_key: str) -> list[int]:
    """One inbox row per recipient and its outbox row, in the caller's transaction; repeats are skipped."""
    rows = await conn.fetch(
        """
        WITH inserted AS (
            INSERT INTO notification (resident_id, category, urgency, template, title_vi, body_vi, title_en, body_en,
                                      deep_link, data, idempotency_key)
            SELECT r, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM unnest($1::uuid[]) AS r
            ON CONFLICT (resident_id, idempotency_key) DO NOTHING
            RETURNING id
        ), queued AS (
            INSERT INTO notification_outbox (notification_id) SELECT id FROM inserted RETURNING notification_id
        )
        SELECT notification_id AS id FROM queued
        """,
        list(recipients), category, urgency, template, rendered["title_vi"], rendered["body_vi"],
        rendered["title_en"], rendered["body_en"], deep_link, data, idempotency_key,
    )
    if rows:
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")  # delivered at commit: the worker wakes at once
    return [r["id"] for r in rows]


async def inbox_page(conn: asyncpg.Connection, resident_id: uuid.UUID, *, before_id: int | None,
                     limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, category, urgency, title_vi, body_vi, title_en, body_en, deep_link, data, created_at, read_at "
        "FROM notification WHERE resident_id = $1 AND archived_at IS NULL AND ($2::bigint IS NULL OR id < $2) "
        "ORDER BY id DESC LIMIT $3",
        resident_id, before_id, limit,
    )


async def unread_count(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM notification WHERE resident_id = $1 AND read_at IS NULL AND archived_at IS NULL",
        resident_id,
    )


async def mark_read(conn: asyncpg.Connection, resident_id: uuid.UUID, notification_id: int) -> bool:
    row = await conn.fetchrow(
        "UPDATE notification SET read_at = coalesce(read_at, now()) WHERE id = $1 AND resident_id = $2 RETURNING id",
        notification_id, resident_id,
    )
    return row is not None


async def mark_all_read(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    result = await conn.execute(
        "UPDATE notification SET read_at = now() WHERE resident_id = $1 AND read_at IS NULL AND archived_at IS NULL",
        resident_id,
    )
    return int(result.split()[-1])


async def archive(conn: asyncpg.Connection, resident_id: uuid.UUID, notification_id: int) -> bool:
    row = await conn.fetchrow(
        "UPDATE notification SET archived_at = coalesce(archived_at, now()), read_at = coalesce(read_at, now()) "
        "WHERE id = $1 AND resident_id = $2 RETURNING id",
        notification_id, resident_id,
    )
    return row is not None


# ---- delivery (the worker) -------------------------------------------------------------------------------


async def take_outbox(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Claim outbox rows with what expansion needs; the caller deletes them in the same transaction."""
    return await conn.fetch(
        """
        WITH taken AS (
            DELETE FROM notification_outbox WHERE notification_id IN (
                SELECT notification_id FROM notification_outbox ORDER BY notification_id
                LIMIT $1 FOR UPDATE SKIP LOCKED)
            RETURNING notification_id
        )
        SELECT n.id, n.resident_id, n.category, n.urgency, n.title_vi, n.body_vi, n.title_en, n.body_en,
               n.deep_link, n.data, n.created_at,
               coalesce(p.push, true) AS push_on, s.quiet_start, s.quiet_end
        FROM taken t JOIN notification n ON n.id = t.notification_id
        LEFT JOIN notification_preference p ON p.resident_id = n.resident_id AND p.category = n.category
        LEFT JOIN notification_setting s ON s.resident_id = n.resident_id
        """,
        limit,
    )


async def insert_deliveries(conn: asyncpg.Connection, notification_ids: Sequence[int],
                            available_at: Sequence[dt.datetime]) -> int:
    """A delivery row per active device of each notification's resident; one per (notification, device)."""
    result = await conn.execute(
        """
        INSERT INTO notification_delivery (notification_id, device_id, available_at, created_at)
        SELECT n.id, d.id, t.available_at, n.created_at
        FROM unnest($1::bigint[], $2::timestamptz[]) AS t(id, available_at)
        JOIN notification n ON n.id = t.id
        JOIN notification_device d ON d.resident_id = n.resident_id AND d.deactivated_at IS NULL
        ON CONFLICT DO NOTHING
        """,
        list(notification_ids), list(available_at),
    )
    return int(result.split()[-1])


async def claim_due(conn: asyncpg.Connection, limit: int, lease_seconds: int) -> list[asyncpg.Record]:
    """Claim due deliveries for one send: 'sending' with a lease, so a dead worker's rows come back."""
    return await conn.fetch(
        f"""
        WITH due AS (
            SELECT notification_id, device_id, created_at, status FROM notification_delivery
            WHERE status IN ('pending', 'sending') AND available_at <= clock_timestamp()
              AND {_recent('created_at')}
            ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE notification_delivery d
            SET status = 'sending', attempts = d.attempts + 1, updated_at = now(),
                available_at = clock_timestamp() + make_interval(secs => $2)
            FROM due WHERE d.notification_id = due.notification_id AND d.device_id = due.device_id
              AND d.created_at = due.created_at AND {_recent('d.created_at')}
            RETURNING d.notification_id, d.device_id, d.attempts, due.status AS was
        ), claimed_rows AS MATERIALIZED (
            SELECT c.notification_id, c.device_id, c.attempts, c.was, dev.fcm_token, dev.locale, n.urgency,
                   n.category, n.title_vi, n.body_vi, n.title_en, n.body_en, n.deep_link, n.data, n.broadcast_id
            FROM claimed c
            JOIN notification n ON n.id = c.notification_id
            JOIN notification_device dev ON dev.id = c.device_id
        ), counted AS (
            {_count_changes("(SELECT broadcast_id, was, 'sending' AS became FROM claimed_rows) AS t")}
        )
        SELECT notification_id, device_id, attempts, fcm_token, locale, urgency, category, title_vi, body_vi,
               title_en, body_en, deep_link, data, broadcast_id
        FROM claimed_rows
        """,
        limit, lease_seconds,
    )


async def extend_lease(conn: asyncpg.Connection, notification_ids: Sequence[int], device_ids: Sequence[uuid.UUID],
                       lease_seconds: float) -> int:
    """Keep claimed deliveries ('sending') claimed for another `lease_seconds`; returns how many still were."""
    done = await conn.execute(
        f"""
        UPDATE notification_delivery d SET available_at = clock_timestamp() + make_interval(secs => $3)
        FROM unnest($1::bigint[], $2::uuid[]) AS x(notification_id, device_id)
        WHERE d.notification_id = x.notification_id AND d.device_id = x.device_id AND d.status = 'sending'
          AND {_recent('d.created_at')}
        """,
        notification_ids, device_ids, float(lease_seconds),
    )
    return int(done.split()[-1])


async def record_results(conn: asyncpg.Connection, rows: Sequence[DeliveryUpdate]) -> None:
    """Record each answer and move the broadcast counts with it, in the caller's transaction."""
    if not rows:
        return
    ids, devices, statuses, message_ids, errors, delays = (list(column) for column in zip(*rows, strict=True))
    # The status each row had is read under its lock (normally 'sending'; something else only if the lease ran out
    # and another worker claimed and recorded it meanwhile), so the broadcast counts move from what it really was.
    await conn.execute(
        f"""
        WITH r AS (
            SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::float8[])
                 AS r(notification_id, device_id, status, message_id, error_code, delay)
        ), old AS (
            SELECT d.notification_id, d.device_id, d.created_at, d.status AS was, n.broadcast_id
            FROM r
            JOIN notification_delivery d ON d.notification_id = r.notification_id AND d.device_id = r.device_id
                 AND {_recent('d.created_at', DELIVERY_WINDOW_DAYS + 1)}  -- claimed at the edge: answered later
            JOIN notification n ON n.id = d.notification_id
            FOR UPDATE OF d
        ), changed AS (
            UPDATE notification_delivery d
            SET status = r.status, fcm_message_id = r.message_id, error_code = r.error_code, updated_at = now(),
                available_at = clock_timestamp() + make_interval(secs => r.delay)
            FROM old JOIN r ON r.notification_id = old.notification_id AND r.device_id = old.device_id
            WHERE d.notification_id = old.notification_id AND d.device_id = old.device_id
              AND d.created_at = old.created_at AND {_recent('d.created_at', DELIVERY_WINDOW_DAYS + 1)}
            RETURNING old.broadcast_id, old.was, d.status AS became
        ), counted AS (
            {_count_changes("changed")}
        )
        SELECT count(*) FROM changed
        """,
        ids, devices, statuses, message_ids, errors, delays,
    )


# ---- broadcasts ----------------------------------------------------------------------------------------------

BROADCAST_COLUMNS = (
    "id, created_by, target_unit, urgency, title_vi, body_vi, title_en, body_en, deep_link, status, scheduled_at, "
    "approved_by, approved_at, recipients, created_at, started_at, finished_at, cancelled_at"
)


async def insert_broadcast(conn: asyncpg.Connection, *, created_by: uuid.UUID, idempotency_key: str,
                           target_unit: str, urgency: str, texts: dict[str, str], deep_link: str | None,
                           status: str, scheduled_at: dt.datetime) -> tuple[asyncpg.Record, bool]:
    row = await conn.fetchrow(
        f"""
        INSERT INTO broadcast (created_by, idempotency_key, target_unit, urgency, title_vi, body_vi, title_en, body_en,
                               deep_link, status, scheduled_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (created_by, idempotency_key) DO NOTHING
        RETURNING {BROADCAST_COLUMNS}
        """,
        created_by, idempotency_key, target_unit, urgency, texts["title_vi"], texts["body_vi"], texts["title_en"],
        texts["body_en"], deep_link, status, scheduled_at,
    )
    if row is not None:
        return row, True
    existing = await conn.fetchrow(
        f"SELECT {BROADCAST_COLUMNS} FROM broadcast WHERE created_by = $1 AND idempotency_key = $2",
        created_by, idempotency_key,
    )
    return existing, False


async def get_broadcast(conn: asyncpg.Connection, broadcast_id: int, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {BROADCAST_COLUMNS} FROM broadcast WHERE id = $1" + (" FOR UPDATE" if lock else ""), broadcast_id
    )


async def list_broadcasts(conn: asyncpg.Connection, created_by: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {BROADCAST_COLUMNS} FROM broadcast WHERE created_by = $1 ORDER BY id DESC LIMIT 100", created_by
    )


async def broadcasts_awaiting_approval(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {BROADCAST_COLUMNS} FROM broadcast WHERE status = 'awaiting_approval' ORDER BY id DESC LIMIT 100")


async def set_broadcast_status(conn: asyncpg.Connection, broadcast_id: int, status: str, **stamps: Any) -> None:
    sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(stamps, start=3))
    await conn.execute(
        f"UPDATE broadcast SET status = $2{', ' + sets if sets else ''} WHERE id = $1",
        broadcast_id, status, *stamps.values(),
    )


async def skip_pending_deliveries(conn: asyncpg.Connection, broadcast_id: int, since: dt.datetime) -> int:
    """Skip the broadcast's pending deliveries: those made since `since` (its start, by a worker's clock: a day's
    margin), so the months before it are not read."""
    return await conn.fetchval(
        f"""
        WITH skipped AS (
            UPDATE notification_delivery d SET status = 'skipped', updated_at = now() FROM notification n
            WHERE n.id = d.notification_id AND n.broadcast_id = $1 AND d.status = 'pending'
              AND d.created_at >= $2::timestamptz - interval '1 day'
            RETURNING n.broadcast_id, 'pending'::text AS was, 'skipped'::text AS became
        ), counted AS (
            {_count_changes("skipped")}
        )
        SELECT count(*) FROM skipped
        """,
        broadcast_id, since,
    )


async def expire_deliveries(conn: asyncpg.Connection) -> int:
    """Fail the deliveries still pending or sending past DELIVERY_WINDOW_DAYS (error EXPIRED): no claim reads
    them any more. Their broadcast's counts move with them, from the status each had under its lock (as
    record_results)."""
    older = f"created_at < now() - interval '{DELIVERY_WINDOW_DAYS} days'"
    return await conn.fetchval(
        f"""
        WITH old AS (
            SELECT d.notification_id, d.device_id, d.created_at, d.status AS was, n.broadcast_id
            FROM notification_delivery d JOIN notification n ON n.id = d.notification_id
            WHERE d.status IN ('pending', 'sending') AND d.{older}
            FOR UPDATE OF d SKIP LOCKED
        ), expired AS (
            UPDATE notification_delivery d SET status = 'failed', error_code = 'EXPIRED', updated_at = now()
            FROM old
            WHERE d.notification_id = old.notification_id AND d.device_id = old.device_id
              AND d.created_at = old.created_at AND d.{older}
            RETURNING old.broadcast_id, old.was, d.status AS became
        ), counted AS (
            {_count_changes("expired")}
        )
        SELECT count(*) FROM expired
        """
    )


async def broadcast_delivery_counts(conn: asyncpg.Connection, broadcast_id: int) -> dict[str, int]:
    """The broadcast's deliveries by status (only statuses it has), from the maintained counts: one row."""
    row = await conn.fetchrow(
        f"SELECT {', '.join(DELIVERY_STATUSES)} FROM broadcast_delivery_count WHERE broadcast_id = $1", broadcast_id
    )
    return {status: n for status, n in row.items() if n} if row is not None else {}


async def broadcast_delivery_counts_exact(conn: asyncpg.Connection, broadcast_id: int,
                                          timeout: float | None = None) -> dict[str, int]:
    """The same counted from the delivery rows, a scan of all of them: for checks (tests, benchmarks), not requests."""
    rows = await conn.fetch(
        "SELECT d.status, count(*) AS n FROM notification_delivery d JOIN notification n ON n.id = d.notification_id "
        "WHERE n.broadcast_id = $1 GROUP BY d.status",
        broadcast_id, timeout=timeout,
    )
    return {r["status"]: r["n"] for r in rows}


async def take_due_broadcast(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The next broadcast to fan out, locked for this transaction (other workers skip it)."""
    return await conn.fetchrow(
        f"SELECT {BROADCAST_COLUMNS}, resume_after FROM broadcast "
        "WHERE status IN ('scheduled', 'running') AND scheduled_at <= clock_timestamp() "
        "ORDER BY scheduled_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )


async def fan_out_batch(conn: asyncpg.Connection, broadcast: asyncpg.Record, *, units: Sequence[str] | None,
                        limit: int, now: dt.datetime) -> tuple[int, uuid.UUID | None]:
    """Inbox rows and deliveries for the next `limit` residents of the broadcast's area.

    Returns (residents handled, last resident id). Runs in the caller's transaction together with the
    progress update, so a worker killed half-way neither loses nor repeats a batch.
    """
    rows = await conn.fetch(
        f"""
        WITH chosen AS (
            SELECT r.id FROM resident r
            LEFT JOIN notification_setting s ON s.resident_id = r.id
            WHERE ($2::uuid IS NULL OR r.id > $2) AND ($3::text[] IS NULL OR s.home_unit = ANY($3))
            ORDER BY r.id LIMIT $4
        ), inserted AS (
            INSERT INTO notification (resident_id, category, urgency, template, title_vi, body_vi, title_en, body_en,
                                      deep_link, idempotency_key, broadcast_id)
            SELECT id, 'city', $5, $6, $7, $8, $9, $10, $11, 'broadcast:' || $1::bigint, $1::bigint FROM chosen
            ON CONFLICT (resident_id, idempotency_key) DO NOTHING
            RETURNING id, resident_id, created_at
        ), delivered AS (
            INSERT INTO notification_delivery (notification_id, device_id, available_at, created_at)
            SELECT i.id, d.id,
                   -- quiet hours (Hanoi local time, maybe across midnight) hold a normal push till they end
                   CASE WHEN $5 <> 'emergency' AND q.quiet_start IS NOT NULL AND (
                            (q.quiet_start < q.quiet_end AND lt.t >= q.quiet_start AND lt.t < q.quiet_end)
                         OR (q.quiet_start > q.quiet_end AND (lt.t >= q.quiet_start OR lt.t < q.quiet_end)))
                        THEN ((lt.d + CASE WHEN lt.t < q.quiet_end THEN 0 ELSE 1 END) + q.quiet_end)
                             AT TIME ZONE 'Asia/Ho_Chi_Minh'
                        ELSE $12::timestamptz END,
                   i.created_at
            FROM inserted i
            JOIN notification_device d ON d.resident_id = i.resident_id AND d.deactivated_at IS NULL
            LEFT JOIN notification_preference p ON p.resident_id = i.resident_id AND p.category = 'city'
            LEFT JOIN notification_setting q ON q.resident_id = i.resident_id
            CROSS JOIN (SELECT ($12::timestamptz AT TIME ZONE 'Asia/Ho_Chi_Minh')::time AS t,
                               ($12::timestamptz AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS d) AS lt
            WHERE $5 = 'emergency' OR coalesce(p.push, true)
            ON CONFLICT DO NOTHING
            RETURNING notification_id
        ), counted AS (
            {_count_changes("(SELECT $1::bigint AS broadcast_id, NULL::text AS was, 'pending' AS became "
                            "FROM delivered) AS t")}
        )
        SELECT (SELECT count(*) FROM chosen) AS handled, (SELECT max(id::text) FROM chosen)::uuid AS last,
               (SELECT count(*) FROM inserted) AS created
        """,
        broadcast["id"], broadcast["resume_after"], list(units) if units is not None else None, limit,
        broadcast["urgency"], "city.emergency" if broadcast["urgency"] == "emergency" else "city.announcement",
        broadcast["title_vi"], broadcast["body_vi"], broadcast["title_en"], broadcast["body_en"],
        broadcast["deep_link"], now,
    )
    row = rows[0]
    if row["handled"]:
        await conn.execute(
            "UPDATE broadcast SET resume_after = $2, recipients = recipients + $3 WHERE id = $1",
            broadcast["id"], row["last"], row["created"],
        )
    return row["handled"], row["last"]
