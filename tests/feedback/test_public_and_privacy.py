"""What each person sees: hidden names, private reports and photos, internal notes; the public map, list,
diacritic-free search and per-unit figures; duplicate suggestions; photos through HTTP."""

from __future__ import annotations

import io

from PIL import Image

from feedback import views
from tests.feedback.support import (
    LAT,
    LAT_50M,
    LNG,
    OTHER_WARD,
    WARD,
    act,
    jpeg,
    key,
    report_body,
    submit,
    upload,
)


async def test_hidden_name_private_photo_and_internal_notes(client, conn, people):
    public_photo, private_photo = await upload(client, people["a"]), await upload(client, people["a"])
    report = await submit(client, people["a"], hide_name=True,
                          photos=[{"id": public_photo}, {"id": private_photo, "public": False}])
    rid = report["id"]
    assert report["reporter_name"] and len(report["photos"]) == 2  # the reporter sees it all
    await act(client, people["clerk"], rid, "notes", {"text": "Đã gọi điện cho tổ trưởng dân phố"})

    for viewer in (people["b"], people["other_clerk"], {}):  # another resident, another unit, nobody signed in
        seen = (await client.get(f"/v1/feedback/reports/{rid}", headers=viewer)).json()
        assert seen["reporter_name"] is None and seen["name_hidden"] is True
        assert [p["id"] for p in seen["photos"]] == [public_photo]
        assert (await client.get(f"/v1/feedback/photos/{private_photo}", headers=viewer)).status_code == 404
        assert (await client.get(f"/v1/feedback/photos/{public_photo}", headers=viewer)).status_code == 200
        events = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=viewer)).json()["events"]
        assert [e["kind"] for e in events] == ["submitted"]
        assert all("actor_id" not in e and "data" not in e for e in events)
    staff_view = (await client.get(f"/v1/feedback/reports/{rid}", headers=people["clerk"])).json()
    assert staff_view["reporter_name"] and len(staff_view["photos"]) == 2
    staff_events = (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=people["clerk"])).json()
    assert [e["kind"] for e in staff_events["events"]] == ["submitted", "note"]
    assert (await client.get(f"/v1/feedback/photos/{private_photo}", headers=people["clerk"])).status_code == 200
    # notes are never in anything a resident receives
    rows = await conn.fetch("SELECT body_vi FROM notification WHERE body_vi LIKE '%tổ trưởng%'")
    assert rows == []


async def test_private_report_is_invisible_to_other_residents(client, people):
    rid = (await submit(client, people["a"], visibility="private"))["id"]
    for viewer in (people["b"], {}):
        assert (await client.get(f"/v1/feedback/reports/{rid}", headers=viewer)).status_code == 404
        assert (await client.get(f"/v1/feedback/reports/{rid}/timeline", headers=viewer)).status_code == 404
    assert (await client.post(f"/v1/feedback/reports/{rid}/follow", headers=people["b"])).status_code == 404
    public = (await client.get("/v1/feedback/public/reports")).json()["items"]
    assert rid not in [r["id"] for r in public]
    mine = (await client.get("/v1/feedback/me/reports", headers=people["a"])).json()["items"]
    assert [r["id"] for r in mine] == [rid]
    assert (await client.get(f"/v1/feedback/reports/{rid}", headers=people["clerk"])).status_code == 200


async def test_duplicates_within_100_m_are_offered_before_creating(client, people):
    first = await submit(client, people["a"])
    near = await client.post("/v1/feedback/reports", json=report_body(latitude=LAT_50M), headers=people["b"] | key())
    assert near.status_code == 409 and near.json()["type"].endswith("possible-duplicates")
    assert [c["id"] for c in near.json()["extra"]["candidates"]] == [first["id"]]
    far = await submit(client, people["b"], latitude=LAT + 150 / 110748.0)  # 150 m: not suggested
    other_category = await submit(client, people["b"], category="trat-tu-do-thi", latitude=LAT_50M)
    confirmed = await submit(client, people["b"], latitude=LAT_50M, duplicates_checked=True)
    assert len({first["id"], far["id"], other_category["id"], confirmed["id"]}) == 4
    # answered reports and private ones are not offered
    await act(client, people["clerk"], first["id"], "receive")
    await act(client, people["clerk"], first["id"], "answer", {"text": "Đã thu gom rác xong."})
    await act(client, people["clerk"], confirmed["id"], "reject", {"reason": "Trùng nội dung"})
    private = await submit(client, people["a"], latitude=LAT + 300 / 110748.0, visibility="private")
    quiet = await client.post("/v1/feedback/reports", json=report_body(latitude=LAT + 300 / 110748.0),
                              headers=people["b"] | key())
    assert quiet.status_code == 201, quiet.text
    assert private["id"] != quiet.json()["id"]


async def test_photos_are_checked_by_content_and_attached_once_by_their_owner(client, conn, people):
    text = await client.post("/v1/feedback/photos", content=b"hello, not an image",
                             headers=people["a"] | {"Content-Type": "image/jpeg"})
    # well-formed (bytes), refused for what they are: 422 naming the body
    assert text.status_code == 422 and text.json()["errors"][0]["field"] == "body"
    too_big = await client.post("/v1/feedback/photos", content=b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 + 10),
                                headers=people["a"] | {"Content-Type": "image/jpeg"})
    assert too_big.status_code in (413, 422) and "MB" in (too_big.json().get("detail") or "")
    # a JPEG with a GPS position comes out without it
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 43.0), 3: "E", 4: (105.0, 51.0, 8.0)}
    raw = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 10)).save(raw, format="JPEG", exif=exif)
    photo_id = await upload(client, people["a"], raw.getvalue())
    stored = await client.get(f"/v1/feedback/photos/{photo_id}", headers=people["a"])
    assert stored.headers["content-type"] == "image/jpeg" and not Image.open(io.BytesIO(stored.content)).getexif()
    thumb = await client.get(f"/v1/feedback/photos/{photo_id}/thumbnail", headers=people["a"])
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
    assert (await client.get(f"/v1/feedback/photos/{photo_id}", headers=people["b"])).status_code == 404
    # someone else cannot attach it, the owner can, and only once
    theirs = await client.post("/v1/feedback/reports", json=report_body(photos=[{"id": photo_id}]),
                               headers=people["b"] | key())
    assert theirs.status_code == 400 and theirs.json()["errors"][0]["field"] == "photos"
    await submit(client, people["a"], photos=[{"id": photo_id}])
    again = await client.post("/v1/feedback/reports", json=report_body(photos=[{"id": photo_id}],
                                                                       duplicates_checked=True),
                              headers=people["a"] | key())
    assert again.status_code == 400
    six = [await upload(client, people["a"], jpeg()) for _ in range(6)]
    too_many = await client.post("/v1/feedback/reports", json=report_body(photos=[{"id": p} for p in six]),
                                 headers=people["a"] | key())
    assert too_many.status_code == 400


async def test_search_without_diacritics_and_the_public_map(client, people, monkeypatch):
    pothole = await submit(client, people["a"], category="ha-tang-giao-thong",
                           description="Đường hỏng nặng, nhiều ổ gà trước số 5 phố Tràng Tiền")
    rubbish = await submit(client, people["a"], latitude=21.0368, longitude=105.8342, ward=OTHER_WARD,
                           description="Rác thải ùn ứ cạnh chợ")

    async def ids(**params):
        response = await client.get("/v1/feedback/public/reports", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert await ids(q="duong hong") == [pothole["id"]]
    assert await ids(q="ĐƯỜNG HỎNG") == [pothole["id"]]
    assert await ids(q="o ga") == [pothole["id"]]
    assert await ids(q="rac thai") == [rubbish["id"]]
    assert await ids(q="duong hong rac") == []
    # a map box around Hoàn Kiếm lake holds the first, not the report 2 km away in Ba Đình
    box = f"{LNG - 0.005},{LAT - 0.005},{LNG + 0.005},{LAT + 0.005}"
    assert await ids(bbox=box) == [pothole["id"]]
    assert await ids(bbox=box, category="ve-sinh-moi-truong") == []
    # a box dense with reports is listed newest first with the box as a plain filter: the same answers
    monkeypatch.setattr(views, "DENSE_BOX", 1)
    assert await ids(bbox=box) == [pothole["id"]]
    assert await ids(bbox=box, q="duong hong") == [pothole["id"]]
    assert await ids(bbox=box, q="rac thai") == []
    monkeypatch.undo()
    assert set(await ids()) == {pothole["id"], rubbish["id"]}
    bad = await client.get("/v1/feedback/public/reports", params={"bbox": "1,2,3"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "bbox"
    bad_status = await client.get("/v1/feedback/public/reports", params={"status": "lost"})
    assert bad_status.status_code == 400


async def test_public_list_pages_with_a_cursor(client, people):
    created = [(await submit(client, people["a"], duplicates_checked=True))["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/feedback/public/reports", params=params)).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(created, reverse=True)
    assert (await client.get("/v1/feedback/public/reports", params={"cursor": "nonsense"})).status_code == 400


async def test_staff_queue_filters_and_per_unit_figures(client, conn, redis, people):
    a = await submit(client, people["a"], description="Đèn đường hỏng cả tuần nay", category="trat-tu-do-thi")
    b = await submit(client, people["b"], latitude=LAT + 0.01)
    c = await submit(client, people["b"], latitude=LAT + 0.02)
    await act(client, people["clerk"], b["id"], "receive")
    await act(client, people["clerk"], b["id"], "answer", {"text": "Đã xử lý xong, cảm ơn."})
    await act(client, people["b"], b["id"], "rating", {"stars": 5})
    await conn.execute("UPDATE report SET answer_due_at = now() - interval '1 hour' WHERE id = $1", c["id"])

    async def queue(**params):
        response = await client.get(f"/v1/feedback/units/{WARD}/reports", params=params, headers=people["clerk"])
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert await queue() == [c["id"], a["id"]]  # open ones, most urgent deadline first
    assert await queue(status="closed") == [b["id"]]
    assert await queue(overdue="true") == [c["id"]]
    assert await queue(q="den duong") == [a["id"]]
    assert await queue(category="trat-tu-do-thi") == [a["id"]]
    assert await queue(order="newest") == [c["id"], a["id"]]
    other = await client.get(f"/v1/feedback/units/{WARD}/reports", headers=people["other_clerk"])
    assert other.status_code == 403
    resident = await client.get(f"/v1/feedback/units/{WARD}/reports", headers=people["a"])
    assert resident.status_code == 403

    stats = (await client.get("/v1/feedback/public/stats", params={"unit": WARD})).json()["units"]
    assert len(stats) == 1
    figures = stats[0]
    assert (figures["received"], figures["answered"], figures["answered_on_time"], figures["open"],
            figures["overdue"], figures["ratings"], figures["average_rating"]) == (3, 1, 1, 2, 1, 1, 5.0)
    # a public page: the aggregate is cached for a minute in Redis, not run for every visitor
    await submit(client, people["a"], latitude=LAT + 0.03)
    cached = (await client.get("/v1/feedback/public/stats", params={"unit": WARD})).json()["units"][0]
    assert cached["received"] == 3
    await redis.client.delete(redis.key("feedback", "stats", 90, WARD))
    fresh = (await client.get("/v1/feedback/public/stats", params={"unit": WARD})).json()["units"][0]
    assert fresh["received"] == 4


async def test_search_pages_are_the_same_whatever_the_window(client, people, monkeypatch):
    """A text search tests the newest rows of the list one by one (store.SEARCH_WINDOW of them), then asks the
    GIN index for the whole list when they hold less than a page: the same pages either way, with a box, a
    category and a cursor, and in the staff queue."""
    from feedback import store

    made = []  # (id, matches "den duong", in the box, category), oldest first
    for i in range(9):
        lamp = i % 3 != 1
        far = i % 4 == 3
        category = "trat-tu-do-thi" if i % 2 else "ve-sinh-moi-truong"
        report = await submit(client, people["a" if i % 2 else "b"], duplicates_checked=True, category=category,
                              latitude=LAT + (0.02 if far else 0.0) + i * 0.00001,
                              description=("Đèn đường hỏng " if lamp else "Rác thải ") + f"lần {i}")
        made.append((report["id"], lamp, not far, category))
    box = f"{LNG - 0.005},{LAT - 0.005},{LNG + 0.005},{LAT + 0.005}"

    async def walk(path, headers=None, **params):
        seen, cursor = [], None
        while True:
            query = params | {"limit": 2} | ({"cursor": cursor} if cursor else {})
            response = await client.get(path, params=query, headers=headers or {})
            assert response.status_code == 200, response.text
            seen += [r["id"] for r in response.json()["items"]]
            cursor = response.json()["next_cursor"]
            if not cursor:
                return seen

    newest = sorted(made, reverse=True)
    lamps = [i for i, lamp, _, _ in newest if lamp]
    expected = {
        "text": lamps,
        "box": [i for i, lamp, inside, _ in newest if lamp and inside],
        "category": [i for i, lamp, _, c in newest if lamp and c == "trat-tu-do-thi"],
    }
    for window in (1, 2, 3, 100):
        monkeypatch.setattr(store, "SEARCH_WINDOW", window)
        for dense in (1, 10_000):  # the box as ranges (tested with the row) or through its spatial index
            monkeypatch.setattr(views, "DENSE_BOX", dense)
            path = "/v1/feedback/public/reports"
            assert await walk(path, q="den duong") == expected["text"], window
            assert await walk(path, q="den duong", bbox=box) == expected["box"], (window, dense)
            assert await walk(path, q="den duong", category="trat-tu-do-thi") == expected["category"], window
            assert await walk(path, q="khong co") == []
        queue = await walk(f"/v1/feedback/units/{WARD}/reports", people["clerk"], q="den duong", order="newest")
        assert queue == lamps, window
