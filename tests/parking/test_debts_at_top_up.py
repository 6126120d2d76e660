"""An owed parking fee is settled in the top-up's own transaction (payments.on_wallet_credited), through the
VNPay stand-in's IPN, with a receipt; a top-up too small leaves it owed; a failing subscriber never costs the
resident the credit; the 60 s job stays the safety net."""

from __future__ import annotations

from parking import service
from payments import service as payments_service
from tests.parking.support import (
    RESIDENT,
    admin,
    bearer,
    check_in,
    check_out,
    gate,
    make_lot,
    operator,
    topup,
)
from tests.payments.support import balance, control_ipn, pay_at_bank, start_topup


async def owing(client, conn, plate: str, times: int = 1):
    """A resident with a saved car and an empty wallet who parked `times` and owes for each."""
    op = await operator(conn)
    lot = (await make_lot(client, await admin(client, conn), op))["code"]
    gate_headers = await gate(client, conn, op)
    headers = await bearer(client, RESIDENT)
    saved = await client.post("/v1/parking/vehicles", json={"plate": plate, "vehicle": "car"}, headers=headers)
    assert saved.status_code == 201, saved.text
    sessions = []
    for _ in range(times):
        session = await check_in(client, gate_headers, lot, plate=plate)
        out = await check_out(client, gate_headers, lot, plate=plate)
        assert out["paid"] is False and out["debt_vnd"] == 25_000
        sessions.append(session["id"])
    return headers, lot, sessions


async def open_debts(conn, sessions: list[int]) -> int:
    return await conn.fetchval("SELECT count(*) FROM parking_debt WHERE session_id = ANY($1::bigint[]) "
                               "AND settled_at IS NULL", sessions)


async def test_a_top_up_settles_the_debts_at_once_with_a_receipt(client, conn):
    headers, lot, sessions = await owing(client, conn, "30M10001", times=2)
    assert await open_debts(conn, sessions) == 2
    order = await start_topup(client, headers, 100_000)
    back = await pay_at_bank(client, order["payment_url"])  # the stand-in sends the IPN, then redirects back
    assert back.status_code == 302
    # no job has run: the IPN's transaction credited the wallet and settled both debts
    assert await open_debts(conn, sessions) == 0
    assert await balance(client, headers) == 50_000
    for session_id in sessions:
        mine = (await client.get(f"/v1/parking/sessions/{session_id}", headers=headers)).json()
        assert mine["debt_vnd"] == 0 and mine["charged_vnd"] == 25_000
    debts = await conn.fetch("SELECT transaction_id FROM parking_debt WHERE session_id = ANY($1::bigint[])", sessions)
    for debt in debts:
        receipt = await client.get(f"/v1/payments/receipts/{debt['transaction_id']}", headers=headers)
        assert receipt.status_code == 200 and receipt.json()["reason"] == lot and receipt.json()["amount_vnd"] == 25_000
    inbox = (await client.get("/v1/notifications", headers=headers)).json()["items"]
    settled = [i for i in inbox if i["title"] == "Đã thanh toán phí gửi xe còn nợ"]
    assert len(settled) == 2
    assert {i["deep_link"] for i in settled} == {f"ihanoi://wallet/receipts/{d['transaction_id']}" for d in debts}
    # the ledger links each charge to its session, and reconciliation finds no gap
    assert await conn.fetchval("SELECT count(*) FROM parking_charge WHERE session_id = ANY($1::bigint[])",
                               sessions) == 2
    # a repeated IPN credits nothing and charges nothing again
    assert (await control_ipn(client, order["txn_ref"], times=2))[0]["RspCode"] == "02"
    assert await balance(client, headers) == 50_000


async def test_a_top_up_too_small_leaves_the_debt_owed_until_the_next(client, conn):
    headers, _, sessions = await owing(client, conn, "30M10002")
    await topup(client, headers, 10_000)
    assert await open_debts(conn, sessions) == 1 and await balance(client, headers) == 10_000
    assert await conn.fetchval("SELECT attempts FROM parking_debt WHERE session_id = $1", sessions[0]) == 1
    await topup(client, headers, 20_000)
    assert await open_debts(conn, sessions) == 0 and await balance(client, headers) == 5_000


async def test_a_failing_subscriber_never_costs_the_credit_and_the_job_settles_later(client, conn):
    headers, _, sessions = await owing(client, conn, "30M10003")
    calls = []

    async def broken(conn_, resident, transaction_id):
        calls.append(transaction_id)
        await conn_.execute("SELECT 1 / 0")  # a failing statement inside the subscriber's savepoint

    hooks = payments_service._wallet_credited
    saved = dict(hooks)
    hooks.clear()
    hooks["broken"] = broken  # parking's own hook off: the job must settle this one
    try:
        await topup(client, headers, 50_000)
    finally:
        hooks.clear()
        hooks.update(saved)
    assert calls and await balance(client, headers) == 50_000  # credited despite the subscriber
    status = await conn.fetchval("SELECT status FROM payment_topup WHERE transaction_id = $1", calls[0])
    assert status == "paid"
    assert await open_debts(conn, sessions) == 1
    assert (await service.settle_debts(client.app.state.pool))["settled"] >= 1
    assert await open_debts(conn, sessions) == 0 and await balance(client, headers) == 25_000
