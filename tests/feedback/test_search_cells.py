"""The map cells of a text search in a box: feedback.store.box_cells (Python) and feedback_tags (SQL, the index
of 004_search_cells.sql) number them the same way, so a report inside a box is never left out by its cell."""

from __future__ import annotations

import random

from feedback import store


async def test_a_box_s_cells_hold_every_point_inside_it(conn):
    rng = random.Random(7)
    boxes, points = [], []
    for width in (0.0004, 0.003, 0.03, 0.08, 0.4, 3.0):  # a street .. more than a city, in degrees of longitude
        for _ in range(40):
            lat, lng = rng.uniform(20.6, 21.4), rng.uniform(105.3, 106.0)
            box = (lat, lng, lat + width * rng.uniform(0.5, 2.0), lng + width)
            min_lat, min_lng, max_lat, max_lng = box
            # its corners and edges (where rounding could put a point in the next cell), and points inside
            inside = [(min_lat, min_lng), (max_lat, max_lng), (min_lat, max_lng), (max_lat, min_lng)]
            inside += [(rng.uniform(min_lat, max_lat), rng.uniform(min_lng, max_lng)) for _ in range(20)]
            boxes.append(box)
            points.append(inside)
    flat = [(i, lat, lng) for i, inside in enumerate(points) for lat, lng in inside]
    rows = await conn.fetch(
        """SELECT i, feedback_tags(feedback_metres(lat, lng), 'khac') AS tags
             FROM unnest($1::int[], $2::float8[], $3::float8[]) AS p(i, lat, lng)""",
        [f[0] for f in flat], [f[1] for f in flat], [f[2] for f in flat])
    searched = 0
    for row in rows:
        cells = store.box_cells(boxes[row["i"]])
        if cells is None:  # more than MAX_BOX_CELLS at every size: searched without cells
            continue
        searched += 1
        assert len(cells) <= store.MAX_BOX_CELLS
        assert set(row["tags"][:2]) & set(cells), (boxes[row["i"]], row["tags"], cells)
    assert searched > len(rows) // 2
    assert store.box_cells((20.0, 105.0, 22.0, 107.0)) is None  # 2 degrees: too many cells even at 8 km


async def test_category_tags_differ_from_each_other_and_from_cells(conn):
    tags = await conn.fetch("SELECT code, feedback_category_tag(code) AS tag FROM feedback_category")
    assert len({r["tag"] for r in tags}) == len(tags) > 10
    assert all(r["tag"] % 10 == 0 for r in tags)  # cells end in 2 or 6
