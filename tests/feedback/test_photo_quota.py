"""Photo uploads are limited per resident per hour (IHANOI_FEEDBACK_PHOTOS_PER_HOUR), counted in Redis, through
the HTTP API."""

from __future__ import annotations

import msgspec
import pytest

from app.settings import SettingsError, load_settings
from tests.feedback.support import RESIDENT_A, RESIDENT_B, bearer, jpeg, key, upload

PHOTOS = "/v1/feedback/photos"
JPEG = {"Content-Type": "image/jpeg"}


async def photo_count(conn, client, headers) -> int:
    me = (await client.get("/v1/me", headers=headers)).json()
    return await conn.fetchval("SELECT count(*) FROM report_photo WHERE owner_id = $1::uuid", me["id"])


async def test_uploads_over_the_hourly_quota_are_429_with_retry_after(make_client, settings, conn):
    limited = msgspec.structs.replace(settings, environ={**settings.environ, "IHANOI_FEEDBACK_PHOTOS_PER_HOUR": "2"})
    async with make_client(limited) as client:
        a, b = await bearer(client, RESIDENT_A), await bearer(client, RESIDENT_B)
        first_key = key()
        first = await client.post(PHOTOS, content=jpeg(), headers=a | JPEG | first_key)
        assert first.status_code == 201, first.text
        await upload(client, a)

        refused = await client.post(PHOTOS, content=jpeg(), headers=a | JPEG)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:ihanoi:problem:too-many-requests"
        assert 3500 <= int(refused.headers["retry-after"]) <= 3600
        assert (await client.post(PHOTOS, content=jpeg(), headers=a | JPEG | key())).status_code == 429
        assert await photo_count(conn, client, a) == 2

        # a retry of an upload that was answered gets its answer back: it is not a new upload
        replay = await client.post(PHOTOS, content=jpeg(), headers=a | JPEG | first_key)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]

        # the quota is each resident's own; a refused upload (not a photo) still counts
        await upload(client, b)
        broken = await client.post(PHOTOS, content=b"not a photo", headers=b | JPEG)
        assert broken.status_code == 422
        assert (await client.post(PHOTOS, content=jpeg(), headers=b | JPEG)).status_code == 429
        assert await photo_count(conn, client, b) == 1


async def test_the_default_quota_lets_a_resident_send_several_reports_worth(client, conn):
    a = await bearer(client, RESIDENT_A)
    for _ in range(12):  # more than two reports' five photos each
        await upload(client, a)
    assert await photo_count(conn, client, a) == 12


def test_the_quota_setting_is_declared_and_checked():
    from feedback.config import SETTINGS, FeedbackSettings
    from modules.registry import REGISTRY

    REGISTRY.settings.setdefault("feedback", SETTINGS)
    assert load_settings({}).of("feedback") == FeedbackSettings(photos_per_hour=30)
    assert load_settings({"IHANOI_FEEDBACK_PHOTOS_PER_HOUR": "5"}).of("feedback").photos_per_hour == 5
    for bad in ("0", "nhiều"):
        with pytest.raises(SettingsError, match="IHANOI_FEEDBACK_PHOTOS_PER_HOUR"):
            load_settings({"IHANOI_FEEDBACK_PHOTOS_PER_HOUR": bad}).of("feedback")
