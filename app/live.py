"""Live streams across API processes: a module publishes events on a channel it declared
(`Module(live=[LiveChannel(...)])`) and any process's server-sent-event stream forwards them.

Redis pub/sub carries the events, so an event published by a worker or another API process reaches
every connected app. Publishing is best-effort (a stream is a convenience: the inbox, the map and
the counts are always readable by a plain GET), and only after the write it announces has committed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from app.redisdb import Redis
from modules.registry import REGISTRY

KEEPALIVE_SECONDS = 15.0


def channel(redis: Redis, module: str, name: str, key: str | None = None) -> str:
    """The Redis channel of a declared live channel (one per key for keyed channels)."""
    declared = REGISTRY.live.get(f"{module}.{name}")
    if declared is None:
        raise LookupError(f"{module} declares no live channel {name!r}")
    if declared.keyed != (key is not None):
        raise ValueError(f"live channel {module}.{name} is {'keyed' if declared.keyed else 'shared'}")
    return redis.key("live", module, name, *((key,) if key is not None else ()))


async def publish(redis: Redis, module: str, name: str, event: dict[str, Any], *, key: str | None = None) -> None:
    await redis.client.publish(channel(redis, module, name, key), json.dumps(event, ensure_ascii=False))


async def listen(redis: Redis, *channels: str,
                 keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
    """Events as (channel, event) from the given channels, and None every `keepalive` seconds of silence
    (a stream sends a comment then, so proxies keep the connection open). Unsubscribes when closed."""
    pubsub = redis.client.pubsub()
    await pubsub.subscribe(*channels)
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=keepalive)
            if message is None:
                yield None
                continue
            source = message["channel"]
            yield (source.decode() if isinstance(source, bytes) else source), json.loads(message["data"])
    finally:
        await pubsub.unsubscribe(*channels)
        await pubsub.aclose()
        await asyncio.sleep(0)
