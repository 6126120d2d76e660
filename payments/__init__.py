"""Payments: a wallet per resident, a double-entry ledger in integer VND, VNPay top-up, settlement.

Other modules move money with one call, inside their own transaction:

    from payments import InsufficientFunds, charge, refund
    posted = await charge(conn, resident_id, "hanoibus", 200_000, "monthly-pass", f"pass:{pass_id}")

and may be told, in the top-up's own transaction, when a wallet is credited:

    on_wallet_credited("parking", settle_debts_of)  # async (conn, resident_id, credit_transaction_id)
"""

from __future__ import annotations

from payments.models import Posted
from payments.module import module
from payments.service import (
    AmountInvalid,
    InsufficientFunds,
    WalletNotFound,
    balance_of,
    charge,
    collected_by_day,
    ensure_operator,
    on_wallet_credited,
    open_wallet,
    operator_outstanding,
    record_cash_sale,
    refund,
)

__all__ = ["AmountInvalid", "InsufficientFunds", "Posted", "WalletNotFound", "balance_of", "charge", "collected_by_day",
           "ensure_operator", "module", "on_wallet_credited", "open_wallet", "operator_outstanding",
           "record_cash_sale", "refund"]
