"""Demo data for `ihanoi dev` / `ihanoi seed`: a parking operator and lots and zones around the centre.

Idempotent: operator and lots have fixed codes, so seeding twice creates nothing new.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import asyncpg

import payments

OPERATOR = ("hanoi-parking", "Công ty TNHH MTV Khai thác điểm đỗ xe Hà Nội")
# (code, name, kind, latitude, longitude, motorbikes, cars, large)
LOTS = [
    ("hang-bac", "Bãi xe Hàng Bạc", "lot", 21.0340, 105.8530, 120, 10, 0),
    ("nha-hat-lon", "Bãi xe Nhà hát Lớn", "lot", 21.0244, 105.8577, 200, 30, 4),
    ("dinh-tien-hoang", "Điểm đỗ phố Đinh Tiên Hoàng", "street", 21.0300, 105.8525, 0, 25, 0),
    ("ly-thai-to", "Điểm đỗ phố Lý Thái Tổ", "street", 21.0270, 105.8550, 0, 18, 0),
    ("van-mieu", "Bãi xe Văn Miếu", "lot", 21.0293, 105.8360, 300, 40, 10),
]


async def seed(conn: asyncpg.Connection, progress: Callable[[str], None]) -> Mapping[str, int]:
    await payments.ensure_operator(conn, OPERATOR[0], OPERATOR[1], "parking")
    created = 0
    for code, name, kind, lat, lng, motorbikes, cars, large in LOTS:
        row = await conn.fetchrow(
            """INSERT INTO parking_lot (code, name, kind, operator_slug, latitude, longitude, capacity_motorbike,
                                        capacity_car, capacity_large, opens_at, closes_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (code) DO NOTHING RETURNING id""",
            code, name, kind, OPERATOR[0], lat, lng, motorbikes, cars, large,
            *((None, None) if kind == "lot" else (dt.time(6), dt.time(22))))
        created += row is not None
    progress(f"{created} lots and zones")
    return {"lots": created}
