"""Finished visits to the social-insurance endpoint: the outbox row written with the visit, delivery through the
local stand-in over HTTP, retries with backoff, idempotence at the receiver, and failures kept for a person."""

from __future__ import annotations

import logging
import random
import uuid

import asyncpg
import httpx
import pytest
import redis as sync_redis

from app.settings import load_settings
from health import module as health_module
from health.outbound import jobs, service, stand_in
from modules import JobContext
from tests.conftest import free_port
from tests.health import support as core
from tests.health.resident_support import BHYT, ICD10, cipher_of, facility, full_visit, record, visit

POLICY = service.Policy(max_attempts=4, backoff_seconds=30, backoff_max_seconds=600)


async def deliver(client, policy: service.Policy = POLICY) -> dict[str, int]:
    """One pass of the worker job's work, sending through the app itself to its mounted stand-in."""
    return await service.deliver_due(client.app.state.pool, cipher_of(client), client, stand_in.PREFIX, policy)


async def received(client) -> dict:
    response = await client.get(stand_in.PREFIX + "/_control/received")
    assert response.status_code == 200
    return response.json()


async def fault(client, **body) -> None:
    assert (await client.post(stand_in.PREFIX + "/_control/faults", json=body)).status_code == 200


async def outbox(conn, encounter_id):
    return await conn.fetchrow("SELECT * FROM health_outbox WHERE encounter_id = $1", encounter_id)


async def make_due(conn, encounter_id) -> None:
    """As if the backoff had passed."""
    await conn.execute("UPDATE health_outbox SET next_attempt_at = clock_timestamp() - interval '1 second' "
                       "WHERE encounter_id = $1", encounter_id)


async def test_a_finished_visit_is_queued_in_the_same_transaction_and_only_once(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    ongoing = await visit(client, conn, patient, fac, status="in-progress", source="urn:his|V1")
    assert await outbox(conn, ongoing.id) is None
    # the facility sends the same visit again, now finished: the same resource, now queued
    finished = await visit(client, conn, patient, fac, status="finished", source="urn:his|V1")
    assert finished.id == ongoing.id
    row = await outbox(conn, finished.id)
    assert row["state"] == "pending" and row["visit_key"] == f"ihanoi-visit:{finished.id}" and row["attempts"] == 0
    await visit(client, conn, patient, fac, status="finished", source="urn:his|V1")  # an amendment: still one row
    assert await conn.fetchval("SELECT count(*) FROM health_outbox WHERE encounter_id = $1", finished.id) == 1
    # a write that rolls back leaves no row behind
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            lost = await visit(client, conn, patient, fac, status="finished")
            await conn.execute("INSERT INTO health_facility (code, name, kind, bhyt_code) VALUES ('x!', 'x', 'x', 'x')")
    assert await outbox(conn, lost.id) is None


async def test_delivered_to_the_stand_in_with_the_claim_it_needs(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    encounter = await full_visit(client, conn, patient, fac)
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    row = await outbox(conn, encounter.id)
    assert row["state"] == "delivered" and row["attempts"] == 1 and row["last_status"] == 201
    assert row["receipt"].startswith("BHXH-") and row["delivered_at"] is not None
    got = await received(client)
    assert got["attempts"] == 1 and len(got["visits"]) == 1
    claim = got["visits"][0]["claim"]
    assert got["visits"][0]["receipt"] == row["receipt"]
    assert claim["visit_key"] == row["visit_key"] and claim["insurance_card"] == BHYT
    assert claim["facility_code"] == fac["code"] and claim["facility_bhyt_code"] == fac["bhyt_code"]
    assert claim["diagnoses"] == [{"system": ICD10, "code": "J02.9", "display": "Viêm họng cấp"}]
    assert claim["medications"] == ["Amoxicillin 500 mg (Uống 1 viên × 3 lần/ngày, sau ăn, trong 7 ngày)"]
    assert claim["visit_class"] == "AMB" and claim["period_start"]
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 0, "failed": 0}  # nothing left to send
    assert (await received(client))["attempts"] == 1


async def test_a_failing_receiver_is_retried_with_growing_backoff_until_it_takes_the_visit(client, conn):
    patient = await record(client, conn)
    encounter = await full_visit(client, conn, patient, await facility(conn))
    await fault(client, times=2, status=503)
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 1, "failed": 0}
    first = await outbox(conn, encounter.id)
    assert first["state"] == "pending" and first["attempts"] == 1 and first["last_status"] == 503
    assert first["last_error"] == "HTTP 503"
    wait = (first["next_attempt_at"] - await conn.fetchval("SELECT clock_timestamp()")).total_seconds()
    assert 30 * 0.8 - 1 <= wait <= 30 * 1.2 + 1
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 0, "failed": 0}  # not due yet: not sent
    await make_due(conn, encounter.id)
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 1, "failed": 0}
    second = await outbox(conn, encounter.id)
    wait = (second["next_attempt_at"] - await conn.fetchval("SELECT clock_timestamp()")).total_seconds()
    assert 60 * 0.8 - 1 <= wait <= 60 * 1.2 + 1  # doubled
    await make_due(conn, encounter.id)
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    done = await outbox(conn, encounter.id)
    assert done["state"] == "delivered" and done["attempts"] == 3 and done["last_error"] is None
    got = await received(client)
    assert got["attempts"] == 3 and len(got["visits"]) == 1


async def test_an_answer_lost_after_the_receiver_recorded_is_resent_and_taken_once(client, conn):
    patient = await record(client, conn)
    encounter = await full_visit(client, conn, patient, await facility(conn))
    await fault(client, times=1, status=503, accept_then_fail=True, retry_after=120)
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 1, "failed": 0}
    row = await outbox(conn, encounter.id)
    wait = (row["next_attempt_at"] - await conn.fetchval("SELECT clock_timestamp()")).total_seconds()
    assert wait >= 119  # the receiver's Retry-After is longer than the first backoff
    await make_due(conn, encounter.id)
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    got = await received(client)
    assert len(got["visits"]) == 1 and got["visits"][0]["deliveries"] == 2
    row = await outbox(conn, encounter.id)
    assert row["last_status"] == 200 and row["receipt"] == got["visits"][0]["receipt"]


async def test_refused_claims_and_too_many_attempts_are_kept_as_failed(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    refused = await full_visit(client, conn, patient, fac)
    await fault(client, times=1, status=422)
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 0, "failed": 1}
    row = await outbox(conn, refused.id)
    assert row["state"] == "failed" and row["last_status"] == 422 and "refused" in row["last_error"]

    stubborn = await full_visit(client, conn, patient, fac, days_ago=1)
    await fault(client, times=100, status=500)
    for _ in range(POLICY.max_attempts):
        await make_due(conn, stubborn.id)
        await deliver(client)
    row = await outbox(conn, stubborn.id)
    assert row["state"] == "failed" and row["attempts"] == POLICY.max_attempts
    assert row["last_error"] == f"HTTP 500; gave up after {POLICY.max_attempts} attempts"
    await make_due(conn, stubborn.id)
    # a failed row is not sent again
    assert await deliver(client) == {"delivered": 0, "unchanged": 0, "retry": 0, "failed": 0}
    assert (await received(client))["visits"] == []


async def test_a_receiver_out_of_reach_is_retried(client, conn):
    patient = await record(client, conn)
    encounter = await full_visit(client, conn, patient, await facility(conn))
    async with httpx.AsyncClient() as http:  # a real client: nothing listens on port 9
        counts = await service.deliver_due(client.app.state.pool, cipher_of(client), http,
                                           f"http://127.0.0.1:{free_port()}/social-insurance", POLICY)
    assert counts == {"delivered": 0, "unchanged": 0, "retry": 1, "failed": 0}
    row = await outbox(conn, encounter.id)
    assert row["last_status"] is None and row["last_error"].startswith("no answer (")


def test_backoff_doubles_with_jitter_up_to_the_cap():
    rng = random.Random(1)
    policy = service.Policy(backoff_seconds=10, backoff_max_seconds=100)
    for attempts, base in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)):
        delay = service.backoff(policy, attempts, rng=rng)
        assert base * 0.8 <= delay <= base * 1.2, (attempts, delay)
    assert service.backoff(policy, 1, retry_after=50, rng=rng) == 50
    assert service.backoff(policy, 1, retry_after=10_000, rng=rng) == 100


def test_the_endpoint_is_the_setting_else_the_stand_in_in_dev_and_test(settings):
    assert jobs.endpoint_of(settings) == "http://ihanoi.test" + stand_in.PREFIX
    own = load_settings(dict(settings.environ) | {"IHANOI_HEALTH_SOCIAL_INSURANCE_URL": "https://bhxh.example/api"})
    assert jobs.endpoint_of(own) == "https://bhxh.example/api"


@pytest.fixture
def serving(start_server, redis_url):
    """A real `ihanoi serve`, started before the test's transaction takes any lock it would wait on."""
    port, prefix = free_port(), f"test:{uuid.uuid4().hex[:8]}:"
    base, _ = start_server(port=port, IHANOI_PUBLIC_URL=f"http://127.0.0.1:{port}", IHANOI_REDIS_PREFIX=prefix)
    yield base
    keys = sync_redis.Redis.from_url(redis_url)
    for key in keys.scan_iter(prefix + "*"):
        keys.delete(key)
    keys.close()


@pytest.mark.e2e
async def test_the_worker_job_sends_over_real_http_to_a_running_server(serving, client, conn, settings):
    """`health.outbound.visits` as `ihanoi worker` runs it, against the stand-in of a real `ihanoi serve`."""
    base = serving
    patient = await record(client, conn)
    encounter = await full_visit(client, conn, patient, await facility(conn))
    job = next(j for j in health_module.jobs if j.name == "health.outbound.visits")
    worker_settings = load_settings(dict(settings.environ) | {"IHANOI_PUBLIC_URL": base})
    await job.run(JobContext(pool=client.app.state.pool, redis=None, settings=worker_settings,
                             log=logging.getLogger("test")))
    row = await outbox(conn, encounter.id)
    assert row["state"] == "delivered", row["last_error"]
    async with httpx.AsyncClient(base_url=base) as http:
        got = (await http.get(stand_in.PREFIX + "/_control/received")).json()
    assert [v["visit_key"] for v in got["visits"]] == [row["visit_key"]]
    assert got["visits"][0]["receipt"] == row["receipt"]


async def test_a_facilitys_fhir_transaction_queues_its_finished_visit_all_or_nothing(client, conn):
    """The real path: a facility system posts a transaction Bundle over FHIR; the visit it finishes is queued with
    it, and a Bundle refused as a whole queues nothing."""
    code, his = await core.facility(client, conn)
    refused = core.bundle(("urn:uuid:p1", core.patient()), ("urn:uuid:e1", core.encounter("enc-bad")),
                          (None, core.condition("cond-bad", subject="Patient/00000000-0000-4000-8000-000000000000")))
    await core.send(client, his, refused, expect=422)
    assert await conn.fetchval("SELECT count(*) FROM health_outbox") == 0
    patient_id = await core.visit(client, his, prefix="fhir")
    row = await conn.fetchrow("SELECT * FROM health_outbox WHERE patient_id = $1", uuid.UUID(patient_id))
    assert row["state"] == "pending"
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    claim = (await received(client))["visits"][0]["claim"]
    assert claim["visit_key"] == row["visit_key"] and claim["facility_code"] == code
    assert claim["insurance_card"] == core.PATIENT_BHYT
    assert claim["diagnoses"] == [{"system": ICD10, "code": "I10", "display": None}]
    assert claim["period_start"] == "2026-05-01T08:00:00+07:00"


async def test_a_visit_changed_after_it_was_synced_is_sent_again_as_a_new_revision(client, conn):
    """A facility amends a finished visit that social insurance already has (a corrected diagnosis, a longer
    visit): the outbox sends a second revision, the receiver keeps the higher one; sending the same visit again
    unchanged sends nothing; a write while a revision is on its way queues the next one."""
    code, his = await core.facility(client, conn)
    patient_id = await core.visit(client, his, prefix="amend")
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    first = await conn.fetchrow("SELECT * FROM health_outbox WHERE patient_id = $1", uuid.UUID(patient_id))
    assert first["revision"] == 1 and first["state"] == "delivered"
    # the facility corrects the diagnosis (J02.9 instead of I10) and the end of the visit, over FHIR
    amended = core.bundle(
        ("urn:uuid:p1", core.patient()),
        ("urn:uuid:e1", core.encounter("amend-enc", period={"start": "2026-05-01T08:00:00+07:00",
                                                           "end": "2026-05-01T10:30:00+07:00"})),
        (None, core.condition("amend-cond", code="J02.9", encounter={"reference": "urn:uuid:e1"})))
    await core.send(client, his, amended)
    rows = await conn.fetch("SELECT revision, state FROM health_outbox WHERE encounter_id = $1 ORDER BY revision",
                            first["encounter_id"])
    assert [(r["revision"], r["state"]) for r in rows] == [(1, "delivered"), (2, "pending")]  # one new revision
    assert await deliver(client) == {"delivered": 1, "unchanged": 0, "retry": 0, "failed": 0}
    got = await received(client)
    assert len(got["visits"]) == 1 and got["visits"][0]["revisions"] == [1, 2]
    claim = got["visits"][0]["claim"]
    assert claim["revision"] == 2 and claim["visit_key"] == first["visit_key"]
    assert claim["diagnoses"] == [{"system": ICD10, "code": "J02.9", "display": None}]
    assert claim["period_end"] == "2026-05-01T10:30:00+07:00"
    second = await conn.fetchrow("SELECT * FROM health_outbox WHERE encounter_id = $1 AND revision = 2",
                                 first["encounter_id"])
    assert second["receipt"] == got["visits"][0]["receipt"] != first["receipt"]
    # the receiver is idempotent by revision: revision 2 again is a duplicate, revision 1 late never replaces it
    again = await client.post(stand_in.PREFIX + "/v1/visits", json=claim)
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["receipt"] == second["receipt"]
    late = await client.post(stand_in.PREFIX + "/v1/visits", json=claim | {"revision": 1})
    assert late.status_code == 200 and late.json()["duplicate"]
    assert (await received(client))["visits"][0]["claim"]["revision"] == 2
    # the same Bundle sent again changes nothing the claim says: a revision is queued, found unchanged, not sent
    await core.send(client, his, amended)
    attempts = (await received(client))["attempts"]
    assert await deliver(client) == {"delivered": 0, "unchanged": 1, "retry": 0, "failed": 0}
    assert (await received(client))["attempts"] == attempts
    assert await conn.fetchval("SELECT state FROM health_outbox WHERE encounter_id = $1 AND revision = 3",
                               first["encounter_id"]) == "unchanged"


async def test_a_change_while_a_revision_is_in_flight_is_sent_after_it(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    encounter = await visit(client, conn, patient, fac, source="urn:his|FLY")
    rows = await service.store.claim_due(conn, limit=10, lease_seconds=60)  # the worker took revision 1 ...
    assert [r["revision"] for r in rows] == [1]
    await visit(client, conn, patient, fac, source="urn:his|FLY", days_ago=2)  # ... and the visit changes meanwhile
    await service.store.delivered(conn, rows[0]["id"], status=201, receipt="BHXH-X", changes_seen=rows[0]["changes"])
    revisions = await conn.fetch("SELECT revision, state FROM health_outbox WHERE encounter_id = $1 ORDER BY revision",
                                 encounter.id)
    assert [(r["revision"], r["state"]) for r in revisions] == [(1, "delivered"), (2, "pending")]
