"""Helpers shared by the payments tests: residents, operators, and a VNPay top-up driven like a browser."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

from app.identity import service as identity
from payments import service
from tests.feedback.support import bearer, grant  # noqa: F401 - re-exported for the payments tests

RESIDENT_A, RESIDENT_B = "001090012345", "001190054321"
FINANCE_A, FINANCE_B, TREASURER, ADMIN = "001192034567", "001085011111", "001175022222", "001080033333"


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def resident_id(client, conn, personal_id: str) -> uuid.UUID:
    row = await identity.resident_for_personal_id(client.app.state.identity, conn, personal_id, create=True)
    return row["id"]


async def operator(conn, slug: str | None = None, *, kind: str = "parking", fee_bps: int = 0) -> str:
    slug = slug or f"op-{uuid.uuid4().hex[:8]}"
    await service.ensure_operator(conn, slug, f"Công ty {slug}", kind, fee_bps)
    return slug


async def ledger_counts(conn) -> tuple[int, int, int]:
    """Transactions, entries and the sum of all balances: what 'the ledger is untouched' compares."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM payment_transaction) AS t, (SELECT count(*) FROM payment_entry) AS e, "
        "(SELECT coalesce(sum(abs(balance_vnd)), 0) FROM payment_account) AS b")
    return row["t"], row["e"], row["b"]


async def start_topup(client, headers, amount: int, **extra) -> dict:
    response = await client.post("/v1/payments/topups", json={"amount_vnd": amount, **extra}, headers=headers | key())
    assert response.status_code == 201, response.text
    return response.json()


async def pay_at_bank(client, payment_url: str, decision: str = "approve"):
    """Open the bank page as the browser would, press a button; returns the redirect back to our return URL."""
    url = urlsplit(payment_url)
    page = await client.get(url.path, params=dict(parse_qsl(url.query)))
    assert page.status_code == 200, page.text
    form = dict(parse_qsl(url.query)) | {"decision": decision}
    return await client.post("/stand-in/vnpay/pay", data=form)


async def topup(client, headers, amount: int, decision: str = "approve") -> dict:
    order = await start_topup(client, headers, amount)
    back = await pay_at_bank(client, order["payment_url"], decision)
    assert back.status_code == 302, back.text
    return order


async def control_ipn(client, txn_ref: str, **options) -> list[dict]:
    response = await client.post("/stand-in/vnpay/_control/ipn", json={"txn_ref": txn_ref, **options})
    assert response.status_code == 200, response.text
    return response.json()["answers"]


async def balance(client, headers) -> int:
    response = await client.get("/v1/payments/wallet", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["balance_vnd"]
