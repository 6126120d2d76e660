"""The Redis client owned by the app's lifespan, and the key prefix every writer uses."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster


class Redis:
    """A Redis (or Redis Cluster) client with this deployment's key prefix.

    Every key goes through `key()`, so that several deployments, and every test, can share a server.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def delete_prefixed(self) -> int:
        """Delete every key of this prefix (tests and `ihanoi` resets); SCAN, never KEYS."""
        deleted = 0
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=self.prefix + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted

    async def close(self) -> None:
        await self.client.aclose()


def connect(url: str, *, prefix: str, cluster: bool = False, timeout: float = 2.0) -> Redis:
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 15,
    }
    if cluster:
        client = RedisCluster.from_url(url, **options)
    else:
        client = aioredis.Redis.from_url(url, retry_on_timeout=False, **options)
    return Redis(client, prefix)
