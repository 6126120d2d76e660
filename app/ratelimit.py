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

# The count and its remaining time, counting nothing.
_PEEK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
return {count, redis.call('PTTL', KEYS[1])}
"""


def parse_rate(text: str) -> tuple[int, int]:
    """'20/60' -> 20 requests per 60 seconds."""
    count, _, seconds = text.partition("/")
    limit, window = int(count), int(seconds or 60)
    if limit < 1 or window < 1:
        raise ValueError(f"bad rate {text!r}: expected COUNT/SECONDS")
    return limit, window


async def hit(redis, bucket: str, identity: str, rate: str, *, what: str | None = None) -> None:
    """Count one request of `identity` in `bucket`; over the limit raises 429 with Retry-After."""
    limit, window = parse_rate(rate)
    count, ttl_ms = await redis.client.eval(_HIT, 1, redis.key("rate", bucket, identity), window * 1000)
    if int(count) > limit:
        _refuse(what or f"{bucket} requests", limit, window, int(ttl_ms))


async def check(redis, bucket: str, identity: str, rate: str, *, what: str | None = None) -> None:
    """Refuse with 429 when `identity` has used up its budget in `bucket`, without counting this request.

    For budgets spent only by some outcomes (failures): check before the work, `hit` after a failure.
    """
    limit, window = parse_rate(rate)
    count, ttl_ms = await redis.client.eval(_PEEK, 1, redis.key("rate", bucket, identity))
    if int(count) >= limit and int(ttl_ms) > 0:
        _refuse(what or f"{bucket} requests", limit, window, int(ttl_ms))


def _refuse(what: str, limit: int, window: int, ttl_ms: int) -> None:
    retry_after = max(1, math.ceil(ttl_ms / 1000))
    raise TooManyRequests(
        f"too many {what}; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        limit=limit, window_seconds=window,
    )
