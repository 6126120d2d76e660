"""The Redis client owned by the app's lifespan, and the key prefix every writer uses.

On a Redis Cluster (`IHANOI_REDIS_CLUSTER=true`) every command and script touches one key, or keys that
share a hash tag (`{...}`), so no command spans two slots. Pub/sub uses plain PUBLISH/SUBSCRIBE, which a
cluster broadcasts to every node (redis-py's cluster pub/sub subscribes on any one node); sharded pub/sub
(Redis 7's SPUBLISH) is not used because the embedded Redis is 6.2.

Replication to a cluster's replicas is asynchronous: a primary that dies right after answering may take
the last writes with it when its replica takes over. The few writes that must survive a failover (a
revoked session, a job lease) go through `durable()`, which waits until a replica has them (WAIT).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ConnectionError, MovedError, TimeoutError, TryAgainError

log = logging.getLogger("ihanoi.redis")

# How long a durable write waits for a replica's acknowledgement. On a healthy cluster it comes back in well
# under a millisecond; after a failover the new primary has no replica until one is added, and then each durable
# write waits this long and goes on (PostgreSQL holds the truth of what must not be lost).
WAIT_REPLICA_MS = 250


class Redis:
    """A Redis (or Redis Cluster) client with this deployment's key prefix.

    Every key goes through `key()`, so that several deployments, and every test, can share a server.
    """

    def __init__(self, client: Any, prefix: str, *, cluster: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.cluster = cluster
        self._unreplicated_warned_at = 0.0

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def durable(self, key: str, command: str, *args: object) -> Any:
        """Run one write on `key` and, on a cluster, wait until a replica has it too (WAIT 1 on the same
        connection, so that it covers this write), so a failover right after does not undo it.

        `args` follow the command name; `key` must be among them (where the command takes it). Returns the
        command's answer. A single Redis server has no replica to wait for: the write is simply run.
        """
        if not self.cluster:
            return await self.client.execute_command(command, *args)
        await self.client.initialize()  # the slot map, known after the first command (a no-op after that)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(command, *args)
            pipe.execute_command("WAIT", 1, WAIT_REPLICA_MS, target_nodes=self.client.get_node_from_key(key))
            answer, replicas = await pipe.execute()
        except (ConnectionError, TimeoutError, ClusterDownError, MovedError, TryAgainError, OSError):
            # The slot's primary went away or moved: a pipeline does not follow it, a plain command does (it
            # reloads the slot map and retries), so the write goes there, and the next durable write waits again.
            return await self.client.execute_command(command, *args)
        if not replicas and time.monotonic() - self._unreplicated_warned_at > 60:
            self._unreplicated_warned_at = time.monotonic()
            log.warning("a durable Redis write reached no replica (a primary without replica after a failover?)",
                        extra={"command": command})
        return answer

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
    return Redis(client, prefix, cluster=cluster)
