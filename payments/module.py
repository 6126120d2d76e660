"""The payments module as the kernel sees it: routes, the gateway stand-in, jobs, declarations."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import httpx

from modules import Job, JobContext, Module, NotificationCategory, ProblemType, Role, Template, TimePartitions, Title
from payments import api, config, service, stand_in, store

log = logging.getLogger("ihanoi.payments")


async def reconcile(ctx: JobContext) -> None:
    """Orders with no IPN after IHANOI_PAYMENTS_RECONCILE_AFTER: ask the gateway (querydr)."""
    merchant = config.merchant(ctx.settings)
    async with httpx.AsyncClient() as http:
        counts = await service.reconcile(ctx.pool, merchant, http)
    if counts["checked"]:
        log.info("top-ups reconciled", extra=counts)


async def audit(ctx: JobContext) -> None:
    """Every balance equals the sum of its entries and the ledger sums to zero; loud if not."""
    async with ctx.pool.acquire() as conn:
        result = await service.audit(conn)
    if not result.ok:
        log.error("ledger audit failed", extra={"mismatched_accounts": result.mismatched_accounts[:20],
                                                "unbalanced_transactions": result.unbalanced_transactions[:20],
                                                "entries_total_vnd": result.entries_total_vnd,
                                                "balances_total_vnd": result.balances_total_vnd})


async def vnpay_configured(state) -> bool:
    config.merchant(state.settings)  # raises with the missing variables' names
    return True


@click.group(help="Payments: the ledger's audit.")
def cli() -> None:
    pass


@cli.command("audit", help="Check every balance against its entries and that the ledger sums to zero.")
@click.pass_obj
def audit_command(obj) -> None:
    async def work(ctx: JobContext):
        async with ctx.pool.acquire() as conn:
            return await service.audit(conn)

    result = obj.run(work)
    click.echo(service.audit_json(result))
    if not result.ok:
        raise SystemExit(1)


module = Module(
    name="payments",
    title=Title(vi="Ví và thanh toán", en="Wallet and payments"),
    icon="wallet",
    routers=api.ROUTERS,
    # the local VNPay gateway (bank page, IPN sender, querydr) that dev and test pay through
    dev_routers=[stand_in.create_router()],
    migrations=Path(__file__).parent / "migrations",
    jobs=[Job(name="payments.reconcile", run=reconcile, every_seconds=60),
          Job(name="payments.audit", run=audit, every_seconds=3600)],
    readiness_checks={"vnpay": vnpay_configured},
    problems=[
        ProblemType("insufficient-funds", 402, Title("Số dư ví không đủ", "Insufficient funds")),
        ProblemType("wallet-cap-exceeded", 422, Title("Vượt hạn mức số dư ví", "The wallet cap would be exceeded")),
        ProblemType("amount-invalid", 422, Title("Số tiền không hợp lệ", "Invalid amount")),
        ProblemType("wallet-not-found", 404, Title("Không tìm thấy ví", "No such wallet")),
    ],
    roles=[
        Role("treasury", Title("Kho bạc / tài chính thành phố", "City treasury"), "none",
             "no scope: sees every operator's settlement and what is not yet remitted; records remittances"),
        Role("operator_finance", Title("Kế toán đơn vị vận hành", "Operator finance"), "record",
             "the operator's slug (a transit or parking operator of payments): its settlement, CSV and refunds"),
    ],
    notification_categories=[NotificationCategory("payments", Title("Ví và thanh toán", "Wallet and payments"),
                                                  templates=[
        Template("payments.topup_credited", "Nạp tiền thành công",
                 "Ví iHaNoi đã được cộng {amount_vi} đ. Số dư: {balance_vi} đ.",
                 "Top-up received", "{amount_en} VND was added to your iHaNoi wallet. Balance: {balance_en} VND."),
        Template("payments.low_balance", "Số dư ví thấp",
                 "Ví iHaNoi còn {balance_vi} đ. Nạp thêm để vé xe và phí gửi xe không bị gián đoạn.",
                 "Low wallet balance",
                 "Your iHaNoi wallet holds {balance_en} VND. Top up so that passes and parking are not interrupted."),
        Template("payments.refund", "Hoàn tiền vào ví", "{operator} đã hoàn {amount_vi} đ vào ví iHaNoi ({reason}).",
                 "Refund received", "{operator} refunded {amount_en} VND to your iHaNoi wallet ({reason})."),
    ])],
    settings=config.SETTINGS,
    # a ledger entry for every charge: monthly partitions; money records are kept, so past a retention (default
    # none) a month is detached, never dropped, and what it carried for each account is saved first so that the
    # audit still adds up
    partitions=[TimePartitions("payment_entry", "booked_at", ahead=3, retention_setting="entry_retention_months",
                               expire="detach", before_expire=store.save_carried)],
    cli=cli,
)
