"""The transit module as the kernel sees it: routes, declarations, the renewal job, the reference validator."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import click

from app import web
from modules import Job, JobContext, Module, NotificationCategory, ProblemType, Role, Template, TimePartitions, Title
from transit import api, config, demo, service

log = logging.getLogger("ihanoi.transit")


async def remind_renewals(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn, conn.transaction():
        sent = await service.remind_renewals(conn, config.of(ctx.settings))
    if sent:
        log.info("pass renewal reminders sent", extra={"count": sent})


async def flush_boardings(ctx: JobContext) -> None:
    async with ctx.pool.acquire() as conn:
        moved = await service.flush_boardings(conn, ctx.redis)
    if moved:
        log.debug("online boardings written", extra={"count": moved})


@click.group(help="Transit: the reference validator.")
def cli() -> None:
    pass


@cli.group("validator", help="A reference validator, run as a machine client (`ihanoi clients add` first).")
@click.option("--url", required=True, help="the backend's base URL")
@click.option("--client-id", required=True)
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the client's P-256 private key (PEM) whose public half was registered")
@click.option("--route", "route_id", required=True, type=int)
@click.option("--vehicle", required=True)
@click.option("--state", "state_file", default="validator-state.json", type=click.Path(dir_okay=False),
              help="where the tap log waits between runs; the codes it accepted are kept beside it, in "
                   "<state>.seen.log, so a restarted validator still refuses them")
@click.pass_context
def validator(ctx, url, client_id, key_file, route_id, vehicle, state_file) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from transit.validator import SeenStore, Validator

    with open(key_file, "rb") as f:
        key = load_pem_private_key(f.read(), None)
    ctx.obj = {"validator": Validator(client_id=client_id, private_key=key, base_url=url.rstrip("/"),
                                      vehicle=vehicle, route_id=route_id), "url": url.rstrip("/"),
               "state": Path(state_file)}
    memory = SeenStore(Path(state_file + ".seen.log"))
    ctx.call_on_close(memory.close)
    ctx.obj["validator"].restore(ctx.obj["state"], memory)


@validator.command("run", help="Sync, then read codes (base64 or hex, one a line) from stdin; upload at the end.")
@click.pass_obj
def run(obj) -> None:
    import sys

    import httpx

    async def work() -> None:
        v = obj["validator"]
        async with httpx.AsyncClient(base_url=obj["url"], timeout=10) as http:
            try:
                await v.sync(http)
            except httpx.HTTPError as exc:
                click.echo(f"offline: {exc}; using no keys", err=True)
            for line in sys.stdin:
                text = line.strip()
                if not text:
                    continue
                try:
                    data = bytes.fromhex(text)
                except ValueError:
                    try:
                        data = base64.b64decode(text + "=" * (-len(text) % 4))
                    except ValueError:
                        data = b""
                accepted, reason = v.scan(data)
                click.echo("ACCEPT" if accepted else f"REFUSE {reason}")
            v.save(obj["state"])
            try:
                for receipt in await v.upload(http):
                    click.echo(f"uploaded {receipt}")
            except httpx.HTTPError as exc:
                click.echo(f"upload later: {exc}", err=True)
            v.save(obj["state"])

    asyncio.run(work())


@cli.group("keys", help="The issuer keys that sign tickets (not the access-token keys: `ihanoi keys`).")
def keys() -> None:
    pass


@keys.command("rotate", help="A new issuer key signs from now; the signing ones verify for the overlap "
                             "(IHANOI_TRANSIT_KEY_OVERLAP_HOURS), so codes already on phones stay good.")
@click.pass_obj
def rotate_keys(obj) -> None:
    async def work(ctx: JobContext):
        from app.identity.crypto import Vault, load_master_key

        settings = ctx.settings
        ring = service.KeyRing(Vault(load_master_key(settings.master_key, env=settings.env,
                                                     data_dir=settings.data_path)))
        async with ctx.pool.acquire() as conn, conn.transaction():
            key_id, retired = await service.rotate(conn, ring, config.of(settings))
        return key_id, retired, ring.rows

    key_id, retired, rows = obj.run(work)
    click.echo(f"issuer key {key_id} signs from now")
    for row in rows:
        if row["id"] in retired:
            until = row["verify_until"].astimezone(web.CITY_TZ).isoformat(timespec="seconds")
            click.echo(f"issuer key {row['id']} retired: verifies codes until {until}")
    if not retired:
        click.echo("no key was signing before")
    click.echo("running servers sign with the new key within "
               f"{service.KeyRing.TTL:g} s; validators learn it at their next sync")


TEMPLATES = [
    Template("transit.pass_renewal", "Vé tháng sắp hết hạn",
             "{product_vi} của bạn hết hạn ngày {ends_vi}. Gia hạn trong ứng dụng để không bị gián đoạn.",
             "Your pass ends soon", "Your {product_en} ends on {ends_en}. Renew it in the app to keep riding."),
    Template("transit.application_decided", "Kết quả đăng ký đối tượng ưu tiên",
             "Đăng ký {category_vi} của bạn đã {outcome_vi}. {note}",
             "Your rider category application", "Your application as {category_en} was {outcome_en}. {note}"),
]

module = Module(
    name="transit",
    title=Title(vi="Vé xe buýt và metro", en="Bus and metro tickets"),
    icon="bus",
    routers=api.ROUTERS,
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="transit.renewal_reminders", run=remind_renewals, every_seconds=3600),
          Job(name="transit.flush_boardings", run=flush_boardings, every_seconds=1)],
    on_session_end=service.on_session_end,
    # a tap for every boarding: monthly partitions; past the retention (default none) a month is dropped
    partitions=[TimePartitions("transit_tap", "at", ahead=3, retention_setting="tap_retention_months",
                               expire="drop")],
    problems=[
        ProblemType("transit-pass-already-active", 409,
                    Title("Đã có vé cùng loại đang hiệu lực", "A pass of this kind is already active")),
        ProblemType("transit-not-refundable", 409, Title("Vé không được hoàn", "This ticket cannot be refunded")),
        ProblemType("transit-credential-unavailable", 409,
                    Title("Không thể cấp mã cho vé này", "No code can be issued for this ticket")),
    ],
    roles=[
        Role("transit_operator", Title("Nhân viên đơn vị vận tải", "Transit operator staff"), "record",
             "the operator's slug (e.g. hanoibus): decides its rider-category applications, sells paper tickets, "
             "revokes tickets, reads its own report and flags"),
        Role("transit_validator", Title("Máy soát vé", "Ticket validator"), "record",
             "the operator's slug: a machine client (validator or gate) that checks codes, syncs and uploads taps"),
    ],
    notification_categories=[NotificationCategory("transit", Title("Vé xe buýt và metro", "Bus and metro tickets"),
                                                  templates=TEMPLATES)],
    settings=config.SETTINGS,
    cli=cli,
    seed=demo.seed,
)
