"""The live stream's Redis channels: what the worker publishes and `GET /v1/notifications/stream` listens to.

A new inbox item goes to the resident's own channel; a city broadcast goes once to one shared channel, and each
stream keeps what reaches its resident's home ward (not one message per resident).
"""

from __future__ import annotations

import json

import asyncpg

from app.redisdb import Redis


def inbox_channel(redis: Redis, resident_id: str) -> str:
    return redis.key("inbox", resident_id)


def broadcasts_channel(redis: Redis) -> str:
    return redis.key("broadcasts")


async def publish_inbox_item(redis: Redis, row: asyncpg.Record) -> None:
    event = {
        "id": row["id"], "category": row["category"], "urgency": row["urgency"], "deep_link": row["deep_link"],
        "data": row["data"], "created_at": row["created_at"].isoformat(),
        "title": {"vi": row["title_vi"], "en": row["title_en"]}, "body": {"vi": row["body_vi"], "en": row["body_en"]},
    }
    await redis.client.publish(inbox_channel(redis, str(row["resident_id"])), json.dumps(event, ensure_ascii=False))


async def publish_broadcast(redis: Redis, broadcast: asyncpg.Record) -> None:
    event = {
        "broadcast_id": broadcast["id"], "target_unit": broadcast["target_unit"], "urgency": broadcast["urgency"],
        "category": "city", "deep_link": broadcast["deep_link"], "created_at": broadcast["created_at"].isoformat(),
        "title": {"vi": broadcast["title_vi"], "en": broadcast["title_en"]},
        "body": {"vi": broadcast["body_vi"], "en": broadcast["body_en"]},
    }
    await redis.client.publish(broadcasts_channel(redis), json.dumps(event, ensure_ascii=False))
