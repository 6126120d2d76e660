"""A small but real module used by the kernel's tests: a table, routes, a job and a readiness check.

It stands in for the domain modules that later issues bring, through the same contract.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from app.errors import Conflict, NotFound
from app.identity import guards
from app.identity.models import Principal
from modules import Job, JobContext, Module, Title


class ItemCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    quantity: int


class Item(msgspec.Struct):
    id: int
    name: str
    quantity: int


@post("/v1/fixture/items", operation_id="FixtureCreateItem")
async def create_item(data: JSONBody[ItemCreate], tx: NamedDependency[asyncpg.Connection]) -> Item:
    if data.quantity < 0:
        # a domain rule, not a schema rule
        from app.errors import InvalidInput

        raise InvalidInput.field("quantity", "must not be negative")
    row = await tx.fetchrow(
        "INSERT INTO fixture_item (name, quantity) VALUES ($1, $2) RETURNING id, name, quantity",
        data.name, data.quantity,
    )
    return Item(**row)


@post("/v1/fixture/items/{item_id:int}/copies", operation_id="FixtureCopyItem")
async def copy_item(item_id: FromPath[int], tx: NamedDependency[asyncpg.Connection]) -> Item:
    """Two writes in one transaction: the second fails on the unique name, so neither may stay."""
    row = await tx.fetchrow("SELECT name, quantity FROM fixture_item WHERE id = $1", item_id)
    if row is None:
        raise NotFound(f"item {item_id} does not exist")
    await tx.execute("UPDATE fixture_item SET quantity = quantity - 1 WHERE id = $1", item_id)
    try:
        copy = await tx.fetchrow(
            "INSERT INTO fixture_item (name, quantity) VALUES ($1, 1) RETURNING id, name, quantity", row["name"]
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"an item named {row['name']!r} already exists") from None
    return Item(**copy)


@get("/v1/fixture/items/{item_id:int}", operation_id="FixtureGetItem")
async def get_item(item_id: FromPath[int], conn: NamedDependency[asyncpg.Connection]) -> Item:
    row = await conn.fetchrow("SELECT id, name, quantity FROM fixture_item WHERE id = $1", item_id)
    if row is None:
        raise NotFound(f"item {item_id} does not exist")
    return Item(**row)


@get("/v1/fixture/slow", operation_id="FixtureSlow")
async def slow(ms: FromQuery[int] = 500) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@get("/v1/fixture/boom", operation_id="FixtureBoom")
async def boom() -> None:
    raise RuntimeError("personal id 001099012345 leaked into an exception")


@get("/v1/fixture/sensitive", operation_id="FixtureSensitive",
     guards=[guards.resident, guards.level(2, max_auth_age=300)])
async def sensitive(principal: NamedDependency[Principal]) -> dict[str, int]:
    return {"level": principal.level}


@get("/v1/fixture/units/{unit:str}/queue", operation_id="FixtureUnitQueue",
     guards=[guards.role("staff", unit_param="unit")])
async def unit_queue(unit: FromPath[str]) -> dict[str, str]:
    return {"unit": unit}


async def count_ticks(ctx: JobContext) -> None:
    await ctx.redis.client.incr(ctx.redis.key("fixture", "ticks"))


async def redis_flag_clear(state: State) -> bool:
    return not await state.redis.client.exists(state.redis.key("fixture", "broken"))


module = Module(
    name="fixture",
    title=Title(vi="Thử nghiệm", en="Fixture"),
    icon="flask",
    routers=[create_item, copy_item, get_item, slow, boom, sensitive, unit_queue],
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="fixture.tick", run=count_ticks, every_seconds=0.2)],
    readiness_checks={"flag": redis_flag_clear},
)


@get("/v1/second/hello", operation_id="SecondHello")
async def hello() -> dict[str, str]:
    return {"xin_chao": "Xin chào"}


second = Module(
    name="second",
    title=Title(vi="Mô-đun thứ hai", en="Second module"),
    icon="star",
    routers=[hello],
    min_identity_level=2,
)
