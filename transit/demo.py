"""Demo data for `ihanoi dev` / `ihanoi seed`: what a developer needs to try transit end to end.

Fares, operators and routes come with the migration. The seed adds, once (seeding twice creates nothing new):
- the two transit operators' ledger accounts (payments), so wallet purchases and kiosk cash sales post at once;
- a demo operator staff member: the stand-in's demo resident Trần Thị Bình holds transit_operator:hanoibus;
- for the demo resident Nguyễn Văn An: a family card for a child under 6, and an all-routes bus monthly pass
  for this month (a demo pass: nothing charged, amount 0, so no revenue is invented);
- a validator machine client, `demo-validator` (transit_validator:hanoibus), whose private key is written to
  the data directory for `ihanoi transit validator --key-file ...`.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import click

import payments
from app.errors import Conflict
from app.identity import service as identity
from app.identity.models import GrantRequest
from transit import store

RESIDENT = "001085012345"  # Nguyễn Văn An, the stand-in's first demo resident
STAFF = "001192034567"  # Trần Thị Bình
CHILD = ("Nguyễn Minh Khôi", dt.date(2022, 5, 9))
PASS = "bus-monthly-network"
VALIDATOR = "demo-validator"
KEY_FILE = "transit-demo-validator.pem"


def _runtime(vault=None, data_dir: Path | None = None):
    """What the identity service functions need here: the vault of the deployment the seed runs in."""
    from app.identity.crypto import Vault, load_master_key
    from app.settings import load_settings

    # `ihanoi --data-dir X seed|dev`: the data folder (and so a dev master key) the command was given
    context = click.get_current_context(silent=True)
    root = context.find_root().obj if context is not None else None
    given = root.get("data_dir") if isinstance(root, dict) else None
    settings = load_settings(**({"data_dir": given} if given else {}))
    if vault is None:
        vault = Vault(load_master_key(settings.master_key, env=settings.env, data_dir=settings.data_path))
    return SimpleNamespace(vault=vault, units={}), data_dir or settings.data_path


async def seed(conn: asyncpg.Connection, progress: Callable[[str], None], *, vault=None,
               data_dir: Path | None = None) -> Mapping[str, int]:
    rt, data_dir = _runtime(vault, data_dir)
    for operator in await store.operators(conn):
        await payments.ensure_operator(conn, operator["slug"], operator["name"], "transit")

    staff = await identity.resident_for_personal_id(rt, conn, STAFF, create=True)
    _, granted = await identity.grant_role(rt, conn, actor="seed", resident_id=staff["id"], request=GrantRequest(
        resident_id=str(staff["id"]), role="transit_operator", scope="hanoibus"), request_id=None)

    resident = (await identity.resident_for_personal_id(rt, conn, RESIDENT, create=True))["id"]
    cards = 0
    if not any(c["holder_name"] == CHILD[0] for c in await store.cards_of(conn, resident)):
        await store.insert_card(conn, resident, *CHILD)
        cards = 1
    passes = 0
    key = f"demo:{resident}:{PASS}"
    if await store.ticket_by_key(conn, key) is None:
        product = await conn.fetchrow("SELECT id, operator_slug, kind FROM transit_fare_product WHERE product_id = $1 "
                                      "AND rider_category_id = 'regular' AND effective_to IS NULL", PASS)
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        await store.insert_ticket(conn, resident_id=resident, operator_slug=product["operator_slug"],
                                  fare_product_id=product["id"], kind=product["kind"], route_id=None,
                                  rider_category_id="regular", amount_vnd=0, charge_id=None, valid_from=start,
                                  valid_until=start + dt.timedelta(days=30), paper=False, idempotency_key=key)
        passes = 1

    clients = await _validator_client(conn, data_dir)
    progress(f"{int(granted)} staff grant, {cards} family card, {passes} monthly pass, {clients} validator client"
             + (f" (key in {data_dir / KEY_FILE})" if clients else ""))
    return {"staff": int(granted), "cards": cards, "passes": passes, "validators": clients}


async def _validator_client(conn: asyncpg.Connection, data_dir: Path) -> int:
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    temporary = _write_private(data_dir, pem)  # first, so a registered client always has its key on disk
    try:
        async with conn.transaction():
            await identity.add_client(conn, client_id=VALIDATOR, name="Máy soát vé mẫu / demo validator",
                                      roles=["transit_validator:hanoibus"], scope="tickets",
                                      public_jwk=json.loads(ECAlgorithm.to_jwk(private.public_key())))
    except Conflict:
        os.unlink(temporary)
        return 0  # seeded before: its key file is where that seed wrote it
    os.replace(temporary, data_dir / KEY_FILE)
    return 1


def _write_private(data_dir: Path, pem: bytes) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f"{KEY_FILE}.{uuid.uuid4().hex[:6]}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return temporary
