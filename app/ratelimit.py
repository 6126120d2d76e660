"""Rate limits shared by every API process: one atomic Lua script per hit, fixed windows in Redis."""

from __future__ import annotations

import math

from app.errors import TooManyRequests

# INCR and PEXPIRE together, so a crash between them cannot leave a counter that never expires.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


def parse_rate(text: str) -> tuple[int, int]:
    """'20/60' -> 20 requests per 60 seconds."""
    count, _, seconds = text.partition("/")
    limit, window = int(count), int(seconds or 60)
    if limit < 1 or window < 1:
        raise ValueError(f"bad rate {text!r}: expected COUNT/SECONDS")
    return limit, window


async def hit(redis, bucket: str, identity: str, rate: str) -> None:
    """Count one request of `identity` in `bucket`; over the limit raises 429 with Retry-After."""
    limit, window = parse_rate(rate)
    key = redis.key("rate", bucket, identity)
    count, ttl_ms = await redis.client.eval(_HIT, 1, key, window * 1000)
    if int(count) > limit:
        retry_after = max(1, math.ceil(int(ttl_ms) / 1000))
        raise TooManyRequests(
            f"too many {bucket} requests; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            limit=limit, window_seconds=window,
        )
