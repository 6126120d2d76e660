"""What notifications streams on its declared live channels (`Module(live=...)`, published through `app.live`).

A new inbox item goes to the resident's own `inbox` channel; a city broadcast goes once to the shared `broadcasts`
channel, and each stream keeps what reaches its resident's home ward (not one message per resident).
Events carry both languages; the stream picks the caller's.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app import live
from app.redisdb import Redis

MODULE = "notifications"


def inbox_channel(redis: Redis, resident_id: str) -> str:
    return live.channel(redis, MODULE, "inbox", resident_id)


def broadcasts_channel(redis: Redis) -> str:
    return live.channel(redis, MODULE, "broadcasts")


def _texts(row: asyncpg.Record) -> dict[str, Any]:
    return {"title": {"vi": row["title_vi"], "en": row["title_en"]},
            "body": {"vi": row["body_vi"], "en": row["body_en"]}}


async def publish_inbox_item(redis: Redis, row: asyncpg.Record) -> None:
    event = {
        "id": row["id"], "category": row["category"], "urgency": row["urgency"], "deep_link": row["deep_link"],
        "data": row["data"], "created_at": row["created_at"].isoformat(), **_texts(row),
    }
    await live.publish(redis, MODULE, "inbox", event, key=str(row["resident_id"]))


async def publish_broadcast(redis: Redis, broadcast: asyncpg.Record) -> None:
    event = {
        "broadcast_id": broadcast["id"], "target_unit": broadcast["target_unit"], "urgency": broadcast["urgency"],
        "category": "city", "deep_link": broadcast["deep_link"], "created_at": broadcast["created_at"].isoformat(),
        **_texts(broadcast),
    }
    await live.publish(redis, MODULE, "broadcasts", event)
