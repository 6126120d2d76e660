"""A local VNPay gateway for dev and tests (mounted only when IHANOI_ENV is dev or test): no real bank.

- `GET  /stand-in/vnpay/paymentv2/vpcpay.html?vnp_...`: the bank page. It checks the merchant's signature and
  expiry like VNPay does, then offers Approve, Decline (51), Cancel (24) and "approve, hold the IPN".
- `POST /stand-in/vnpay/pay`: the resident's choice. The result is recorded (as the bank's own records, in
  Redis), the IPN is sent to the merchant as a server-to-server GET on `/v1/payments/vnpay/ipn` (through
  the app itself), and the browser is sent back to `vnp_ReturnUrl` with the signed result.
- `POST /stand-in/vnpay/merchant_webapi/api/transaction`: `querydr`, answered signed from those records.
- `POST /stand-in/vnpay/_control/ipn`: for tests, send a recorded result's IPN again: late, several times,
  in any order, or tampered (forged hash, missing hash, another amount, another result code).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import secrets
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, URLEncodedBody

from payments import config, vnpay

PREFIX = config.STAND_IN
IPN_PATH = "/v1/payments/vnpay/ipn"
KEEP_SECONDS = 7 * 24 * 3600

_PAGE = """<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>Cổng thanh toán (giả lập)</title>
</head><body><h1>Cổng thanh toán VNPay (giả lập, không có ngân hàng thật)</h1>
<p>Đơn hàng <b>{ref}</b>: {info}</p><p>Số tiền: <b>{amount} VND</b></p>
<form method="post" action="{action}">{hidden}
<button name="decision" value="approve">Thanh toán</button>
<button name="decision" value="decline">Từ chối (không đủ số dư)</button>
<button name="decision" value="cancel">Hủy giao dịch</button>
<button name="decision" value="approve-hold">Thanh toán, giữ IPN</button>
</form></body></html>"""


class ControlIpn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    txn_ref: str
    times: int = 1
    tamper: Literal["none", "hash", "missing-hash", "amount"] = "none"
    response_code: str | None = None  # an earlier attempt's result, e.g. "24", sent after the final one
    delay_ms: int = 0


def _secret(state: State) -> config.Merchant:
    return config.merchant(state.settings)


def _record_key(state: State, txn_ref: str) -> str:
    return state.redis.key("stand-in", "vnpay", "txn", txn_ref)


def _page(status: int, text: str) -> Response[str]:
    return Response(f"<!doctype html><html><body><p>{html.escape(text)}</p></body></html>", status_code=status,
                    media_type="text/html")


def _checked(merchant: config.Merchant, fields: dict[str, str]) -> str | None:
    """Why VNPay would refuse this payment request, or None."""
    if not vnpay.verify(merchant.secret, fields):
        return "Sai chữ ký (97)"
    if fields.get("vnp_TmnCode") != merchant.tmn_code or fields.get("vnp_Version") != vnpay.VERSION:
        return "Website chưa được phê duyệt (02)"
    try:
        if vnpay.parse_gmt7(fields["vnp_ExpireDate"]) < dt.datetime.now(dt.UTC):
            return "Giao dịch đã quá thời gian chờ thanh toán (11)"
    except (KeyError, ValueError):
        return "Dữ liệu gửi sang không đúng định dạng (03)"
    return None


@get("/paymentv2/vpcpay.html", include_in_schema=False)
async def bank_page(request: Request, state: State) -> Response[str]:
    fields = dict(request.query_params)
    refused = _checked(_secret(state), fields)
    if refused:
        return _page(400, refused)
    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    return Response(_PAGE.format(ref=html.escape(fields["vnp_TxnRef"]),
                                 info=html.escape(fields.get("vnp_OrderInfo", "")),
                                 amount=int(fields["vnp_Amount"]) // 100, action=PREFIX + "/pay", hidden=hidden),
                    media_type="text/html")


def _result_fields(record: dict[str, str], tmn_code: str) -> dict[str, str]:
    return {
        "vnp_TmnCode": tmn_code, "vnp_Amount": record["amount"], "vnp_BankCode": record["bank_code"],
        "vnp_BankTranNo": record["bank_tran_no"], "vnp_CardType": "ATM", "vnp_OrderInfo": record["order_info"],
        "vnp_PayDate": record["pay_date"], "vnp_ResponseCode": record["response_code"],
        "vnp_TransactionNo": record["transaction_no"], "vnp_TransactionStatus": record["transaction_status"],
        "vnp_TxnRef": record["txn_ref"],
    }


async def _deliver(request: Request, fields: dict[str, str]) -> dict[str, str]:
    """The IPN: a GET to the merchant's endpoint, through this very app, in a task of its own."""

    async def call() -> dict[str, str]:
        transport = httpx.ASGITransport(app=request.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://vnpay.stand-in") as client:
            response = await client.get(IPN_PATH, params=fields)
        try:
            return response.json()
        except ValueError:
            return {"RspCode": f"http-{response.status_code}", "Message": response.text[:200]}

    return await asyncio.create_task(call())


def _signed(merchant: config.Merchant, fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "vnp_SecureHash": vnpay.sign(merchant.secret, vnpay.canonical(fields))}


@post("/pay", include_in_schema=False, status_code=302)
async def pay(request: Request, state: State, data: URLEncodedBody[dict[str, str]]) -> Response[Any]:
    form = {k: (v if isinstance(v, str) else v[0]) for k, v in data.items()}
    decision = form.pop("decision", "")
    merchant = _secret(state)
    refused = _checked(merchant, form)
    if refused or decision not in ("approve", "decline", "cancel", "approve-hold"):
        return _page(400, refused or "unknown decision")
    codes = {"approve": ("00", "00"), "approve-hold": ("00", "00"), "decline": ("51", "02"), "cancel": ("24", "02")}
    response_code, transaction_status = codes[decision]
    record = {
        "txn_ref": form["vnp_TxnRef"], "amount": form["vnp_Amount"], "order_info": form.get("vnp_OrderInfo", ""),
        "bank_code": form.get("vnp_BankCode") or "NCB", "bank_tran_no": "VNP" + secrets.token_hex(5).upper(),
        "pay_date": vnpay.gmt7(dt.datetime.now(dt.UTC)), "response_code": response_code,
        "transaction_status": transaction_status, "transaction_no": str(10_000_000 + secrets.randbelow(89_999_999)),
    }
    key = _record_key(state, record["txn_ref"])
    if not await state.redis.client.set(key, json.dumps(record), ex=KEEP_SECONDS, nx=True):
        return _page(400, "Giao dịch đã được xử lý (đơn hàng đã thanh toán)")
    fields = _signed(merchant, _result_fields(record, merchant.tmn_code))
    if decision != "approve-hold":
        answer = await _deliver(request, fields)
        await state.redis.client.rpush(key + ":ipn", json.dumps(answer))
    return Response(None, status_code=302, headers={"Location": form["vnp_ReturnUrl"] + "?" + urlencode(fields)})


@post("/_control/ipn", include_in_schema=False, status_code=200)
async def control_ipn(request: Request, state: State, data: JSONBody[ControlIpn]) -> dict[str, list[dict[str, str]]]:
    raw = await state.redis.client.get(_record_key(state, data.txn_ref))
    merchant = _secret(state)
    if raw is None:  # never paid at the bank: an IPN for an order the bank does not know of
        record = {"txn_ref": data.txn_ref, "amount": "100000000", "order_info": "", "bank_code": "NCB",
                  "bank_tran_no": "", "pay_date": vnpay.gmt7(dt.datetime.now(dt.UTC)), "response_code": "00",
                  "transaction_status": "00", "transaction_no": "1"}
    else:
        record = json.loads(raw)
    fields = _result_fields(record, merchant.tmn_code)
    if data.response_code is not None:
        fields.update(vnp_ResponseCode=data.response_code, vnp_TransactionStatus="02")
    if data.tamper == "amount":  # another amount, correctly signed (a bug or a replay from another order)
        fields["vnp_Amount"] = str(int(fields["vnp_Amount"]) + 100_000)
    fields = _signed(merchant, fields)
    if data.tamper == "hash":
        fields["vnp_SecureHash"] = vnpay.sign("not-the-secret", vnpay.canonical(fields))
    elif data.tamper == "missing-hash":
        del fields["vnp_SecureHash"]
    answers = []
    for _ in range(max(1, min(data.times, 10))):
        if data.delay_ms:
            await asyncio.sleep(min(data.delay_ms, 10_000) / 1000)
        answers.append(await _deliver(request, fields))
    return {"answers": answers}


@post("/merchant_webapi/api/transaction", include_in_schema=False, status_code=200)
async def transaction_api(state: State, data: JSONBody[dict[str, Any]]) -> dict[str, str]:
    merchant = _secret(state)
    request = {k: str(v) for k, v in data.items()}
    base = {"vnp_ResponseId": secrets.token_hex(16), "vnp_Command": request.get("vnp_Command", ""),
            "vnp_TmnCode": merchant.tmn_code, "vnp_TxnRef": request.get("vnp_TxnRef", "")}

    def answer(fields: dict[str, str]) -> dict[str, str]:
        fields = {**base, **fields}
        fields["vnp_SecureHash"] = vnpay.sign_piped(merchant.secret, fields, vnpay.QUERYDR_RESPONSE_FIELDS)
        return fields

    if not vnpay.verify_piped(merchant.secret, request, vnpay.QUERYDR_REQUEST_FIELDS):
        return answer({"vnp_ResponseCode": "97", "vnp_Message": "Invalid Checksum"})
    if request.get("vnp_Command") != "querydr" or request.get("vnp_TmnCode") != merchant.tmn_code:
        return answer({"vnp_ResponseCode": "02", "vnp_Message": "Merchant is not valid"})
    raw = await state.redis.client.get(_record_key(state, request.get("vnp_TxnRef", "")))
    if raw is None:
        return answer({"vnp_ResponseCode": "91", "vnp_Message": "Not found transaction"})
    record = json.loads(raw)
    return answer({"vnp_ResponseCode": "00", "vnp_Message": "QueryDR Success", "vnp_Amount": record["amount"],
                   "vnp_BankCode": record["bank_code"], "vnp_PayDate": record["pay_date"],
                   "vnp_TransactionNo": record["transaction_no"], "vnp_TransactionType": "01",
                   "vnp_TransactionStatus": record["transaction_status"], "vnp_OrderInfo": record["order_info"]})


def create_router(path: str = PREFIX) -> Router:
    return Router(path=path, route_handlers=[bank_page, pay, control_ipn, transaction_api], include_in_schema=False)
