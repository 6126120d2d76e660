"""The resident's timeline (newest first, cursor paging) and a visit's summary as a PDF with Vietnamese text."""

from __future__ import annotations

import io
import unicodedata

from pypdf import PdfReader

from app.web import CITY_TZ
from tests.health.resident_support import RESIDENT, access_rows, at, bearer, facility, full_visit, iso, record, write


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return unicodedata.normalize("NFC", "\n".join(page.extract_text() for page in reader.pages))


async def test_timeline_pages_newest_first_without_gaps_or_repeats(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    written = []
    for n in range(7):
        stored = await write(client, conn, patient, fac, {
            "resourceType": "Observation", "status": "final", "code": {"text": f"Huyết áp lần {n}"},
            "valueString": "120/80 mmHg", "effectiveDateTime": iso(at(n))}, effective_at=at(n))
        written.append(str(stored.id))
    # two on the same instant: the id breaks the tie, so the cursor still neither skips nor repeats
    same = [await write(client, conn, patient, fac, {"resourceType": "Immunization", "status": "completed",
                                                     "vaccineCode": {"text": f"Vắc xin {n}"}},
                        effective_at=at(10)) for n in range(2)]
    headers = await bearer(client, RESIDENT)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/health/timeline", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [i["id"] for i in seen[:7]] == written  # at(0) is the newest
    assert {i["id"] for i in seen[7:]} == {str(s.id) for s in same}
    assert [i["date"] for i in seen] == sorted((i["date"] for i in seen), reverse=True)
    assert seen[0]["text"] == "Huyết áp lần 0" and seen[0]["date"].endswith("+07:00")
    assert seen[0]["facility"] == fac["name"]
    assert sum(r["what"] == "timeline" for r in await access_rows(conn, patient)) == 3

    for bad in ("nonsense", "WyJ4IiwieSJd"):  # not base64 JSON; JSON of the wrong values
        response = await client.get("/v1/health/timeline", params={"cursor": bad}, headers=headers)
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["field"] == "cursor"


async def test_timeline_items_point_at_their_visit(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn)
    encounter = await full_visit(client, conn, patient, fac)
    items = (await client.get("/v1/health/timeline", headers=await bearer(client, RESIDENT))).json()["items"]
    assert {i["type"] for i in items} == {"Encounter", "Condition", "MedicationRequest", "Observation"}
    assert {i["encounter_id"] for i in items} == {str(encounter.id)}


async def test_a_visit_summary_pdf_keeps_its_vietnamese_text(client, conn):
    patient = await record(client, conn)
    fac = await facility(conn, name="Bệnh viện Đa khoa Đức Giang")
    encounter = await full_visit(client, conn, patient, fac)
    await write(client, conn, patient, fac, {
        "resourceType": "AllergyIntolerance", "code": {"text": "Dị ứng hải sản"}}, effective_at=at(90))
    headers = await bearer(client, RESIDENT)
    response = await client.get(f"/v1/health/visits/{encounter.id}/summary.pdf", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    assert response.content.startswith(b"%PDF-")
    text = pdf_text(response.content)
    for phrase in ("TÓM TẮT LẦN KHÁM BỆNH", "Bệnh viện Đa khoa Đức Giang", "Chẩn đoán", "Viêm họng cấp (J02.9)",
                   "Amoxicillin 500 mg", "Uống 1 viên × 3 lần/ngày", "Đường huyết: 5.4 mmol/L", "Dị ứng hải sản",
                   "Sốt, đau họng hai ngày", "Cư dân Thử nghiệm"):
        assert phrase in text, phrase
    start = at(3).astimezone(CITY_TZ)
    assert start.strftime("%H:%M %d/%m/%Y") in text  # the visit's time in Hanoi

    english = await client.get(f"/v1/health/visits/{encounter.id}/summary.pdf",
                               headers=headers | {"Accept-Language": "en"})
    text = pdf_text(english.content)
    assert "VISIT SUMMARY" in text and "Diagnoses" in text and "Viêm họng cấp" in text
    assert [r["what"] for r in await access_rows(conn, patient)] == [f"Encounter/{encounter.id} pdf"] * 2

    response = await client.get("/v1/health/visits/not-a-uuid/summary.pdf", headers=headers)
    assert response.status_code == 400
    response = await client.get("/v1/health/visits/00000000-0000-4000-8000-000000000000/summary.pdf",
                                headers=headers)
    assert response.status_code == 404
