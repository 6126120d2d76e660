"""Delivery, run by `ihanoi worker`: the outbox expanded into deliveries, and due deliveries sent through FCM.

`expand_outbox` turns each notification `notify` queued into one delivery per active device of its resident
(a category whose pushes are off keeps only the inbox item; quiet hours hold a push until they end; emergency
alerts ignore both) and tells connected apps. `send_due` sends due deliveries in batches of at most 500:
UNAVAILABLE and INTERNAL are retried with exponential back-off, QUOTA_EXCEEDED pauses every worker, an
unregistered or invalid token deactivates its device.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random

import asyncpg

from app.redisdb import Redis
from notifications import live, store
from notifications.sender import PushMessage, PushResult, PushSender
from notifications.service import quiet_until
from notifications.store import DeliveryUpdate

log = logging.getLogger("ihanoi.notifications")

BATCH = 500  # FCM's limit per send_each call
LEASE_SECONDS = 60  # a claimed delivery whose worker died is sent again after this
MAX_ATTEMPTS = 5
# Batches per run of the send job (then it waits its period, 0.25 s, and runs again while anything is due).
BATCHES_PER_RUN = 100
# Batches sent (or being sent) whose answers are not recorded yet, at most: the one being recorded and the one being
# sent. After a SIGKILL these are sent again when their lease ends (the phone shows one: same id, same collapse key).
SENT_UNRECORDED = 2
QUOTA_BACKOFF_MIN = 60.0
RETRYABLE = {"UNAVAILABLE", "INTERNAL"}
DEAD_TOKEN = {"UNREGISTERED", "INVALID_ARGUMENT"}


# ---- the outbox ----------------------------------------------------------------------------------------------


async def expand_outbox(conn: asyncpg.Connection, redis: Redis, *, limit: int = 1000) -> int:
    """Turn outbox rows into deliveries and tell connected apps; returns how many were expanded."""
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        rows = await store.take_outbox(conn, limit)
        pushable: list[int] = []
        when: list[dt.datetime] = []
        for row in rows:
            emergency = row["urgency"] == "emergency"
            if not row["push_on"] and not emergency:
                continue  # inbox only: the resident turned this category's pushes off
            later = None if emergency else quiet_until(now, row["quiet_start"], row["quiet_end"])
            pushable.append(row["id"])
            when.append(later or now)
        if pushable:
            await store.insert_deliveries(conn, pushable, when)
    for row in rows:  # after commit: the live stream must not announce what could still roll back
        await live.publish_inbox_item(redis, row)
    return len(rows)


# ---- sending -------------------------------------------------------------------------------------------------


def _message(row: asyncpg.Record) -> PushMessage:
    english = row["locale"] == "en"
    data = {"notification_id": str(row["notification_id"]), "category": row["category"]}
    if row["deep_link"]:
        data["deep_link"] = row["deep_link"]
    return PushMessage(
        token=row["fcm_token"],
        title=row["title_en"] if english else row["title_vi"],
        body=row["body_en"] if english else row["body_vi"],
        data=data, urgency=row["urgency"],
        collapse_key=f"n{row['notification_id']}",
    )


def _backoff(attempts: int) -> float:
    return min(2.0 ** attempts, 300.0) * (0.8 + 0.4 * random.random())


def outcome(row: asyncpg.Record, result: PushResult) -> tuple[DeliveryUpdate, str | None]:
    """What a sender's answer means for the delivery: (update row, reason to deactivate the device)."""
    key = (row["notification_id"], row["device_id"])
    if result.ok:
        return (*key, "sent", result.message_id, None, 0.0), None
    code = result.error_code or "UNKNOWN"
    if code in DEAD_TOKEN:
        return (*key, "failed", None, code, 0.0), code
    if code == "QUOTA_EXCEEDED":
        return (*key, "pending", None, code, max(QUOTA_BACKOFF_MIN, result.retry_after or 0.0)), None
    if code in RETRYABLE and row["attempts"] < MAX_ATTEMPTS:
        return (*key, "pending", None, code, _backoff(row["attempts"])), None
    return (*key, "failed", None, code, 0.0), None


# Set the pause (a UNIX time, expiring with it) unless one that ends later is set already: another loop or worker
# may have been given a longer Retry-After.
_EXTEND_PAUSE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then return redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) end
return 0
"""


async def send_due(pool: asyncpg.Pool, redis: Redis, sender: PushSender, *, batches: int = BATCHES_PER_RUN,
                   stopping: asyncio.Event | None = None, lease_seconds: int = LEASE_SECONDS) -> int:
    """Send up to `batches` batches of due deliveries; returns how many answers came back.

    One pipeline: while a batch is being sent, the next one is claimed and the previous one's answers are recorded,
    so the sender's window never waits for the database (two loops each claiming, sending and recording in turn fell
    into step, both waiting on the database at once, a quarter of the time with nothing in flight). It stops when
    nothing is due, when FCM asked to slow down, or when the worker is asked to stop, and every batch claimed by then
    is sent and recorded before send_due returns, so a worker stopped with SIGTERM leaves nothing half-recorded. At
    most `SENT_UNRECORDED` batches are ever sent (or being sent) without their answers recorded yet.
    """
    pause_key = redis.key("fcm", "paused-until")

    async def claim() -> list[asyncpg.Record]:
        if stopping is not None and stopping.is_set():
            return []
        paused = await redis.client.get(pause_key)
        if paused and float(paused) > dt.datetime.now(dt.UTC).timestamp():
            return []  # FCM asked every sender of this project to slow down
        async with pool.acquire() as conn:
            rows = await store.claim_due(conn, BATCH, lease_seconds)
        if rows:  # held from now until its answers are recorded (it may wait for the batch ahead of it first)
            holders.append(Lease(pool, rows, lease_seconds))
        return rows

    holders: list[Lease] = []
    handled, left, halt = 0, batches, False
    claiming: asyncio.Task[list[asyncpg.Record]] | None = asyncio.ensure_future(claim()) if batches > 0 else None
    recording: asyncio.Task[None] | None = None
    try:
        while claiming is not None:
            rows = await claiming
            claiming = None
            if not rows:
                break
            left -= 1
            if left > 0 and not halt:
                claiming = asyncio.ensure_future(claim())  # the next batch, claimed while this one is sent
            lease = holders.pop(0)
            results = await sender.send([_message(r) for r in rows])
            updates, dead_devices, dead_reasons, quota_wait = _outcomes(rows, results)
            if recording is not None:
                await recording  # one batch recorded at a time; a failure surfaces here
            recording = asyncio.ensure_future(_record(pool, updates, dead_devices, dead_reasons, lease))
            handled += len(rows)
            if quota_wait:
                halt = True  # the batch already claimed is still sent (and recorded); no further one is claimed
                until = dt.datetime.now(dt.UTC).timestamp() + quota_wait
                await redis.client.eval(_EXTEND_PAUSE, 1, pause_key, str(until), int(quota_wait * 1000))
                log.warning("FCM quota exceeded: pausing sends", extra={"seconds": quota_wait})
    except BaseException:
        # A claim still running is waited for (its rows come back when their lease ends) and the batch being
        # recorded is finished; the error raised is this one, not a later one of theirs.
        for task in (claiming, recording):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
        for lease in holders:
            await lease.release()
        raise
    if recording is not None:
        await recording
    return handled


def _outcomes(rows: list[asyncpg.Record], results: list[PushResult],
              ) -> tuple[list[DeliveryUpdate], list, list[str], float]:
    """The update of every delivery, the devices to deactivate and why, and the quota pause asked for (0: none)."""
    updates: list[DeliveryUpdate] = []
    dead_devices, dead_reasons = [], []
    quota_wait = 0.0
    for row, result in zip(rows, results, strict=True):
        update, dead = outcome(row, result)
        updates.append(update)
        if dead:
            dead_devices.append(row["device_id"])
            dead_reasons.append(f"FCM {dead}")
        if result.error_code == "QUOTA_EXCEEDED":
            quota_wait = max(quota_wait, update[-1])
    return updates, dead_devices, dead_reasons, quota_wait


async def _record(pool: asyncpg.Pool, updates: list[DeliveryUpdate], dead_devices: list,
                  dead_reasons: list[str], lease: Lease) -> None:
    try:
        async with pool.acquire() as conn, conn.transaction():
            await store.record_results(conn, updates)
            if dead_devices:
                await store.deactivate_devices(conn, dead_devices, dead_reasons)
    finally:
        await lease.release()


class Lease:
    """A claimed batch's lease, renewed every third of it until the batch's answers are recorded.

    The lease is there for a worker that died; a live worker whose batch takes longer than the lease (a slow FCM,
    a loaded machine, or a batch waiting behind the one being sent) must not see another worker claim it again and
    send every message twice.
    """

    def __init__(self, pool: asyncpg.Pool, rows: list[asyncpg.Record], lease_seconds: float) -> None:
        self._done = asyncio.Event()
        self._task = asyncio.ensure_future(self._hold(pool, [r["notification_id"] for r in rows],
                                                      [r["device_id"] for r in rows], lease_seconds))

    async def _hold(self, pool: asyncpg.Pool, ids: list[int], devices: list, lease_seconds: float) -> None:
        while True:
            try:
                await asyncio.wait_for(self._done.wait(), timeout=lease_seconds / 3)
                return
            except TimeoutError:
                pass
            try:
                async with pool.acquire() as conn:
                    await store.extend_lease(conn, ids, devices, lease_seconds)
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:  # try again at the next third
                log.warning("push lease not renewed", extra={"error": type(exc).__name__, "batch": len(ids)})

    async def release(self) -> None:
        """Stop renewing: at once, or after the renewal in progress (never cut off mid-query)."""
        self._done.set()
        await self._task
