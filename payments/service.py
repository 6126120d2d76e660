"""The rules of payments: who may move which money, once, and what each movement writes.

Every movement is one balanced ledger transaction (store.post), keyed by the caller's idempotency key
(unique per kind in the database, so a retried caller never moves money twice). Lock order, so that
concurrent postings queue instead of deadlocking: the resident's wallet first (`SELECT ... FOR UPDATE`),
then the house accounts in id order (store.post sorts them).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
import secrets
import unicodedata
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import msgspec

from app import web
from app.errors import Conflict, DomainError, Forbidden, IdempotencyKeyReused, InvalidInput, NotFound
from app.identity.models import Principal
from notifications import notify
from payments import store, vnpay
from payments.config import Merchant
from payments.models import (
    DISPLAY_NAME,
    Audit,
    History,
    IpnAnswer,
    Line,
    Operator,
    Outstanding,
    Posted,
    Receipt,
    Remittance,
    RemittanceList,
    ReturnView,
    Settlement,
    SettlementRow,
    Statement,
    Topup,
    TopupCreate,
    TreasuryView,
    Wallet,
)

log = logging.getLogger("ihanoi.payments")

# fixed ids of the house accounts (migration 001; cash: 002)
CLEARING, FEES, TREASURY = 1, 2, 3
CASH = 4
MAX_AMOUNT_VND = 1_000_000_000  # no single movement above a billion đồng
LOW_BALANCE_VND = 20_000  # a charge leaving less than this tells the resident (once per crossing)
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class InsufficientFunds(DomainError):
    """Not enough in the wallet: raised before anything is written (catch it to record a debt instead)."""

    slug = "insufficient-funds"


class WalletCapExceeded(DomainError):
    slug = "wallet-cap-exceeded"


class AmountInvalid(DomainError):
    slug = "amount-invalid"

    @classmethod
    def field(cls, message: str, field: str = "amount_vnd") -> AmountInvalid:
        from app.errors import FieldError

        return cls(message, errors=[FieldError(field=field, message=message, source="body")])


class WalletNotFound(DomainError):
    slug = "wallet-not-found"


# ---- other modules told when a wallet is credited ---------------------------------------------------------

# (conn, resident id, credit's ledger transaction id), awaited in the crediting transaction
WalletCredited = Callable[[asyncpg.Connection, uuid.UUID, int], Awaitable[object]]
_wallet_credited: dict[str, WalletCredited] = {}


def on_wallet_credited(name: str, hook: WalletCredited) -> None:
    """Call `hook` each time a top-up credits a wallet, in the same transaction, after the credit is posted (e.g.
    parking settles the resident's open debts at once). Registered once per name (a module's import)."""
    _wallet_credited[name] = hook


async def _credited(conn: asyncpg.Connection, resident: uuid.UUID, transaction_id: int) -> None:
    for name, hook in list(_wallet_credited.items()):
        try:
            async with conn.transaction():  # a savepoint: a subscriber's failure never undoes or blocks the credit
                await hook(conn, resident, transaction_id)
        except Exception:  # noqa: BLE001 - the credit stands; the subscriber's own job retries later
            log.exception("a wallet-credited subscriber failed", extra={"subscriber": name})


# ---- checks ----------------------------------------------------------------------------------------------------


def check_amount(value: object, *, low: int = 1, high: int = MAX_AMOUNT_VND, field: str = "amount_vnd") -> int:
    """Integer VND within [low, high]; anything else (zero, negative, fractional, oversized) is refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AmountInvalid.field("an amount is a whole number of đồng (integer VND)", field)
    if value <= 0:
        raise AmountInvalid.field("an amount must be positive", field)
    if value < low:
        raise AmountInvalid.field(f"at least {low} VND", field)
    if value > high:
        raise AmountInvalid.field(f"at most {high} VND", field)
    return value


def _resident(payer: object) -> uuid.UUID:
    try:
        return payer if isinstance(payer, uuid.UUID) else uuid.UUID(str(payer))
    except ValueError:
        raise InvalidInput.field("payer", "a resident id (UUID)") from None


def _key(key: object) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput.field("idempotency_key", "1-200 printable ASCII characters")
    return key


def _text(value: object, field: str, limit: int) -> str:
    text = unicodedata.normalize("NFC", str(value or "")).strip()
    if not text or len(text) > limit or not re.match(DISPLAY_NAME, text):
        raise InvalidInput.field(field, f"1-{limit} printable characters")
    return text


def _posted(row, kind: str, amount: int, fee: int, replayed: bool = False) -> Posted:
    return Posted(transaction_id=row["id"], kind=kind, amount_vnd=amount, fee_vnd=fee,  # type: ignore[arg-type]
                  created_at=web.local(row["created_at"]), replayed=replayed)


def _vnd_vi(amount: int) -> str:
    return f"{amount:,}".replace(",", ".")


def _replay(existing, *, resident: uuid.UUID | None, operator: str | None, amount: int | None) -> Posted:
    """The same key again: the first answer if it is the same request, else the key was misused."""
    if (existing["resident_id"] != resident or existing["operator_slug"] != operator
            or (amount is not None and existing["amount_vnd"] != amount)):
        raise IdempotencyKeyReused("this idempotency key already moved money for another request")
    return _posted(existing, existing["kind"], existing["amount_vnd"], existing["fee_vnd"], replayed=True)


# ---- the calls other modules make, in their own transaction -------------------------------------------------


async def charge(conn: asyncpg.Connection, payer: uuid.UUID | str, payee: str, amount_vnd: int, reason: str,
                 idempotency_key: str) -> Posted:
    """Move `amount_vnd` from the payer's wallet to the operator `payee`, for `reason` (the product or lot).

    In the caller's transaction; the same key never charges twice (the first charge is returned, marked
    `replayed`). `InsufficientFunds` (402) comes before any write, so the caller can catch it and go on.
    """
    resident = _resident(payer)
    amount = check_amount(amount_vnd)
    reason = _text(reason, "reason", 120)
    key = _key(idempotency_key)
    context = await store.charge_context(conn, resident, payee, key)
    if context["used"]:
        return _replay(await store.transaction_by_key(conn, "charge", key), resident=resident, operator=payee,
                       amount=amount)
    if context["operator_account"] is None:
        raise NotFound(f"no operator {payee!r}")
    if context["wallet_id"] is None:
        if not await store.resident_exists(conn, resident):
            raise WalletNotFound("no such resident")
        raise InsufficientFunds("the wallet is empty", balance_vnd=0, amount_vnd=amount, missing_vnd=amount)
    balance = context["balance_vnd"]
    if balance < amount:
        raise InsufficientFunds(f"the wallet holds {balance} VND, {amount} VND needed", balance_vnd=balance,
                                amount_vnd=amount, missing_vnd=amount - balance)
    fee = amount * context["fee_bps"] // 10_000
    row = await store.post(conn, kind="charge", key=key, amount=amount, fee=fee, resident_id=resident,
                           operator=payee, reason=reason, refund_of=None,
                           entries={context["wallet_id"]: -amount, context["operator_account"]: amount - fee,
                                    FEES: fee})
    if row is None:  # the same key committed by another transaction while this one waited for the wallet
        return _replay(await store.transaction_by_key(conn, "charge", key), resident=resident, operator=payee,
                       amount=amount)
    if balance >= LOW_BALANCE_VND > balance - amount:
        left = balance - amount
        await notify(conn, [resident], "payments.low_balance", {"balance_vi": _vnd_vi(left), "balance_en": f"{left:,}"},
                     category="payments", idempotency_key=f"payments:low:{row['id']}", deep_link="ihanoi://wallet")
    return _posted(row, "charge", amount, fee)


async def refund(conn: asyncpg.Connection, charge_id: int, amount_vnd: int | None, idempotency_key: str, *,
                 reason: str | None = None) -> Posted:
    """Give back all (`amount_vnd=None`) or part of a charge to the wallet it came from, with the fee share.

    In the caller's transaction; the refunds of a charge never add up to more than it.
    """
    key = _key(idempotency_key)
    original = await store.transaction_by_id(conn, charge_id) if isinstance(charge_id, int) else None
    if original is None or original["kind"] != "charge":
        raise NotFound(f"no charge {charge_id}")
    resident = original["resident_id"]
    wallet = await store.lock_wallet(conn, resident)
    await store.lock_charge(conn, charge_id)
    existing = await store.transaction_by_key(conn, "refund", key)
    if existing is not None:
        if existing["refund_of"] != charge_id:
            raise IdempotencyKeyReused("this idempotency key already refunded another charge")
        return _replay(existing, resident=resident, operator=original["operator_slug"], amount=amount_vnd)
    done_amount, done_fee = await store.refunded(conn, charge_id)
    left = original["amount_vnd"] - done_amount
    amount = left if amount_vnd is None else check_amount(amount_vnd)
    if amount <= 0 or amount > left:
        raise AmountInvalid.field(f"{left} VND of this charge is left to refund")
    # the fee is given back in proportion, so a full refund gives back exactly the fee charged
    fee = (done_amount + amount) * original["fee_vnd"] // original["amount_vnd"] - done_fee
    operator = await store.operator_account(conn, original["operator_slug"])
    text = _text(reason, "reason", 120) if reason else original["reason"]
    row = await store.post(conn, kind="refund", key=key, amount=amount, fee=fee, resident_id=resident,
                           operator=original["operator_slug"], reason=text, refund_of=charge_id,
                           entries={wallet["id"]: amount, operator["id"]: -(amount - fee), FEES: -fee})
    if row is None:
        raise Conflict("a refund with this key is being written; retry")
    await notify(conn, [resident], "payments.refund",
                 {"operator": operator["name"], "amount_vi": _vnd_vi(amount), "amount_en": f"{amount:,}",
                  "reason": text}, category="payments", idempotency_key=f"payments:refund:{row['id']}",
                 deep_link=f"ihanoi://wallet/receipts/{row['id']}")
    return _posted(row, "refund", amount, fee)


async def record_cash_sale(conn: asyncpg.Connection, operator: str, amount_vnd: int, reason: str,
                           idempotency_key: str) -> Posted:
    """Cash the operator's kiosk took for `reason` (a paper ticket): cash -X / operator +X, no fee; the operator
    owes it to the treasury, like its wallet charges, until remitted.

    In the caller's transaction; the same key records once (the first posting is returned, marked `replayed`).
    """
    key = _key(idempotency_key)
    amount = check_amount(amount_vnd)
    reason = _text(reason, "reason", 120)
    existing = await store.transaction_by_key(conn, "cash_sale", key)
    if existing is not None:
        return _replay(existing, resident=None, operator=operator, amount=amount)
    account = await store.operator_account(conn, operator)
    if account is None:
        raise NotFound(f"no operator {operator!r}")
    row = await store.post(conn, kind="cash_sale", key=key, amount=amount, resident_id=None, operator=operator,
                           reason=reason, refund_of=None, entries={CASH: -amount, account["id"]: amount})
    if row is None:  # the same key committed by another transaction meanwhile
        return _replay(await store.transaction_by_key(conn, "cash_sale", key), resident=None, operator=operator,
                       amount=amount)
    return _posted(row, "cash_sale", amount, 0)


async def ensure_operator(conn: asyncpg.Connection, slug: str, name: str, kind: str, fee_bps: int = 0) -> Operator:
    """Create or update an operator (a transit or parking operator) and its account."""
    if not re.match(r"^[a-z][a-z0-9-]{1,62}$", slug or ""):
        raise InvalidInput.field("slug", "2-63 lowercase letters, digits or '-', starting with a letter")
    if kind not in ("transit", "parking"):
        raise InvalidInput.field("kind", "transit or parking")
    if isinstance(fee_bps, bool) or not isinstance(fee_bps, int) or not 0 <= fee_bps <= 10_000:
        raise InvalidInput.field("fee_bps", "0-10000 basis points")
    row = await store.upsert_operator(conn, slug=slug, name=_text(name, "name", 200), kind=kind, fee_bps=fee_bps)
    return Operator(slug=row["slug"], name=row["name"], kind=row["kind"], fee_bps=row["fee_bps"])


async def open_wallet(conn: asyncpg.Connection, resident: uuid.UUID | str) -> int:
    resident_id = _resident(resident)
    if not await store.resident_exists(conn, resident_id):
        raise WalletNotFound("no such resident")
    return await store.open_wallet(conn, resident_id)


async def balance_of(conn: asyncpg.Connection, resident: uuid.UUID | str) -> int:
    row = await store.wallet(conn, _resident(resident))
    return row["balance_vnd"] if row else 0


async def remit(conn: asyncpg.Connection, slug: str, amount_vnd: int, reference: str, idempotency_key: str) -> Posted:
    """The operator's collected money handed over to the city treasury: its own ledger transaction."""
    key = _key(idempotency_key)
    amount = check_amount(amount_vnd)
    reference = _text(reference, "reference", 100)
    operator = await conn.fetchrow(
        "SELECT id, balance_vnd FROM payment_account WHERE operator_slug = $1 FOR UPDATE", slug)
    if operator is None:
        raise NotFound(f"no operator {slug!r}")
    existing = await store.transaction_by_key(conn, "remittance", key)
    if existing is not None:
        return _replay(existing, resident=None, operator=slug, amount=amount)
    if amount > operator["balance_vnd"]:
        raise AmountInvalid.field(f"{slug} has {operator['balance_vnd']} VND not yet remitted")
    row = await store.post(conn, kind="remittance", key=key, amount=amount, resident_id=None, operator=slug,
                           reason=reference, refund_of=None, entries={operator["id"]: -amount, TREASURY: amount})
    if row is None:
        raise Conflict("a remittance with this key is being written; retry")
    return _posted(row, "remittance", amount, 0)


async def collected_by_day(conn: asyncpg.Connection, slug: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """For other modules' reconciliation: per local day and reason, the operator's charges, refunds and fees."""
    return [dict(r) for r in await store.settlement(conn, slug, start, end)]


async def operator_outstanding(conn: asyncpg.Connection, slug: str) -> dict | None:
    """Collected and not yet remitted by the operator, its last remittance and its oldest unremitted charge."""
    for row in await store.outstanding(conn):
        if row["slug"] == slug:
            return {"outstanding_vnd": row["balance_vnd"], "last_remitted_at": row["last_remitted_at"],
                    "oldest_unremitted_at": row["oldest_unremitted_at"]}
    return None


# ---- the resident's wallet ----------------------------------------------------------------------------------


def _line(row) -> Line:
    return Line(transaction_id=row["id"], kind=row["kind"], amount_vnd=row["amount_vnd"], operator=row["operator_slug"],
                operator_name=row["operator_name"], reason=row["reason"], created_at=web.local(row["created_at"]),
                refund_of=row["refund_of"])


async def wallet_view(conn: asyncpg.Connection, resident: uuid.UUID, cap: int) -> Wallet:
    return Wallet(balance_vnd=await balance_of(conn, resident), cap_vnd=cap)


async def history(conn: asyncpg.Connection, resident: uuid.UUID, *, cursor: str | None, limit: int) -> History:
    before = web.decode_cursor(cursor, [int])[0] if cursor else None
    wallet = await store.wallet(conn, resident)
    if wallet is None:
        return History(items=[], next_cursor=None)
    rows = await store.history(conn, wallet["id"], before=before, limit=limit + 1)
    items = [_line(r) for r in rows[:limit]]
    return History(items=items, next_cursor=web.encode_cursor(items[-1].transaction_id) if len(rows) > limit else None)


_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """A calendar month in Asia/Ho_Chi_Minh, as [start, end) instants."""
    match = _MONTH.match(month)
    if not match or not 2000 <= int(match.group(1)) <= 2100:
        raise InvalidInput.field("month", "a month as YYYY-MM", source="path")
    year, number = int(match.group(1)), int(match.group(2))
    start = dt.datetime(year, number, 1, tzinfo=web.CITY_TZ)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=web.CITY_TZ)
    return start, end


async def statement(conn: asyncpg.Connection, resident: uuid.UUID, month: str) -> Statement:
    start, end = month_bounds(month)
    wallet = await store.wallet(conn, resident)
    lines = [] if wallet is None else [_line(r) for r in await store.statement_lines(conn, wallet["id"], start, end)]
    opening = 0 if wallet is None else await store.balance_before(conn, wallet["id"], start)
    credits = sum(line.amount_vnd for line in lines if line.amount_vnd > 0)
    debits = -sum(line.amount_vnd for line in lines if line.amount_vnd < 0)
    return Statement(month=month, starts_at=start, ends_at=end, opening_balance_vnd=opening, credits_vnd=credits,
                     debits_vnd=debits, closing_balance_vnd=opening + credits - debits, lines=lines)


async def receipt(conn: asyncpg.Connection, resident: uuid.UUID, transaction_id: int) -> Receipt:
    wallet = await store.wallet(conn, resident)
    row = None if wallet is None else await store.wallet_line(conn, wallet["id"], transaction_id)
    if row is None:  # someone else's, or none: the same answer
        raise NotFound(f"no receipt {transaction_id} in your wallet")
    local = web.local(row["created_at"])
    return Receipt(receipt_no=f"HN{local:%Y%m%d}-{row['id']:010d}", transaction_id=row["id"], kind=row["kind"],
                   amount_vnd=row["gross_vnd"], wallet_change_vnd=row["amount_vnd"], operator=row["operator_slug"],
                   operator_name=row["operator_name"], reason=row["reason"], created_at=local,
                   refund_of=row["refund_of"])


# ---- VNPay top-up -----------------------------------------------------------------------------------------------


def _topup(row, payment_url: str | None = None) -> Topup:
    return Topup(txn_ref=row["txn_ref"], amount_vnd=row["amount_vnd"], status=row["status"],
                 created_at=web.local(row["created_at"]), expires_at=web.local(row["expires_at"]),
                 settled_at=web.local(row["settled_at"]) if row["settled_at"] else None,
                 response_code=row["response_code"], transaction_id=row["transaction_id"], payment_url=payment_url)


async def create_topup(conn: asyncpg.Connection, merchant: Merchant, resident: uuid.UUID, body: TopupCreate,
                       ip_addr: str) -> Topup:
    """A pending order and the signed VNPay URL the app opens; the wallet is credited only by the IPN."""
    own = merchant.own
    amount = check_amount(body.amount_vnd, low=own.topup_min_vnd, high=own.topup_max_vnd)
    await open_wallet(conn, resident)
    wallet = await store.lock_wallet(conn, resident)  # one order at a time per wallet, for the cap
    pending = await store.pending_topups_total(conn, resident)
    if wallet["balance_vnd"] + pending + amount > own.wallet_cap_vnd:
        room = max(own.wallet_cap_vnd - wallet["balance_vnd"] - pending, 0)
        raise WalletCapExceeded(f"a wallet holds at most {own.wallet_cap_vnd} VND (pending top-ups included); "
                                f"at most {room} VND more", cap_vnd=own.wallet_cap_vnd, room_vnd=room)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    txn_ref = vnpay.gmt7(now) + secrets.token_hex(5).upper()
    row = await store.insert_topup(conn, txn_ref=txn_ref, resident_id=resident, amount=amount, created_at=now,
                                   expires_at=now + dt.timedelta(minutes=own.vnpay_expire_minutes))
    fields = vnpay.pay_fields(tmn_code=merchant.tmn_code, amount_vnd=amount, txn_ref=txn_ref,
                              order_info=f"Nap tien vi iHaNoi {txn_ref}", return_url=merchant.return_url,
                              ip_addr=ip_addr, created=now, expires=row["expires_at"], locale=body.locale,
                              bank_code=body.bank_code)
    return _topup(row, f"{merchant.pay_url}?{vnpay.signed_query(merchant.secret, fields)}")


async def get_topup(conn: asyncpg.Connection, resident: uuid.UUID, txn_ref: str) -> Topup:
    row = await store.topup(conn, txn_ref)
    if row is None or row["resident_id"] != resident:
        raise NotFound(f"no top-up {txn_ref}")
    return _topup(row)


async def _settle(conn: asyncpg.Connection, order, *, paid: bool, by: str, fields: dict[str, str]):
    """Settle a pending order (locked by the caller): credit the wallet once if paid."""
    transaction_id = None
    if paid:
        wallet = await store.lock_wallet(conn, order["resident_id"])
        row = await store.post(conn, kind="topup", key=f"vnpay:{order['txn_ref']}", amount=order["amount_vnd"],
                               resident_id=order["resident_id"], operator=None, reason="vnpay",
                               refund_of=None,
                               entries={CLEARING: -order["amount_vnd"], wallet["id"]: order["amount_vnd"]})
        transaction_id = row["id"]
        balance = wallet["balance_vnd"] + order["amount_vnd"]
        await notify(conn, [order["resident_id"]], "payments.topup_credited",
                     {"amount_vi": _vnd_vi(order["amount_vnd"]), "amount_en": f"{order['amount_vnd']:,}",
                      "balance_vi": _vnd_vi(balance), "balance_en": f"{balance:,}"},
                     category="payments", idempotency_key=f"payments:topup:{order['txn_ref']}",
                     deep_link=f"ihanoi://wallet/receipts/{transaction_id}")
        await _credited(conn, order["resident_id"], transaction_id)
    status = "paid" if paid else ("expired" if by == "expiry" else "failed")
    return await store.settle_topup(conn, order["id"], status=status, settled_by=by,
                                    response_code=fields.get("vnp_ResponseCode"), bank_code=fields.get("vnp_BankCode"),
                                    gateway_txn_no=fields.get("vnp_TransactionNo"), transaction_id=transaction_id)


def _amount_matches(order, fields: dict[str, str]) -> bool:
    text = fields.get("vnp_Amount") or ""
    return text.isdigit() and int(text) == order["amount_vnd"] * 100


async def handle_ipn(conn: asyncpg.Connection, merchant: Merchant, fields: dict[str, str]) -> IpnAnswer:
    """The gateway's server-to-server result, answered as VNPay expects (RspCode/Message)."""
    if not vnpay.verify(merchant.secret, fields) or fields.get("vnp_TmnCode") != merchant.tmn_code:
        return IpnAnswer(RspCode="97", Message="Invalid signature")
    txn_ref = fields.get("vnp_TxnRef") or ""
    order = await store.topup(conn, txn_ref, lock=True) if re.match(r"^[A-Za-z0-9]{8,100}$", txn_ref) else None
    if order is None:
        return IpnAnswer(RspCode="01", Message="Order not found")
    if not _amount_matches(order, fields):
        log.warning("IPN for another amount", extra={"txn_ref": txn_ref})
        return IpnAnswer(RspCode="04", Message="Invalid amount")
    if order["status"] != "pending":
        return IpnAnswer(RspCode="02", Message="Order already confirmed")
    paid = fields.get("vnp_ResponseCode") == "00" and fields.get("vnp_TransactionStatus") == "00"
    await _settle(conn, order, paid=paid, by="ipn", fields=fields)
    return IpnAnswer(RspCode="00", Message="Confirm Success")


GATEWAY_MESSAGES = {
    "00": "Giao dịch thành công", "07": "Trừ tiền thành công, giao dịch bị nghi ngờ", "11": "Hết hạn chờ thanh toán",
    "24": "Khách hàng hủy giao dịch", "51": "Tài khoản không đủ số dư", "65": "Vượt hạn mức giao dịch trong ngày",
    "75": "Ngân hàng đang bảo trì",
}


async def return_view(conn: asyncpg.Connection, merchant: Merchant, fields: dict[str, str]) -> ReturnView:
    """The resident's browser back from the gateway: what our order says (the URL itself credits nothing)."""
    valid = vnpay.verify(merchant.secret, fields)
    code = fields.get("vnp_ResponseCode")
    order = await store.topup(conn, fields.get("vnp_TxnRef") or "") if valid else None
    return ReturnView(txn_ref=fields.get("vnp_TxnRef") if valid else None, signature_valid=valid,
                      gateway_response_code=code if valid else None,
                      gateway_message=GATEWAY_MESSAGES.get(code or "", "Giao dịch không thành công") if valid
                      else "Chữ ký không hợp lệ",
                      status=order["status"] if order else None, amount_vnd=order["amount_vnd"] if order else None)


async def querydr(http: httpx.AsyncClient, merchant: Merchant, order) -> dict[str, str] | None:
    """Ask the gateway about one order; None when it cannot be asked or its answer is not signed by it."""
    now = dt.datetime.now(dt.UTC)
    request = {"vnp_RequestId": secrets.token_hex(16), "vnp_Version": vnpay.VERSION, "vnp_Command": "querydr",
               "vnp_TmnCode": merchant.tmn_code, "vnp_TxnRef": order["txn_ref"],
               "vnp_OrderInfo": f"Truy van GD {order['txn_ref']}",
               "vnp_TransactionDate": vnpay.gmt7(order["created_at"]),
               "vnp_CreateDate": vnpay.gmt7(now), "vnp_IpAddr": "127.0.0.1"}
    request["vnp_SecureHash"] = vnpay.sign_piped(merchant.secret, request, vnpay.QUERYDR_REQUEST_FIELDS)
    try:
        response = await http.post(merchant.querydr_url, json=request, timeout=10)
        answer = {k: str(v) for k, v in response.json().items() if v is not None}
    except (httpx.HTTPError, ValueError, AttributeError):
        log.warning("querydr failed", extra={"txn_ref": order["txn_ref"]})
        return None
    if not vnpay.verify_piped(merchant.secret, answer, vnpay.QUERYDR_RESPONSE_FIELDS):
        log.warning("querydr answer with a bad signature", extra={"txn_ref": order["txn_ref"]})
        return None
    return answer


async def reconcile(pool, merchant: Merchant, http: httpx.AsyncClient, *, limit: int = 50) -> dict[str, int]:
    """Orders with no IPN after the timeout: ask the gateway, settle what it knows, expire what it never saw."""
    counts = {"checked": 0, "paid": 0, "failed": 0, "expired": 0}
    older_than = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=merchant.own.reconcile_after_seconds)
    async with pool.acquire() as conn:
        due = await store.topups_to_check(conn, older_than=older_than, limit=limit)
    for candidate in due:
        answer = await querydr(http, merchant, candidate)  # no lock held while the gateway answers
        async with pool.acquire() as conn, conn.transaction():
            order = await store.topup(conn, candidate["txn_ref"], lock=True)
            if order is None or order["status"] != "pending":
                continue
            counts["checked"] += 1
            await store.mark_checked(conn, order["id"])
            if answer is None:
                continue
            if answer.get("vnp_ResponseCode") == "00" and answer.get("vnp_TxnRef") == order["txn_ref"]:
                status = answer.get("vnp_TransactionStatus")
                if status == "00" and _amount_matches(order, answer):
                    await _settle(conn, order, paid=True, by="querydr", fields=answer)
                    counts["paid"] += 1
                elif status not in ("00", "01", "04", "05", "06", "07"):  # settled on the gateway's side, unpaid
                    await _settle(conn, order, paid=False, by="querydr", fields=answer)
                    counts["failed"] += 1
            elif answer.get("vnp_ResponseCode") == "91" and order["expires_at"] < dt.datetime.now(dt.UTC):
                # the gateway never saw a payment and the URL has expired: nobody can pay it any more
                await _settle(conn, order, paid=False, by="expiry", fields={})
                counts["expired"] += 1
    return counts


# ---- operators, settlement and the treasury ------------------------------------------------------------------


def may_see_operator(principal: Principal, slug: str) -> bool:
    return principal.has_role("treasury") or slug in principal.scopes_of("operator_finance")


def _check_operator_access(principal: Principal, slug: str) -> None:
    if not may_see_operator(principal, slug):
        raise Forbidden(f"this needs the operator_finance role for {slug} (or treasury)")


def _day_range(date_from: dt.date, date_to: dt.date) -> tuple[dt.datetime, dt.datetime]:
    if date_to < date_from:
        raise InvalidInput.field("to", "on or after `from`", source="query")
    if (date_to - date_from).days > 366:
        raise InvalidInput.field("to", "at most 366 days after `from`", source="query")
    start = dt.datetime.combine(date_from, dt.time(), tzinfo=web.CITY_TZ)
    return start, dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tzinfo=web.CITY_TZ)


async def settlement(conn: asyncpg.Connection, principal: Principal, slug: str, date_from: dt.date,
                     date_to: dt.date) -> Settlement:
    _check_operator_access(principal, slug)
    operator = await store.operator_account(conn, slug)
    if operator is None:
        raise NotFound(f"no operator {slug!r}")
    start, end = _day_range(date_from, date_to)
    rows = [SettlementRow(day=r["day"], reason=r["reason"], charges=r["charges"], collected_vnd=r["collected"],
                          refunds=r["refunds"], refunded_vnd=r["refunded"], fees_vnd=r["fees"],
                          net_vnd=r["collected"] - r["refunded"] - r["fees"])
            for r in await store.settlement(conn, slug, start, end)]
    return Settlement(operator=slug, operator_name=operator["name"], date_from=date_from, date_to=date_to, rows=rows,
                      collected_vnd=sum(r.collected_vnd for r in rows), refunded_vnd=sum(r.refunded_vnd for r in rows),
                      fees_vnd=sum(r.fees_vnd for r in rows), net_vnd=sum(r.net_vnd for r in rows),
                      outstanding_vnd=operator["balance_vnd"])


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("-").isdigit() else text


def settlement_csv(view: Settlement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["day", "operator", "product", "charges", "collected_vnd", "refunds", "refunded_vnd", "fees_vnd",
                     "net_vnd"])
    for r in view.rows:
        writer.writerow([_cell(v) for v in (r.day.isoformat(), view.operator, r.reason, r.charges, r.collected_vnd,
                                            r.refunds, r.refunded_vnd, r.fees_vnd, r.net_vnd)])
    writer.writerow(["total", view.operator, "", sum(r.charges for r in view.rows), view.collected_vnd,
                     sum(r.refunds for r in view.rows), view.refunded_vnd, view.fees_vnd, view.net_vnd])
    return out.getvalue()


async def treasury_view(conn: asyncpg.Connection) -> TreasuryView:
    rows = await store.outstanding(conn)
    house = await store.house_balances(conn)
    operators = [Outstanding(operator=r["slug"], name=r["name"], kind=r["kind"], outstanding_vnd=r["balance_vnd"],
                             oldest_unremitted_at=web.local(r["oldest_unremitted_at"]) if r["oldest_unremitted_at"]
                             else None,
                             last_remitted_at=web.local(r["last_remitted_at"]) if r["last_remitted_at"] else None)
                 for r in rows]
    return TreasuryView(operators=operators, outstanding_vnd=sum(o.outstanding_vnd for o in operators),
                        remitted_vnd=house.get("treasury", 0), fees_vnd=house.get("fees", 0),
                        in_clearing_vnd=-house.get("clearing", 0))


async def remittances(conn: asyncpg.Connection, slug: str | None, limit: int) -> RemittanceList:
    rows = await store.remittances(conn, slug, limit)
    return RemittanceList(items=[Remittance(transaction_id=r["id"], operator=r["operator_slug"],
                                            amount_vnd=r["amount_vnd"], reference=r["reason"],
                                            created_at=web.local(r["created_at"])) for r in rows])


async def operator_refund(conn: asyncpg.Connection, principal: Principal, slug: str, charge_id: int,
                          amount_vnd: int | None, key: str) -> Posted:
    _check_operator_access(principal, slug)
    original = await store.transaction_by_id(conn, charge_id)
    if original is None or original["kind"] != "charge" or original["operator_slug"] != slug:
        raise NotFound(f"no charge {charge_id} of {slug}")
    return await refund(conn, charge_id, amount_vnd, f"http:{principal.sub}:{key}")


# ---- audit -------------------------------------------------------------------------------------------------------


async def audit(conn: asyncpg.Connection) -> Audit:
    """Every balance equals the sum of its entries, every transaction sums to zero, and so does the ledger."""
    row = await store.audit(conn)
    ok = (not row["mismatched_accounts"] and not row["unbalanced_transactions"]
          and not row["unbalanced_detached_months"] and row["entries_total"] == 0 and row["balances_total"] == 0)
    return Audit(ok=ok, accounts=row["accounts"], transactions=row["transactions"],
                 entries_total_vnd=row["entries_total"], balances_total_vnd=row["balances_total"],
                 mismatched_accounts=list(row["mismatched_accounts"]),
                 unbalanced_transactions=list(row["unbalanced_transactions"]),
                 unbalanced_detached_months=list(row["unbalanced_detached_months"]))


def audit_json(result: Audit) -> str:
    return msgspec.json.encode(result).decode()
