"""The payments module's settings: the VNPay merchant, top-up limits, the wallet cap, reconciliation."""

from __future__ import annotations

import msgspec

from app.errors import ServiceUnavailable
from modules import Settings

DEV_SECRET = "ihanoi-dev-only-vnpay-secret"  # dev and test only: shared with the local gateway stand-in
STAND_IN = "/stand-in/vnpay"


class PaymentSettings(msgspec.Struct, frozen=True, kw_only=True):
    vnpay_tmn_code: str = "IHANOIDV"
    vnpay_hash_secret: str | None = None
    vnpay_pay_url: str | None = None
    vnpay_querydr_url: str | None = None
    vnpay_return_url: str | None = None
    vnpay_expire_minutes: int = 15
    topup_min_vnd: int = 10_000
    topup_max_vnd: int = 5_000_000
    wallet_cap_vnd: int = 10_000_000
    reconcile_after_seconds: int = 900
    entry_retention_months: int = 0

    def __repr__(self) -> str:
        # the terminal code and the secret stay out of any log line that prints the settings
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__struct_fields__
                          if f not in ("vnpay_tmn_code", "vnpay_hash_secret"))
        return f"PaymentSettings({shown}, vnpay_tmn_code=***, vnpay_hash_secret=***)"


SETTINGS = Settings(PaymentSettings, {
    "IHANOI_VNPAY_TMN_CODE": ("vnpay_tmn_code", "VNPay terminal (merchant) code, `vnp_TmnCode` (never logged)"),
    "IHANOI_VNPAY_HASH_SECRET": ("vnpay_hash_secret", "VNPay secret for HMAC-SHA512 signatures (prod: required; never logged; dev/test default shared with the stand-in)"),
    "IHANOI_VNPAY_PAY_URL": ("vnpay_pay_url", "VNPay payment page (prod: required, e.g. VNPay's `.../paymentv2/vpcpay.html`; dev/test default: the stand-in at `/stand-in/vnpay`)"),
    "IHANOI_VNPAY_QUERYDR_URL": ("vnpay_querydr_url", "VNPay transaction API for `querydr` (prod: required; dev/test default: the stand-in)"),
    "IHANOI_VNPAY_RETURN_URL": ("vnpay_return_url", "where VNPay sends the resident back (default: our `/v1/payments/vnpay/return`)"),
    "IHANOI_VNPAY_EXPIRE_MINUTES": ("vnpay_expire_minutes", "minutes a payment URL stays valid, `vnp_ExpireDate` (default 15)"),
    "IHANOI_TOPUP_MIN_VND": ("topup_min_vnd", "smallest top-up in VND (default 10,000)"),
    "IHANOI_TOPUP_MAX_VND": ("topup_max_vnd", "largest top-up in VND (default 5,000,000)"),
    "IHANOI_WALLET_CAP_VND": ("wallet_cap_vnd", "most a wallet may hold, pending top-ups included (default 10,000,000)"),
    "IHANOI_PAYMENTS_RECONCILE_AFTER": ("reconcile_after_seconds", "seconds without an IPN before the worker asks VNPay (`querydr`) about an order (default 900)"),
    "IHANOI_PAYMENTS_ENTRY_RETENTION_MONTHS": ("entry_retention_months", "months of ledger entries kept attached to `payment_entry`; older months are detached (kept as their own tables for the accounts' archive, never dropped); 0 keeps every month (default 0)"),
})


class Merchant(msgspec.Struct, frozen=True):
    """The settings resolved for this environment (the stand-in's URLs and secret in dev and test)."""

    tmn_code: str
    secret: str
    pay_url: str
    querydr_url: str
    return_url: str
    own: PaymentSettings

    def __repr__(self) -> str:
        return f"Merchant(pay_url={self.pay_url!r}, querydr_url={self.querydr_url!r})"


def of(settings) -> PaymentSettings:
    return settings.of("payments")


def merchant(settings) -> Merchant:
    own = of(settings)
    base = settings.base_url()
    dev = settings.stand_in_enabled
    secret = own.vnpay_hash_secret or (DEV_SECRET if dev else None)
    pay_url = own.vnpay_pay_url or (base + STAND_IN + "/paymentv2/vpcpay.html" if dev else None)
    querydr_url = own.vnpay_querydr_url or (base + STAND_IN + "/merchant_webapi/api/transaction" if dev else None)
    if not (secret and pay_url and querydr_url):
        raise ServiceUnavailable("VNPay is not configured: set IHANOI_VNPAY_HASH_SECRET, IHANOI_VNPAY_PAY_URL "
                                 "and IHANOI_VNPAY_QUERYDR_URL")
    return Merchant(tmn_code=own.vnpay_tmn_code, secret=secret, pay_url=pay_url, querydr_url=querydr_url,
                    return_url=own.vnpay_return_url or base + "/v1/payments/vnpay/return", own=own)
