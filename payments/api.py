"""Payments endpoints: HTTP only; every rule is in service.py.

Residents see their own wallet, history, statements and receipts and top up through VNPay; the gateway
calls the IPN; operators' finance staff see their own settlement and refund their charges; the city's
treasury sees what every operator collected and has not remitted, and records remittances.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Annotated

from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from app import web
from app.identity import guards
from payments import config, service
from payments.models import (
    Audit,
    History,
    IpnAnswer,
    Operator,
    OperatorUpsert,
    Posted,
    Receipt,
    RefundCreate,
    Remittance,
    RemittanceCreate,
    RemittanceList,
    ReturnView,
    Settlement,
    Statement,
    Topup,
    TopupCreate,
    TreasuryView,
    Wallet,
)

log = logging.getLogger("ihanoi.payments")

DateFrom = Annotated[dt.date, QueryParameter(name="from", description="first day (Asia/Ho_Chi_Minh), YYYY-MM-DD")]
DateTo = Annotated[dt.date, QueryParameter(name="to", description="last day, included")]
Cursor = web.cursor_parameter(int)
Limit = Annotated[int, QueryParameter(ge=1, le=100, description="page size")]
treasury = guards.role("treasury")
admin = guards.role("admin")
level2 = guards.level(2)  # money in: a level-2 (VNeID) sign-in
signed_in = guards.authenticated


def _me(principal) -> uuid.UUID:
    return uuid.UUID(principal.sub)


class WalletController(Controller):
    path = "/v1/payments"
    tags = ["Payments"]
    guards = [guards.resident]

    @get("/wallet", operation_id="GetWallet", summary="The caller's balance and the wallet cap")
    async def wallet(self, conn: web.Conn, principal: web.Caller, state: State) -> Wallet:
        return await service.wallet_view(conn, _me(principal), config.of(state.settings).wallet_cap_vnd)

    @get("/wallet/history", operation_id="GetWalletHistory", summary="Movements, newest first, by cursor")
    async def history(self, conn: web.Conn, principal: web.Caller, cursor: Cursor = None,
                      limit: Limit = 20) -> History:
        return await service.history(conn, _me(principal), cursor=cursor, limit=limit)

    @get("/statements/{month:str}", operation_id="GetWalletStatement",
         summary="A month (YYYY-MM, Asia/Ho_Chi_Minh): opening and closing balance, credits, debits, lines")
    async def statement(self, month: web.Month, conn: web.Conn, principal: web.Caller) -> Statement:
        return await service.statement(conn, _me(principal), month)

    @get("/receipts/{transaction_id:int}", operation_id="GetReceipt")
    async def receipt(self, transaction_id: web.Id, conn: web.Conn, principal: web.Caller) -> Receipt:
        return await service.receipt(conn, _me(principal), transaction_id)

    @post("/topups", operation_id="CreateTopup", status_code=201, dependencies=web.IDEMPOTENT_REQUIRED,
          guards=[level2],
          summary="Start a VNPay top-up: a pending order and the signed payment URL to open (Idempotency-Key required)")
    async def create_topup(self, data: JSONBody[TopupCreate], tx: web.Tx, principal: web.Caller, state: State,
                           request: Request) -> Topup:
        ip = request.client.host if request.client else "127.0.0.1"
        return await service.create_topup(tx, config.merchant(state.settings), _me(principal), data, ip)

    @get("/topups/{txn_ref:str}", operation_id="GetTopup", summary="A top-up's state (credited only by the IPN)")
    async def topup(self, txn_ref: FromPath[str], conn: web.Conn, principal: web.Caller) -> Topup:
        return await service.get_topup(conn, _me(principal), txn_ref)


class GatewayController(Controller):
    """What VNPay and the resident's browser call: no bearer token, the signature is the proof."""

    path = "/v1/payments/vnpay"
    tags = ["Payments"]

    @get("/ipn", operation_id="VnpayIpn", identity_level=1,
         summary="VNPay's server-to-server result (GET); answers RspCode 00/01/02/04/97/99")
    async def ipn(self, request: Request, tx: web.Tx, state: State) -> IpnAnswer:
        fields = {k: v for k, v in request.query_params.items()}
        try:
            async with tx.transaction():  # a savepoint: a failure leaves nothing half-written
                return await service.handle_ipn(tx, config.merchant(state.settings), fields)
        except Exception as exc:  # VNPay wants an answer it understands, and will retry on 99
            log.exception("IPN failed", extra={"error": type(exc).__name__})
            return IpnAnswer(RspCode="99", Message="Unknown error")

    @get("/return", operation_id="VnpayReturn", identity_level=1,
         summary="Where the resident's browser comes back: shows our order's state, credits nothing")
    async def back(self, request: Request, conn: web.Conn, state: State) -> ReturnView:
        fields = {k: v for k, v in request.query_params.items()}
        return await service.return_view(conn, config.merchant(state.settings), fields)


class OperatorsController(Controller):
    path = "/v1/payments/operators"
    tags = ["Payments"]

    @put("/{slug:str}", operation_id="PutPaymentOperator", guards=[admin],
         summary="Create or update a transit or parking operator and its account (admin)")
    async def upsert(self, slug: web.Slug, data: JSONBody[OperatorUpsert], tx: web.Tx) -> Operator:
        return await service.ensure_operator(tx, slug, data.name, data.kind, data.fee_bps)

    @get("/{slug:str}/settlement", operation_id="GetSettlement", guards=[signed_in],
         summary="Per day and product or lot: collected, refunded, fees, net (operator_finance of it, or treasury)")
    async def settlement(self, slug: web.Slug, conn: web.Conn, principal: web.Caller, date_from: DateFrom,
                         date_to: DateTo) -> Settlement:
        return await service.settlement(conn, principal, slug, date_from, date_to)

    @get("/{slug:str}/settlement.csv", operation_id="GetSettlementCsv", guards=[signed_in],
         summary="The same settlement as CSV", media_type="text/csv")
    async def settlement_csv(self, slug: web.Slug, conn: web.Conn, principal: web.Caller, date_from: DateFrom,
                             date_to: DateTo) -> Response[str]:
        view = await service.settlement(conn, principal, slug, date_from, date_to)
        name = f"settlement-{slug}-{date_from.isoformat()}-{date_to.isoformat()}.csv"
        return Response(service.settlement_csv(view), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @post("/{slug:str}/charges/{transaction_id:int}/refund", operation_id="RefundCharge", status_code=201,
          guards=[signed_in], dependencies=web.IDEMPOTENT_REQUIRED,
          summary="Refund a charge (all of what is left, or `amount_vnd`) to the resident's wallet")
    async def refund(self, slug: web.Slug, transaction_id: web.Id, data: JSONBody[RefundCreate], tx: web.Tx,
                     principal: web.Caller, request: Request) -> Posted:
        key = request.headers.get("idempotency-key", "")
        return await service.operator_refund(tx, principal, slug, transaction_id, data.amount_vnd, key)

    @post("/{slug:str}/remittances", operation_id="CreateRemittance", status_code=201, guards=[treasury],
          dependencies=web.IDEMPOTENT_REQUIRED,
          summary="Record money the operator handed to the city treasury (a ledger transaction; treasury)")
    async def remit(self, slug: web.Slug, data: JSONBody[RemittanceCreate], tx: web.Tx, principal: web.Caller,
                    request: Request) -> Remittance:
        key = f"http:{principal.sub}:{request.headers.get('idempotency-key', '')}"
        posted = await service.remit(tx, slug, data.amount_vnd, data.reference, key)
        return Remittance(transaction_id=posted.transaction_id, operator=slug, amount_vnd=posted.amount_vnd,
                          reference=data.reference, created_at=posted.created_at)

    @get("/{slug:str}/remittances", operation_id="ListOperatorRemittances", guards=[signed_in])
    async def operator_remittances(self, slug: web.Slug, conn: web.Conn, principal: web.Caller,
                                   limit: Limit = 50) -> RemittanceList:
        if not service.may_see_operator(principal, slug):
            from app.errors import Forbidden

            raise Forbidden(f"this needs the operator_finance role for {slug} (or treasury)")
        return await service.remittances(conn, slug, limit)


class TreasuryController(Controller):
    path = "/v1/payments/treasury"
    tags = ["Payments"]
    guards = [treasury]

    @get("/", operation_id="GetTreasuryView",
         summary="What each operator collected and has not remitted, the treasury, fees and the gateway's clearing")
    async def view(self, conn: web.Conn) -> TreasuryView:
        return await service.treasury_view(conn)

    @get("/remittances", operation_id="ListRemittances")
    async def remittances(self, conn: web.Conn, limit: Limit = 50) -> RemittanceList:
        return await service.remittances(conn, None, limit)

    @get("/audit", operation_id="AuditLedger",
         summary="Balances against their entries and the ledger's total (what the payments.audit job checks)")
    async def audit(self, conn: web.Conn) -> Audit:
        return await service.audit(conn)


ROUTERS = [WalletController, GatewayController, OperatorsController, TreasuryController]
