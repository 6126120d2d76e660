"""A small but real module used by the kernel's tests: a table, routes, a job and a readiness check, and
everything a module may declare: a problem type, a role, a notification category with its template, a
setting, a CLI command and a live channel.

It stands in for the domain modules that later issues bring, through the same contract: it is loaded
with no edit outside this folder (tests add it to the catalog's modules; processes name it in
IHANOI_EXTRA_MODULES).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import asyncpg
import click
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from app import web
from app.errors import Conflict, DomainError, NotFound
from app.identity import Principal, guards
from modules import (
    ConsolePage,
    ConsoleView,
    Job,
    JobContext,
    LiveChannel,
    Module,
    NotificationCategory,
    ProblemType,
    Role,
    Settings,
    Template,
    Title,
)
from notifications import notify


class OutOfStock(DomainError):
    slug = "fixture-out-of-stock"


class FixtureSettings(msgspec.Struct, frozen=True, kw_only=True):
    greeting: str = "Xin chào"
    shelf_size: int = 10


class Greeting(msgspec.Struct):
    greeting: str
    shelf_size: int


class Restocked(msgspec.Struct):
    notified: int


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


@post("/v1/fixture/items/{item_id:int}/take", operation_id="FixtureTakeItem", dependencies=web.IDEMPOTENT)
async def take_item(item_id: web.Id, tx: web.Tx) -> Item:
    """A write a client may retry: the kernel's Idempotency-Key, declared on the route."""
    row = await tx.fetchrow("UPDATE fixture_item SET quantity = quantity - 1 WHERE id = $1 AND quantity > 0 "
                            "RETURNING id, name, quantity", item_id)
    if row is None:
        if await tx.fetchval("SELECT true FROM fixture_item WHERE id = $1", item_id) is None:
            raise NotFound(f"item {item_id} does not exist")
        raise OutOfStock(f"item {item_id} is out of stock")
    return Item(**row)


@post("/v1/fixture/items/{item_id:int}/restocked", operation_id="FixtureRestocked", guards=[guards.resident],
      status_code=200, dependencies=web.IDEMPOTENT_REQUIRED)
async def restocked(item_id: web.Id, tx: web.Tx, principal: web.Caller) -> Restocked:
    """Tell the caller through the notifications module, with this module's own category and template."""
    ids = await notify(tx, [principal.sub], category="fixture", template="fixture.restocked",
                       data={"item": item_id}, idempotency_key=f"restocked-{item_id}")
    return Restocked(notified=len(ids))


@get("/v1/fixture/greeting", operation_id="FixtureGreeting")
async def greeting(state: State) -> Greeting:
    own: FixtureSettings = state.settings.of("fixture")
    return Greeting(greeting=own.greeting, shelf_size=own.shelf_size)


@get("/v1/fixture/slow", operation_id="FixtureSlow")
async def slow(ms: FromQuery[int] = 500) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@get("/v1/fixture/boom", operation_id="FixtureBoom")
async def boom() -> dict[str, str]:
    raise RuntimeError("personal id 001099012345 leaked into an exception")


@get("/v1/fixture/sensitive", operation_id="FixtureSensitive",
     guards=[guards.resident, guards.level(2, max_auth_age=300)])
async def sensitive(principal: NamedDependency[Principal]) -> dict[str, int]:
    return {"level": principal.level}


@get("/v1/fixture/units/{unit:str}/queue", operation_id="FixtureUnitQueue",
     guards=[guards.role("staff", unit_param="unit")])
async def unit_queue(unit: FromPath[str]) -> dict[str, str]:
    return {"unit": unit}


@click.group(help="The fixture module's commands.")
def cli() -> None:
    pass


@cli.command("count", help="Count the fixture items.")
@click.pass_obj
def count_items(obj) -> None:
    async def work(ctx: JobContext) -> int:
        async with ctx.pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM fixture_item")

    click.echo(f"fixture items: {obj.run(work)}")


async def count_ticks(ctx: JobContext) -> None:
    await ctx.redis.client.incr(ctx.redis.key("fixture", "ticks"))


async def items_page(view: ConsoleView) -> str:
    """An operator page in the staff console, through the module hook: the store's items, and a form."""
    rows = await view.conn.fetch("SELECT id, name, quantity FROM fixture_item ORDER BY id DESC LIMIT 20")
    return view.render("items.html", items=rows)


async def add_item(view: ConsoleView, form) -> str:
    name = (form.get("name") or "").strip()
    if not name:
        from app.errors import InvalidInput

        raise InvalidInput.field("name", "name the item")
    await view.conn.execute("INSERT INTO fixture_item (name, quantity) VALUES ($1, 1)", name)
    return view.pick(f"Đã thêm {name}", f"Added {name}")


async def redis_flag_clear(state: State) -> bool:
    return not await state.redis.client.exists(state.redis.key("fixture", "broken"))


module = Module(
    name="fixture",
    title=Title(vi="Thử nghiệm", en="Fixture"),
    icon="flask",
    routers=[create_item, copy_item, get_item, take_item, restocked, greeting, slow, boom, sensitive, unit_queue],
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="fixture.tick", run=count_ticks, every_seconds=0.2)],
    readiness_checks={"flag": redis_flag_clear},
    problems=[ProblemType("fixture-out-of-stock", 409, Title("Hết hàng", "Out of stock"))],
    roles=[Role("fixture_keeper", Title("Thủ kho", "Storekeeper"), "record", "the store's slug")],
    notification_categories=[NotificationCategory("fixture", Title("Kho", "Store"), templates=[
        Template("fixture.restocked", "Đã có hàng #{item}", "Mặt hàng #{item} đã có lại.",
                 "Item #{item} is back", "Item #{item} is in stock again."),
    ])],
    settings=Settings(FixtureSettings, {
        "IHANOI_FIXTURE_GREETING": ("greeting", "what the fixture module greets with"),
        "IHANOI_FIXTURE_SHELF_SIZE": ("shelf_size", "items per shelf"),
    }),
    cli=cli,
    live=[LiveChannel("stock", "stock changes of one item", keyed=True)],
    console=[ConsolePage("items", Title("Kho hàng", "Store items"), items_page, roles=("fixture_keeper",),
                         act=add_item, templates=Path(__file__).parent / "console")],
)


@get("/v1/second/hello", operation_id="SecondHello")
async def hello() -> dict[str, str]:
    return {"xin_chao": "Xin chào"}


@get("/v1/second/mine", operation_id="SecondMine", guards=[guards.resident])
async def mine(principal: web.Caller) -> dict[str, int]:
    """A level-2 module's route: a level-1 resident is asked to step up."""
    return {"level": principal.level}


@get("/v1/second/overview", operation_id="SecondOverview", guards=[guards.resident], identity_level=1)
async def overview(principal: web.Caller) -> dict[str, int]:
    """A route of the same module that says level 1 is enough."""
    return {"level": principal.level}


second = Module(
    name="second",
    title=Title(vi="Mô-đun thứ hai", en="Second module"),
    icon="star",
    routers=[hello, mine, overview],
    min_identity_level=2,
)
