"""The online gate's fast path: state cached per process, Redis deciding, boardings flushed from a stream.

Two app instances on one database and one Redis stand for two server processes: what one process learns
(a logout, a revocation, a refund) the other's cached state must not let through."""

from __future__ import annotations

import asyncio
import time

import msgspec

from tests.transit.support import (
    STAFF,
    buy,
    check,
    flush,
    funded,
    grant,
    h,
    key,
    rider_with_pass,
    validator_client,
)
from transit import service, store


async def test_a_logout_in_one_process_is_refused_promptly_by_another_that_cached_the_device(client, conn,
                                                                                             make_client):
    rider, ticket, phone, level1 = await rider_with_pass(client)
    async with make_client() as other:
        _, _, gate = await validator_client(other, conn)
        now = int(time.time())
        assert (await check(other, gate, phone.code(level1, now), 102))["accepted"] is True  # cached as live
        assert (await client.post("/v1/auth/logout", headers=h(rider))).status_code == 204
        # the other process learns it from the kernel's ended-session view (Redis, polled 4 times a second)
        reasons = []
        for _ in range(20):
            # a fresh signature each time (ECDSA is randomised): new bytes, so not refused as already used
            reasons.append((await check(other, gate, phone.code(level1), 102)).get("reason"))
            if reasons[-1] == "device-revoked":
                break
            await asyncio.sleep(0.1)
        assert reasons[-1] == "device-revoked" and len(reasons) <= 15, reasons  # within 1.5 s
        assert service.ring_of(other.app.state).device_state  # refused from the cache, not a re-read


async def test_a_revocation_and_a_refund_in_one_process_are_refused_at_once_by_another(client, conn, make_client):
    await grant(client, conn, STAFF, "transit_operator", "hanoibus")
    staff = h(await funded(client, STAFF, 10_000))
    rider, ticket, phone, level1 = await rider_with_pass(client)
    single = await buy(client, rider, "bus-single-0-15", 102)
    single_level1 = await phone.level1(single["id"])
    async with make_client() as other:
        _, _, gate = await validator_client(other, conn)
        now = int(time.time())
        assert (await check(other, gate, phone.code(level1, now), 102))["accepted"] is True
        revoked = await client.post(f"/v1/transit/operators/hanoibus/tickets/{ticket['id']}/revoke",
                                    headers=staff | key())
        assert revoked.status_code == 200
        assert (await check(other, gate, phone.code(level1, now + 1), 102))["reason"] == "revoked"
        # the other process had the single cached as active: the refund's Redis mark refuses it there
        ring = service.ring_of(other.app.state)
        ring.tickets[single["id"]] = ("active", "single", time.monotonic())
        refunded = await client.post(f"/v1/transit/tickets/{single['id']}/refund", headers=h(rider) | key())
        assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"
        assert (await check(other, gate, phone.code(single_level1, now + 2), 102))["reason"] == "revoked"
    assert await flush(client, conn) == 1  # only the first boarding was accepted


async def test_a_flush_repeated_after_a_crash_writes_each_boarding_once(client, conn, redis):
    _, ticket, phone, level1 = await rider_with_pass(client)
    _, _, gate = await validator_client(client, conn)
    assert (await check(client, gate, phone.code(level1), 102))["accepted"] is True
    stream = service.boardings_key(client.app.state.redis, ticket["id"] % service.GATE_SHARDS)
    entries = await client.app.state.redis.client.xrange(stream)
    assert len(entries) == 1  # the boarding's record until flushed
    # a flush that committed and died before deleting from Redis: the next one writes nothing new
    fields = msgspec.msgpack.decode(entries[0][1][b"b"])
    import datetime as dt
    import uuid

    row = (uuid.UUID(bytes=fields[0]), fields[1], fields[2], fields[3], fields[4], fields[5],
           dt.datetime.fromtimestamp(fields[6], dt.UTC), fields[7], fields[8])
    assert len(await store.insert_boardings(conn, [row])) == 1
    assert await flush(client, conn) == 0
    assert await client.app.state.redis.client.xlen(stream) == 0
    taps = await conn.fetch("SELECT validator, route_id, vehicle, accepted FROM transit_tap WHERE ticket_id = $1",
                            ticket["id"])
    assert [(t["route_id"], t["vehicle"], t["accepted"]) for t in taps] == [(102, "gate-1", True)]
    assert taps[0]["validator"].startswith("client:validator-")
