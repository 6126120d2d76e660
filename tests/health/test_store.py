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
                # half the readers chain to the head they read first (a request's patient row), which the
                # others keep moving under them: one statement when it still holds, chained again when not
                known = await store.patient(conn, patient["id"]) if n % 2 else None
                await asyncio.sleep(0)
                await store.append_access(conn, cipher, patient["id"], actor=f"client:his-{n}", actor_kind="facility",
                                          facility_id=None, action="read", purpose="consent", what=f"read {i}",
                                          known=known)

    await asyncio.gather(*(reader(n) for n in range(4)))
    async with pool.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM health_access_log WHERE patient_id = $1 ORDER BY seq", patient["id"])]
        assert seqs == list(range(1, 41))
        assert await store.verify_chain(conn, cipher, patient["id"]) is None


async def test_an_append_chained_to_a_head_read_earlier_is_written_once_and_chained_again_when_it_moved(conn,
                                                                                                       settings):
    """`known`: the patient row this request read. Its head still holds: one statement. Another append came in
    between (the row is stale): nothing is written against the old head, the row goes after the new one."""
    cipher, patient = await a_patient(conn, settings)
    fresh = await store.patient(conn, patient["id"])
    first = await store.append_access(conn, cipher, patient["id"], actor="client:his-1", actor_kind="facility",
                                      facility_id=None, action="read", purpose="consent", what="a", known=fresh)
    assert first["seq"] == 1 and bytes(first["prev_hash"]) == store.GENESIS
    # `fresh` is stale now (its head is before `first`): the append must not fork the chain at seq 1
    second = await store.append_access(conn, cipher, patient["id"], actor="client:his-2", actor_kind="facility",
                                       facility_id=None, action="read", purpose="consent", what="b", known=fresh)
    assert second["seq"] == 2 and bytes(second["prev_hash"]) == bytes(first["hash"])
    third = await store.append_access(conn, cipher, patient["id"], actor="client:his-3", actor_kind="facility",
                                      facility_id=None, action="read", purpose="consent", what="c",
                                      known=await store.patient(conn, patient["id"]))
    assert third["seq"] == 3 and bytes(third["prev_hash"]) == bytes(second["hash"])
    head = await store.patient(conn, patient["id"])
    assert head["access_seq"] == 3 and bytes(head["access_head"]) == bytes(third["hash"])
    assert [r["seq"] for r in await conn.fetch("SELECT seq FROM health_access_log WHERE patient_id = $1 ORDER BY seq",
                                               patient["id"])] == [1, 2, 3]
    assert await store.verify_chain(conn, cipher, patient["id"]) is None
    await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.execute("UPDATE health_access_log SET what = 'x' WHERE patient_id = $1 AND seq = 3", patient["id"])
    await conn.execute("SET LOCAL session_replication_role = origin")
    assert await store.verify_chain(conn, cipher, patient["id"]) == 3


async def test_a_resource_line_is_sealed_beside_it_and_read_from_the_content_where_none_was_stored(conn, settings):
    cipher, patient = await a_patient(conn, settings)
    body = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Đường huyết"},
            "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}
    stored, _ = await store.upsert_resource(conn, cipher, resource_type="Observation", patient_id=patient["id"],
                                            facility_id=None, source_key="urn:bv|O1", resource=body,
                                            index=store.Index(effective_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC)))
    sealed = await conn.fetchval("SELECT display FROM health_resource WHERE id = $1", stored.id)
    assert sealed is not None and "Đường".encode() not in sealed and b"mmol" not in sealed
    query = store.Query(patient_id=patient["id"])
    (row,) = await store.find_lines(conn, query, limit=10)
    expected = ("Đường huyết", "5.4 mmol/L", "final", "http://loinc.org|2345-7")
    line = store.line_of(cipher, row)
    assert (line.text, line.detail, line.status, line.code) == expected
    # a row written before lines were stored: its line comes from its content
    await conn.execute("UPDATE health_resource SET display = NULL WHERE id = $1", stored.id)
    (row,) = await store.find_lines(conn, query, limit=10)
    line = store.line_of(cipher, row)
    assert row["content"] is not None and (line.text, line.detail, line.status, line.code) == expected
