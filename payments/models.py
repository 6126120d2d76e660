"""Request and response bodies of the payments endpoints, and what charge/refund give their callers.

Money is integer VND. Times go out in Asia/Ho_Chi_Minh (+07:00); they are stored in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

TransactionKind = Literal["topup", "charge", "refund", "remittance", "cash_sale"]
OperatorKind = Literal["transit", "parking"]
TopupStatus = Literal["pending", "paid", "failed", "expired"]

# JSON integers only (a fractional amount is refused by the schema, naming the field); the module's
# limits are checked by the service with the `amount-invalid` problem.
Amount = Annotated[int, msgspec.Meta(description="integer VND")]
Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
# A name shown to people: no control characters, no blank at either end (payments.service._text)
DISPLAY_NAME = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"


class Posted(msgspec.Struct, frozen=True):
    """A ledger transaction as `charge`, `refund` and `remit` return it."""

    transaction_id: int
    kind: TransactionKind
    amount_vnd: int
    fee_vnd: int
    created_at: dt.datetime
    replayed: bool = False  # True when the idempotency key had been used: nothing new was written


class Wallet(msgspec.Struct):
    balance_vnd: int
    cap_vnd: int
    currency: str = "VND"


class Line(msgspec.Struct):
    """One movement of the resident's wallet: `amount_vnd` is signed (+ credit, - debit)."""

    transaction_id: int
    kind: TransactionKind
    amount_vnd: int
    operator: str | None
    operator_name: str | None
    reason: str
    created_at: dt.datetime
    refund_of: int | None = None


class History(msgspec.Struct):
    items: list[Line]
    next_cursor: str | None


class Statement(msgspec.Struct):
    month: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    opening_balance_vnd: int
    credits_vnd: int
    debits_vnd: int
    closing_balance_vnd: int
    lines: list[Line]


class Receipt(msgspec.Struct):
    receipt_no: str
    transaction_id: int
    kind: TransactionKind
    amount_vnd: int
    wallet_change_vnd: int
    operator: str | None
    operator_name: str | None
    reason: str
    created_at: dt.datetime
    refund_of: int | None = None


class TopupCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount_vnd: Amount
    bank_code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{2,20}$")] | None = None
    locale: Literal["vn", "en"] = "vn"


class Topup(msgspec.Struct):
    txn_ref: str
    amount_vnd: int
    status: TopupStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    settled_at: dt.datetime | None = None
    response_code: str | None = None
    transaction_id: int | None = None
    payment_url: str | None = None


class ReturnView(msgspec.Struct):
    """What the resident's browser is shown after the gateway: our order's state, never the URL's claim."""

    txn_ref: str | None
    signature_valid: bool
    gateway_response_code: str | None
    gateway_message: str
    status: TopupStatus | None
    amount_vnd: int | None
    balance_vnd: int | None = None


class IpnAnswer(msgspec.Struct):
    RspCode: str
    Message: str


class OperatorUpsert(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=DISPLAY_NAME)]
    kind: OperatorKind
    fee_bps: Annotated[int, msgspec.Meta(ge=0, le=10000)] = 0


class Operator(msgspec.Struct):
    slug: str
    name: str
    kind: OperatorKind
    fee_bps: int


class SettlementRow(msgspec.Struct):
    day: dt.date
    reason: str
    charges: int
    collected_vnd: int
    refunds: int
    refunded_vnd: int
    fees_vnd: int
    net_vnd: int


class Settlement(msgspec.Struct):
    operator: str
    operator_name: str
    date_from: dt.date
    date_to: dt.date
    rows: list[SettlementRow]
    collected_vnd: int
    refunded_vnd: int
    fees_vnd: int
    net_vnd: int
    outstanding_vnd: int  # collected, net of fees and refunds, not yet remitted to the treasury


class RemittanceCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount_vnd: Amount
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Remittance(msgspec.Struct):
    transaction_id: int
    operator: str
    amount_vnd: int
    reference: str
    created_at: dt.datetime


class RemittanceList(msgspec.Struct):
    items: list[Remittance]


class Outstanding(msgspec.Struct):
    operator: str
    name: str
    kind: OperatorKind
    outstanding_vnd: int
    oldest_unremitted_at: dt.datetime | None
    last_remitted_at: dt.datetime | None


class TreasuryView(msgspec.Struct):
    operators: list[Outstanding]
    outstanding_vnd: int
    remitted_vnd: int  # the treasury account's balance
    fees_vnd: int
    in_clearing_vnd: int  # top-ups credited whose money the gateway still holds for the city


class RefundCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount_vnd: Amount | None = None  # None: what is left of the charge


class Audit(msgspec.Struct):
    ok: bool
    accounts: int
    transactions: int
    entries_total_vnd: int
    balances_total_vnd: int
    mismatched_accounts: list[int]
    unbalanced_transactions: list[int]
    unbalanced_detached_months: list[str] = []
