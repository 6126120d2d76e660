"""`ihanoi health ...`: register facilities, list them, check access log chains."""

from __future__ import annotations

import uuid

import click

from modules import JobContext


@click.group(help="Health: facilities and the access log.")
def cli() -> None:
    pass


@cli.command("add-facility", help="Register a facility (its system then gets a machine client holding "
                                  "health_facility:<code>: `ihanoi clients add`).")
@click.option("--code", required=True, help="lowercase slug, the scope of its roles, e.g. bach-mai")
@click.option("--name", required=True, help="its name, e.g. 'Bệnh viện Bạch Mai'")
@click.option("--kind", required=True,
              type=click.Choice(["hospital", "clinic", "health_station", "pharmacy", "laboratory", "other"]))
@click.option("--bhyt-code", required=True, help="its 5-digit BHYT facility code (mã cơ sở KCB)")
@click.pass_obj
def add_facility(obj, code: str, name: str, kind: str, bhyt_code: str) -> None:
    import msgspec

    from app.errors import DomainError
    from health import service
    from health.models import FacilityCreate

    try:
        body = msgspec.convert({"code": code, "name": name, "kind": kind, "bhyt_code": bhyt_code}, FacilityCreate)
    except msgspec.ValidationError as exc:
        raise click.UsageError(str(exc)) from None

    async def work(ctx: JobContext):
        async with ctx.pool.acquire() as conn:
            return await service.add_facility(conn, body)

    try:
        facility = obj.run(work)
    except DomainError as exc:
        raise click.ClickException(exc.detail or exc.slug) from None
    click.echo(f"facility {facility.code} ({facility.name}, {facility.kind}, BHYT {facility.bhyt_code}) added")


@cli.command("facilities", help="List the registered facilities.")
@click.pass_obj
def facilities(obj) -> None:
    from health import service

    async def work(ctx: JobContext):
        async with ctx.pool.acquire() as conn:
            return await service.list_facilities(conn)

    for facility in obj.run(work):
        click.echo(f"{facility.code}\t{facility.bhyt_code}\t{facility.kind}\t{facility.name}")


@cli.command("verify-log", help="Check every patient's access log chain (or one patient's); exit 1 on a break.")
@click.option("--patient", "patient_id", default=None, help="a Patient id")
@click.pass_obj
def verify_log(obj, patient_id: str | None) -> None:
    from health import store
    from health.crypto import cipher_of

    async def work(ctx: JobContext):
        cipher = cipher_of(ctx.settings)
        async with ctx.pool.acquire() as conn:
            ids = ([uuid.UUID(patient_id)] if patient_id else
                   [r["id"] for r in await conn.fetch("SELECT id FROM health_patient WHERE access_seq > 0")])
            return len(ids), [(p, seq) for p in ids if (seq := await store.verify_chain(conn, cipher, p)) is not None]

    checked, broken = obj.run(work)
    for patient, seq in broken:
        click.echo(f"BROKEN patient {patient} at row {seq}")
    click.echo(f"{checked} access log chains checked, {len(broken)} broken")
    if broken:
        raise SystemExit(1)
