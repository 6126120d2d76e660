"""Helpers shared by the feedback tests: people with roles, photos, reports sent over HTTP."""

from __future__ import annotations

import io
import uuid

from PIL import Image

from app.identity import service as identity
from app.identity.devlogin import sign_in
from app.identity.models import GrantRequest

# well-formed personal ID numbers (Hanoi, 1900s/2000s births)
RESIDENT_A, RESIDENT_B = "001090012345", "001190054321"
CLERK, OTHER_CLERK, HEAD, CITY_STAFF = "001192034567", "001085011111", "001175022222", "001080033333"
WARD, OTHER_WARD = "phuong-hoan-kiem", "phuong-ba-dinh"
# Hoàn Kiếm lake, and a point about 50 m north of it
LAT, LNG = 21.0287, 105.8524
LAT_50M = LAT + 50 / 110748.0


async def grant(client, conn, personal_id: str, role: str, scope: str = "") -> uuid.UUID:
    rt = client.app.state.identity
    resident = await identity.resident_for_personal_id(rt, conn, personal_id, create=True)
    await identity.grant_role(rt, conn, actor="test", resident_id=resident["id"], request_id=None,
                              request=GrantRequest(resident_id=str(resident["id"]), role=role, scope=scope))
    return resident["id"]


async def bearer(client, personal_id: str, level: int = 2) -> dict[str, str]:
    response = await sign_in(client, personal_id, level=level)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def jpeg(width: int = 64, height: int = 48, color=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


def report_body(**extra) -> dict:
    body = {"category": "ve-sinh-moi-truong", "description": "Rác thải đổ trộm đầu ngõ, bốc mùi nhiều ngày",
            "latitude": LAT, "longitude": LNG, "ward": WARD, "address": "Đầu ngõ 12 phố Hàng Bạc"}
    return body | extra


async def submit(client, headers, **extra) -> dict:
    response = await client.post("/v1/feedback/reports", json=report_body(**extra), headers=headers | key())
    assert response.status_code == 201, response.text
    return response.json()


async def upload(client, headers, content: bytes | None = None) -> str:
    response = await client.post("/v1/feedback/photos", content=content or jpeg(),
                                 headers=headers | {"Content-Type": "image/jpeg"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def act(client, headers, report_id: int, action: str, body: dict | None = None, expect: int = 200):
    response = await client.post(f"/v1/feedback/reports/{report_id}/{action}", json=body or {}, headers=headers)
    assert response.status_code == expect, response.text
    return response.json()


async def inbox_titles(client, headers) -> list[str]:
    response = await client.get("/v1/notifications", headers=headers)
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]
