"""`ihanoi seed` for parking: an operator and lots around the centre, once, found by near-me."""

from __future__ import annotations

from parking import demo


async def test_demo_lots_are_seeded_once_and_found_near_hoan_kiem(client, conn):
    lines: list[str] = []
    first = await demo.seed(conn, lines.append)
    assert first["lots"] in (0, len(demo.LOTS))  # 0 if an `ihanoi seed` of this run committed them already
    assert await demo.seed(conn, lines.append) == {"lots": 0}
    found = await client.get("/v1/parking/lots/near", params={"lat": 21.0287, "lng": 105.8524, "radius_m": 1500,
                                                               "vehicle": "car", "minutes": 60})
    codes = {item["code"] for item in found.json()["items"]}
    assert {"hang-bac", "nha-hat-lon", "dinh-tien-hoang", "ly-thai-to"} <= codes
    assert "van-mieu" not in codes  # about 1.7 km away
