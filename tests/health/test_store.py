"""The health store: resources sealed at rest, the same facility identifier updates, the access log chain."""

from __future__ import annotations

import datetime as dt

from app.identity import service as identity
from health import crypto, store


async def a_patient(conn, settings):
    cipher = crypto.cipher_of(settings)
    resident = await identity.demo_resident(conn, key="health-store", full_name="Nguyễn Văn An")
    return cipher, await store.ensure_patient(conn, cipher, resident, bhyt="DN4010123456789")


async def test_resources_are_sealed_and_resent_identifiers_update(conn, settings):
    cipher, patient = await a_patient(conn, settings)
    facility = await store.insert_facility(conn, code="bv-test", name="Bệnh viện thử", kind="hospital",
                                           bhyt_code="01999")
    body = {"resourceType": "Condition", "code": {"text": "Tăng huyết áp vô căn"}}
    icd10 = "http://hl7.org/fhir/sid/icd-10"
    index = store.Index(effective_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC), codes=((icd10, "I10"),))
    first, created = await store.upsert_resource(conn, cipher, resource_type="Condition", patient_id=patient["id"],
                                                 facility_id=facility["id"], source_key="urn:bv|C1", resource=body,
                                                 index=index)
    again, created_again = await store.upsert_resource(
        conn, cipher, resource_type="Condition", patient_id=patient["id"], facility_id=facility["id"],
        source_key="urn:bv|C1", resource=body | {"note": [{"text": "đã điều trị"}]}, index=index)
    assert created and not created_again and again.id == first.id and again.version == 2
    raw = await conn.fetchval("SELECT content FROM health_resource WHERE id = $1", first.id)
    assert b"huy" not in raw and b"I10" not in raw
    read = await store.get_resource(conn, cipher, "Condition", first.id)
    assert read.resource["note"][0]["text"] == "đã điều trị" and read.resource["meta"]["versionId"] == "2"
    by_code = await store.find_resources(conn, cipher, store.Query(
        patient_id=patient["id"], codes=tuple(store.code_hashes(cipher, [(icd10, "I10")]))),
        limit=10)
    assert [r.id for r in by_code] == [first.id]
    assert await conn.fetchval("SELECT count(*) FROM health_resource WHERE patient_id = $1", patient["id"]) == 1
    assert store.bhyt_of(cipher, patient) == "DN4010123456789"
    assert b"DN4010123456789" not in bytes(patient["bhyt_enc"])


async def test_a_tampered_access_log_row_breaks_the_chain(conn, settings):
    cipher, patient = await a_patient(conn, settings)
    for n in range(3):
        await store.append_access(conn, cipher, patient["id"], actor=f"client:his-{n}", actor_kind="facility",
                                  facility_id=None, action="read", purpose="consent", what="Observation/x")
    assert await store.verify_chain(conn, cipher, patient["id"]) is None
    # the table refuses updates; someone with the database's keys to the kingdom goes around the trigger
    await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.execute("UPDATE health_access_log SET actor = 'client:nobody' WHERE patient_id = $1 AND seq = 2",
                       patient["id"])
    await conn.execute("SET LOCAL session_replication_role = origin")
    assert await store.verify_chain(conn, cipher, patient["id"]) == 2


async def test_concurrent_appends_keep_one_unbroken_chain(pool, settings):
    """Reads of one record from many connections at once: each append waits for the patient row, so the
    chain has no fork and no gap (committed for real: this test uses the pool, not the test's transaction)."""
    import asyncio
    import uuid

    cipher = crypto.cipher_of(settings)
    async with pool.acquire() as conn, conn.transaction():
        resident = await identity.demo_resident(conn, key=f"chain-{uuid.uuid4().hex}", full_name="Chuỗi")
        patient = await store.ensure_patient(conn, cipher, resident)

    async def reader(n: int) -> None:
        for i in range(10):
            async with pool.acquire() as conn, conn.transaction():
                await store.append_access(conn, cipher, patient["id"], actor=f"client:his-{n}", actor_kind="facility",
                                          facility_id=None, action="read", purpose="consent", what=f"read {i}")

    await asyncio.gather(*(reader(n) for n in range(4)))
    async with pool.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM health_access_log WHERE patient_id = $1 ORDER BY seq", patient["id"])]
        assert seqs == list(range(1, 41))
        assert await store.verify_chain(conn, cipher, patient["id"]) is None
