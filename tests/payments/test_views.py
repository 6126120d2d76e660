"""What residents, operators and the treasury see over HTTP: history, statements, receipts, settlement,
CSV, remittances, and that each sees only their own."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

import payments
from app import web
from tests.payments.support import (
    ADMIN,
    FINANCE_A,
    FINANCE_B,
    RESIDENT_A,
    RESIDENT_B,
    TREASURER,
    bearer,
    grant,
    key,
    resident_id,
    topup,
)


@pytest.fixture
async def world(client, conn):
    """Two operators, a resident with 500,000 VND charged a few times at the first, finance staff of each."""
    await grant(client, conn, ADMIN, "admin")
    admin = await bearer(client, ADMIN)
    for slug, kind, fee in (("trong-xe-ha-noi", "parking", 200), ("hanoibus", "transit", 0)):
        made = await client.put(f"/v1/payments/operators/{slug}", json={"name": f"Đơn vị {slug}", "kind": kind,
                                                                        "fee_bps": fee}, headers=admin)
        assert made.status_code == 200, made.text
    await grant(client, conn, FINANCE_A, "operator_finance", "trong-xe-ha-noi")
    await grant(client, conn, FINANCE_B, "operator_finance", "hanoibus")
    await grant(client, conn, TREASURER, "treasury")
    alice = await bearer(client, RESIDENT_A)
    await topup(client, alice, 500_000)
    payer = await resident_id(client, conn, RESIDENT_A)
    charges = []
    for n, (amount, reason) in enumerate([(25_000, "lot:hang-bac"), (35_000, "lot:hang-bac"),
                                          (5_000, "lot:ly-thai-to"), (12_000, "lot:hang-bac")]):
        charges.append(await payments.charge(conn, payer, "trong-xe-ha-noi", amount, reason, f"session:{n}"))
    await payments.charge(conn, payer, "hanoibus", 200_000, "monthly-pass", "pass:1")
    return {"alice": alice, "bob": await bearer(client, RESIDENT_B), "admin": admin, "charges": charges,
            "finance_a": await bearer(client, FINANCE_A), "finance_b": await bearer(client, FINANCE_B),
            "treasurer": await bearer(client, TREASURER)}


async def test_history_pages_by_cursor_newest_first(client, world):
    seen, cursor = [], None
    while True:
        page = (await client.get("/v1/payments/wallet/history", params={"limit": 2, **({"cursor": cursor} if cursor
                                                                                      else {})},
                                 headers=world["alice"])).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i["amount_vnd"] for i in seen] == [-200_000, -12_000, -5_000, -35_000, -25_000, 500_000]
    assert seen[0]["operator"] == "hanoibus" and seen[0]["reason"] == "monthly-pass"
    bad = await client.get("/v1/payments/wallet/history", params={"cursor": "not-a-cursor"}, headers=world["alice"])
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"
    assert (await client.get("/v1/payments/wallet", headers=world["alice"])).json() == {
        "balance_vnd": 223_000, "cap_vnd": 10_000_000, "currency": "VND"}
    # another resident sees an empty wallet, not Alice's
    assert (await client.get("/v1/payments/wallet/history", headers=world["bob"])).json() == {
        "items": [], "next_cursor": None}


async def test_receipts_are_the_owners_only(client, world):
    charge = world["charges"][0]
    mine = await client.get(f"/v1/payments/receipts/{charge.transaction_id}", headers=world["alice"])
    assert mine.status_code == 200
    body = mine.json()
    assert (body["amount_vnd"], body["wallet_change_vnd"], body["operator_name"]) == (
        25_000, -25_000, "Đơn vị trong-xe-ha-noi")
    assert body["receipt_no"].startswith("HN") and body["created_at"].endswith("+07:00")
    theirs = await client.get(f"/v1/payments/receipts/{charge.transaction_id}", headers=world["bob"])
    assert theirs.status_code == 404
    assert (await client.get("/v1/payments/receipts/0", headers=world["alice"])).status_code == 400


async def test_statement_months_are_hanoi_months(client, conn, world):
    now = web.local(dt.datetime.now(dt.UTC))
    month = f"{now:%Y-%m}"
    statement = (await client.get(f"/v1/payments/statements/{month}", headers=world["alice"])).json()
    assert (statement["opening_balance_vnd"], statement["credits_vnd"], statement["debits_vnd"],
            statement["closing_balance_vnd"]) == (0, 500_000, 277_000, 223_000)
    assert statement["starts_at"] == f"{month}-01T00:00:00+07:00"
    # a charge at 00:30 on the 1st in Hanoi (17:30 UTC the day before) belongs to the new month
    charge = world["charges"][0].transaction_id
    first_local = dt.datetime(now.year, now.month, 1, 0, 30, tzinfo=web.CITY_TZ)
    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the pending balance checks before the ALTER
    await conn.execute("ALTER TABLE payment_transaction DISABLE TRIGGER payment_transaction_append_only")
    await conn.execute("UPDATE payment_transaction SET created_at = $2 WHERE id = $1", charge, first_local)
    await conn.execute("UPDATE payment_transaction SET created_at = $1::timestamptz - interval '1 hour' "
                       "WHERE kind = 'topup'", first_local)
    await conn.execute("ALTER TABLE payment_transaction ENABLE TRIGGER payment_transaction_append_only")
    # an entry is booked at its transaction's time (the partition key statements read by): moved with it
    await conn.execute("ALTER TABLE payment_entry DISABLE TRIGGER payment_entry_append_only")
    await conn.execute("UPDATE payment_entry e SET booked_at = t.created_at FROM payment_transaction t "
                       "WHERE t.id = e.transaction_id AND e.booked_at <> t.created_at")
    await conn.execute("ALTER TABLE payment_entry ENABLE TRIGGER payment_entry_append_only")
    previous = f"{(first_local - dt.timedelta(days=1)):%Y-%m}"
    before = (await client.get(f"/v1/payments/statements/{previous}", headers=world["alice"])).json()
    assert [line["amount_vnd"] for line in before["lines"]] == [500_000]
    after = (await client.get(f"/v1/payments/statements/{month}", headers=world["alice"])).json()
    assert after["opening_balance_vnd"] == 500_000 and after["lines"][0]["transaction_id"] == charge
    assert after["lines"][0]["created_at"] == first_local.isoformat()
    for bad in ("2026-13", "26-01", "2026-1", "abcd-ef"):
        response = await client.get(f"/v1/payments/statements/{bad}", headers=world["alice"])
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == "month"


async def test_settlement_per_day_and_lot_and_its_csv_for_the_operator_only(client, world):
    today = web.local(dt.datetime.now(dt.UTC)).date().isoformat()
    params = {"from": today, "to": today}
    url = "/v1/payments/operators/trong-xe-ha-noi/settlement"
    view = (await client.get(url, params=params, headers=world["finance_a"])).json()
    rows = {r["reason"]: r for r in view["rows"]}
    assert rows["lot:hang-bac"] == {"day": today, "reason": "lot:hang-bac", "charges": 3, "collected_vnd": 72_000,
                                    "refunds": 0, "refunded_vnd": 0, "fees_vnd": 1_440, "net_vnd": 70_560}
    assert rows["lot:ly-thai-to"]["fees_vnd"] == 100
    assert (view["collected_vnd"], view["fees_vnd"], view["net_vnd"], view["outstanding_vnd"]) == (
        77_000, 1_540, 75_460, 75_460)
    csv_response = await client.get(url + ".csv", params=params, headers=world["finance_a"])
    assert csv_response.status_code == 200 and csv_response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(csv_response.text)))
    assert table[0] == ["day", "operator", "product", "charges", "collected_vnd", "refunds", "refunded_vnd",
                        "fees_vnd", "net_vnd"]
    assert table[-1] == ["total", "trong-xe-ha-noi", "", "4", "77000", "0", "0", "1540", "75460"]
    # another operator's finance staff, a resident and no sign-in are refused; the treasury may look
    assert (await client.get(url, params=params, headers=world["finance_b"])).status_code == 403
    assert (await client.get(url + ".csv", params=params, headers=world["finance_b"])).status_code == 403
    assert (await client.get(url, params=params, headers=world["alice"])).status_code == 403
    assert (await client.get(url, params=params)).status_code == 401
    assert (await client.get(url, params=params, headers=world["treasurer"])).status_code == 200
    backwards = await client.get(url, params={"from": today, "to": "2020-01-01"}, headers=world["finance_a"])
    assert backwards.status_code == 400 and backwards.json()["errors"][0]["field"] == "to"


async def test_operator_refund_over_http(client, conn, world):
    charge = world["charges"][1]  # 35,000 at 2 %: fee 700
    url = f"/v1/payments/operators/trong-xe-ha-noi/charges/{charge.transaction_id}/refund"
    headers = world["finance_a"] | key()
    refunded = await client.post(url, json={"amount_vnd": 10_000}, headers=headers)
    assert refunded.status_code == 201, refunded.text
    assert (refunded.json()["amount_vnd"], refunded.json()["fee_vnd"]) == (10_000, 200)
    again = await client.post(url, json={"amount_vnd": 10_000}, headers=headers)
    assert again.json() == refunded.json() and again.headers["idempotent-replayed"] == "true"
    too_much = await client.post(url, json={"amount_vnd": 25_001}, headers=world["finance_a"] | key())
    assert too_much.status_code == 422 and too_much.json()["type"].endswith("amount-invalid")
    other = await client.post(url, json={}, headers=world["finance_b"] | key())
    assert other.status_code == 403
    wrong_operator = f"/v1/payments/operators/hanoibus/charges/{charge.transaction_id}/refund"
    assert (await client.post(wrong_operator, json={}, headers=world["finance_b"] | key())).status_code == 404
    assert (await client.get("/v1/payments/wallet", headers=world["alice"])).json()["balance_vnd"] == 233_000
    inbox = (await client.get("/v1/notifications", headers=world["alice"])).json()["items"]
    assert any(i["title"] == "Hoàn tiền vào ví" for i in inbox)


async def test_remittance_is_a_ledger_transaction_and_the_city_sees_what_is_not_remitted(client, conn, world):
    view = (await client.get("/v1/payments/treasury", headers=world["treasurer"])).json()
    # (other tests of the run may have committed operators of their own: only these two are compared)
    outstanding = {o["operator"]: o["outstanding_vnd"] for o in view["operators"]}
    assert (outstanding["trong-xe-ha-noi"], outstanding["hanoibus"]) == (75_460, 200_000)
    assert view["outstanding_vnd"] == sum(outstanding.values())
    assert view["in_clearing_vnd"] == view["outstanding_vnd"] + view["remitted_vnd"] + view["fees_vnd"] + sum(
        r["balance_vnd"] for r in await conn.fetch("SELECT balance_vnd FROM payment_account WHERE kind = 'wallet'"))
    remitted_before = view["remitted_vnd"]
    url = "/v1/payments/operators/trong-xe-ha-noi/remittances"
    remitted = await client.post(url, json={"amount_vnd": 70_000, "reference": "KBNN-2026-0001"},
                                 headers=world["treasurer"] | key())
    assert remitted.status_code == 201, remitted.text
    entries = await conn.fetch("SELECT account_id, amount_vnd FROM payment_entry WHERE transaction_id = $1 "
                               "ORDER BY account_id", remitted.json()["transaction_id"])
    assert [e["amount_vnd"] for e in entries] == [70_000, -70_000]  # treasury +, operator -
    too_much = await client.post(url, json={"amount_vnd": 5_461, "reference": "KBNN-2"},
                                 headers=world["treasurer"] | key())
    assert too_much.status_code == 422 and too_much.json()["errors"][0]["field"] == "amount_vnd"
    for amount in (0, -1):
        bad = await client.post(url, json={"amount_vnd": amount, "reference": "x"}, headers=world["treasurer"] | key())
        assert bad.status_code == 422
    assert (await client.post(url, json={"amount_vnd": 1, "reference": "x"},
                              headers=world["finance_a"] | key())).status_code == 403
    view = (await client.get("/v1/payments/treasury", headers=world["treasurer"])).json()
    assert {o["operator"]: o["outstanding_vnd"] for o in view["operators"]}["trong-xe-ha-noi"] == 5_460
    assert view["remitted_vnd"] == remitted_before + 70_000
    listed = (await client.get(url, headers=world["finance_a"])).json()["items"]
    assert [(r["amount_vnd"], r["reference"]) for r in listed] == [(70_000, "KBNN-2026-0001")]
    assert (await client.get(url, headers=world["finance_b"])).status_code == 403
    assert (await client.get("/v1/payments/treasury", headers=world["finance_a"])).status_code == 403
    audit = (await client.get("/v1/payments/treasury/audit", headers=world["treasurer"])).json()
    assert audit["ok"] and audit["entries_total_vnd"] == 0 and audit["balances_total_vnd"] == 0


async def test_operators_are_managed_by_admins_with_checked_input(client, world):
    put = "/v1/payments/operators/"
    assert (await client.put(put + "xe-buyt-moi", json={"name": "X", "kind": "transit"},
                             headers=world["treasurer"])).status_code == 403
    for slug, body in (("Bad_Slug", {"name": "X", "kind": "transit"}), ("ok-slug", {"name": "X", "kind": "taxi"}),
                       ("ok-slug", {"name": "", "kind": "transit"}),
                       ("ok-slug", {"name": "X", "kind": "transit", "fee_bps": 10_001})):
        response = await client.put(put + slug, json=body, headers=world["admin"])
        assert response.status_code == 400, (slug, body, response.text)
        assert response.json()["errors"]
