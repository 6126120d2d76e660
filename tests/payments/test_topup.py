"""VNPay top-up through HTTP like the app, the browser and the gateway (the local stand-in): the signed URL,
the bank page, the IPN that credits once, the return URL that credits nothing, querydr reconciliation."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest

from payments import config, vnpay
from payments import service as payments_service
from tests.payments.support import (
    RESIDENT_A,
    RESIDENT_B,
    balance,
    bearer,
    control_ipn,
    key,
    ledger_counts,
    pay_at_bank,
    start_topup,
    topup,
)


@pytest.fixture
async def alice(client):
    return await bearer(client, RESIDENT_A)


async def test_the_payment_url_is_signed_as_vnpay_2_1_0_says(client, alice, settings):
    order = await start_topup(client, alice, 150_000)
    url = urlsplit(order["payment_url"])
    assert url.path == "/stand-in/vnpay/paymentv2/vpcpay.html"
    fields = dict(parse_qsl(url.query))
    assert fields["vnp_Version"] == "2.1.0" and fields["vnp_Command"] == "pay" and fields["vnp_CurrCode"] == "VND"
    assert fields["vnp_Amount"] == "15000000"  # x 100
    assert fields["vnp_TxnRef"] == order["txn_ref"] and order["status"] == "pending"
    created = dt.datetime.strptime(fields["vnp_CreateDate"], "%Y%m%d%H%M%S")
    expires = dt.datetime.strptime(fields["vnp_ExpireDate"], "%Y%m%d%H%M%S")
    assert expires - created == dt.timedelta(minutes=15)
    now_gmt7 = dt.datetime.now(dt.UTC).astimezone(vnpay.GMT7).replace(tzinfo=None)
    assert abs((now_gmt7 - created).total_seconds()) < 60  # GMT+7, not UTC
    # the hash: HMAC-SHA512 over the sorted, URL-encoded fields without the hash itself
    import hashlib
    import hmac
    from urllib.parse import quote_plus

    given = fields.pop("vnp_SecureHash")
    text = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(fields.items()))
    assert given == hmac.new(config.DEV_SECRET.encode(), text.encode(), hashlib.sha512).hexdigest()
    # a tampered URL is refused by the bank page
    forged = order["payment_url"].replace("vnp_Amount=15000000", "vnp_Amount=100")
    assert (await client.get(forged)).status_code == 400


async def test_approved_top_up_credits_once_through_the_ipn(client, conn, alice):
    order = await topup(client, alice, 200_000)
    assert await balance(client, alice) == 200_000
    state = (await client.get(f"/v1/payments/topups/{order['txn_ref']}", headers=alice)).json()
    assert state["status"] == "paid" and state["transaction_id"]
    # the IPN again, three times, later: 02 each time, still credited once
    answers = await control_ipn(client, order["txn_ref"], times=3)
    assert answers == [{"RspCode": "02", "Message": "Order already confirmed"}] * 3
    assert await balance(client, alice) == 200_000
    inbox = (await client.get("/v1/notifications", headers=alice | {"Accept-Language": "en"})).json()["items"]
    assert [i["title"] for i in inbox if i["category"] == "payments"] == ["Top-up received"]
    receipt = (await client.get(f"/v1/payments/receipts/{state['transaction_id']}", headers=alice)).json()
    assert receipt["kind"] == "topup" and receipt["wallet_change_vnd"] == 200_000
    assert receipt["created_at"].endswith("+07:00")
    assert (await payments_service.audit(conn)).ok


async def test_the_return_url_shows_but_never_credits(client, alice):
    order = await start_topup(client, alice, 50_000)
    back = await pay_at_bank(client, order["payment_url"], "approve-hold")  # paid, IPN held back
    assert back.status_code == 302
    location = urlsplit(back.headers["location"])
    shown = (await client.get(location.path, params=dict(parse_qsl(location.query)))).json()
    assert shown["signature_valid"] and shown["gateway_response_code"] == "00"
    assert shown["status"] == "pending"  # our order, not the URL's claim
    assert await balance(client, alice) == 0
    # a forged return URL shows nothing of the order
    forged = dict(parse_qsl(location.query)) | {"vnp_Amount": "999999900"}
    view = (await client.get(location.path, params=forged)).json()
    assert view == {"txn_ref": None, "signature_valid": False, "gateway_response_code": None,
                    "gateway_message": "Chữ ký không hợp lệ", "status": None, "amount_vnd": None, "balance_vnd": None}
    # the late IPN credits
    assert await control_ipn(client, order["txn_ref"]) == [{"RspCode": "00", "Message": "Confirm Success"}]
    assert await balance(client, alice) == 50_000


@pytest.mark.parametrize("decision, code", [("decline", "51"), ("cancel", "24")])
async def test_declined_or_cancelled_top_up_credits_nothing(client, alice, decision, code):
    order = await topup(client, alice, 80_000, decision)
    state = (await client.get(f"/v1/payments/topups/{order['txn_ref']}", headers=alice)).json()
    assert (state["status"], state["response_code"], state["transaction_id"]) == ("failed", code, None)
    assert await balance(client, alice) == 0
    assert await control_ipn(client, order["txn_ref"]) == [{"RspCode": "02", "Message": "Order already confirmed"}]


async def test_forged_missing_hash_wrong_amount_unknown_order(client, conn, alice):
    order = await start_topup(client, alice, 120_000)
    await pay_at_bank(client, order["payment_url"], "approve-hold")
    before = await ledger_counts(conn)
    assert await control_ipn(client, order["txn_ref"], tamper="hash") == [
        {"RspCode": "97", "Message": "Invalid signature"}]
    assert await control_ipn(client, order["txn_ref"], tamper="missing-hash") == [
        {"RspCode": "97", "Message": "Invalid signature"}]
    assert await control_ipn(client, order["txn_ref"], tamper="amount") == [
        {"RspCode": "04", "Message": "Invalid amount"}]
    assert await control_ipn(client, "NOSUCHORDER123") == [{"RspCode": "01", "Message": "Order not found"}]
    assert await ledger_counts(conn) == before
    assert (await client.get(f"/v1/payments/topups/{order['txn_ref']}", headers=alice)).json()["status"] == "pending"
    # a bare GET with nothing at all
    assert (await client.get("/v1/payments/vnpay/ipn")).json() == {"RspCode": "97", "Message": "Invalid signature"}
    # the genuine one still credits, once
    assert await control_ipn(client, order["txn_ref"], times=2) == [
        {"RspCode": "00", "Message": "Confirm Success"}, {"RspCode": "02", "Message": "Order already confirmed"}]
    assert await balance(client, alice) == 120_000


async def test_reordered_ipns_credit_once(client, alice):
    first = await start_topup(client, alice, 30_000)
    second = await start_topup(client, alice, 40_000)
    await pay_at_bank(client, first["payment_url"], "approve-hold")
    await pay_at_bank(client, second["payment_url"], "approve-hold")
    # the second order's IPN before the first's, and an earlier attempt's failure after the success
    assert (await control_ipn(client, second["txn_ref"]))[0]["RspCode"] == "00"
    assert (await control_ipn(client, first["txn_ref"]))[0]["RspCode"] == "00"
    assert (await control_ipn(client, first["txn_ref"], response_code="24"))[0]["RspCode"] == "02"
    assert (await control_ipn(client, second["txn_ref"], times=2)) == [
        {"RspCode": "02", "Message": "Order already confirmed"}] * 2
    assert await balance(client, alice) == 70_000
    history = (await client.get("/v1/payments/wallet/history", headers=alice)).json()["items"]
    assert sorted(i["amount_vnd"] for i in history) == [30_000, 40_000]


@pytest.mark.parametrize("amount, status, slug", [
    (0, 422, "amount-invalid"), (-10_000, 422, "amount-invalid"), (9_999, 422, "amount-invalid"),
    (5_000_001, 422, "amount-invalid"), (10**15, 422, "amount-invalid"), (10_000.5, 400, "validation-error"),
    ("10000.5", 400, "validation-error"), (None, 400, "validation-error"), ({"vnd": 1}, 400, "validation-error"),
])
async def test_bad_top_up_amounts_are_named(client, conn, alice, amount, status, slug):
    before = await ledger_counts(conn)
    response = await client.post("/v1/payments/topups", json={"amount_vnd": amount}, headers=alice | key())
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["type"] == f"urn:ihanoi:problem:{slug}"
    assert problem["errors"][0]["field"] == "amount_vnd"
    assert await ledger_counts(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM payment_topup") == 0


async def test_top_up_needs_a_key_and_a_level_2_sign_in_and_respects_the_cap(client, alice):
    missing = await client.post("/v1/payments/topups", json={"amount_vnd": 100_000}, headers=alice)
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "Idempotency-Key"
    level1 = await bearer(client, RESIDENT_B, level=1)
    assert (await client.post("/v1/payments/topups", json={"amount_vnd": 100_000},
                              headers=level1 | key())).status_code == 403
    # the cap (10,000,000) counts what is held and what is pending
    for _ in range(2):
        await topup(client, alice, 5_000_000)
    pending = await client.post("/v1/payments/topups", json={"amount_vnd": 10_000}, headers=alice | key())
    assert pending.status_code == 422 and pending.json()["type"].endswith("wallet-cap-exceeded")
    assert pending.json()["extra"] == {"cap_vnd": 10_000_000, "room_vnd": 0}
    # a retried request gets its first answer, not a second order
    headers = await bearer(client, RESIDENT_B) | key()
    one = await client.post("/v1/payments/topups", json={"amount_vnd": 20_000}, headers=headers)
    two = await client.post("/v1/payments/topups", json={"amount_vnd": 20_000}, headers=headers)
    assert one.json()["txn_ref"] == two.json()["txn_ref"] and two.headers["idempotent-replayed"] == "true"


async def test_a_resident_sees_only_their_own_top_up(client, alice):
    order = await start_topup(client, alice, 20_000)
    bob = await bearer(client, RESIDENT_B)
    assert (await client.get(f"/v1/payments/topups/{order['txn_ref']}", headers=bob)).status_code == 404


async def test_reconciliation_asks_the_gateway_when_no_ipn_came(make_client, settings, conn, redis):
    import httpx

    configured = msgspec.structs.replace(settings, environ={**settings.environ,
                                                            "IHANOI_PAYMENTS_RECONCILE_AFTER": "0",
                                                            "IHANOI_VNPAY_EXPIRE_MINUTES": "1"})
    async with make_client(configured) as client:
        alice = await bearer(client, RESIDENT_A)
        paid = await start_topup(client, alice, 60_000)
        await pay_at_bank(client, paid["payment_url"], "approve-hold")
        declined = await start_topup(client, alice, 70_000)
        await pay_at_bank(client, declined["payment_url"], "approve-hold")
        # the bank recorded a decline for this one (its IPN is lost too)
        key_name = redis.key("stand-in", "vnpay", "txn", declined["txn_ref"])
        import json

        record = json.loads(await redis.client.get(key_name)) | {"response_code": "24", "transaction_status": "02"}
        await redis.client.set(key_name, json.dumps(record))
        abandoned = await start_topup(client, alice, 10_000)  # never paid at the bank
        merchant = config.merchant(configured)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app),
                                     base_url=configured.base_url()) as http:
            counts = await payments_service.reconcile(client.app.state.pool, merchant, http)
            assert counts == {"checked": 3, "paid": 1, "failed": 1, "expired": 0}
            states = {o["txn_ref"]: (await client.get(f"/v1/payments/topups/{o['txn_ref']}", headers=alice)).json()
                      for o in (paid, declined, abandoned)}
            assert states[paid["txn_ref"]]["status"] == "paid"
            assert states[declined["txn_ref"]]["status"] == "failed"
            assert states[abandoned["txn_ref"]]["status"] == "pending"  # may still be paid until it expires
            assert await balance(client, alice) == 60_000
            # the late IPN after querydr settled it: 02, still credited once
            assert (await control_ipn(client, paid["txn_ref"]))[0]["RspCode"] == "02"
            assert await balance(client, alice) == 60_000
            # once the URL has expired and the gateway never saw a payment, the order expires
            await conn.execute("UPDATE payment_topup SET expires_at = now() - interval '1 second', checked_at = NULL "
                               "WHERE txn_ref = $1", abandoned["txn_ref"])
            assert (await payments_service.reconcile(client.app.state.pool, merchant, http))["expired"] == 1
        settled_by = await conn.fetch("SELECT txn_ref, settled_by FROM payment_topup ORDER BY id")
        assert [r["settled_by"] for r in settled_by] == ["querydr", "querydr", "expiry"]


async def test_the_secret_is_never_logged(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    order = await topup(client, alice, 30_000)
    await control_ipn(client, order["txn_ref"], tamper="amount")
    await control_ipn(client, order["txn_ref"], tamper="hash")
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert config.DEV_SECRET not in text
    assert config.DEV_SECRET not in repr(client.app.state.settings.of("payments"))
    assert config.DEV_SECRET not in repr(config.merchant(client.app.state.settings))
