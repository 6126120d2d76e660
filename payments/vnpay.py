"""The VNPay 2.1.0 protocol: signed payment URLs, checking what the gateway sends, querydr.

Shared by the merchant side (service.py) and the local gateway stand-in (stand_in.py), so both sign and
check exactly alike. Nothing here logs: the secret only ever goes into `hmac`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

GMT7 = ZoneInfo("Asia/Ho_Chi_Minh")
VERSION = "2.1.0"
HASH_FIELDS = ("vnp_SecureHash", "vnp_SecureHashType")

# querydr: fixed field orders joined with "|" (not the sorted query string of pay and IPN)
QUERYDR_REQUEST_FIELDS = ("vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TxnRef",
                          "vnp_TransactionDate", "vnp_CreateDate", "vnp_IpAddr", "vnp_OrderInfo")
QUERYDR_RESPONSE_FIELDS = ("vnp_ResponseId", "vnp_Command", "vnp_ResponseCode", "vnp_Message", "vnp_TmnCode",
                           "vnp_TxnRef", "vnp_Amount", "vnp_BankCode", "vnp_PayDate", "vnp_TransactionNo",
                           "vnp_TransactionType", "vnp_TransactionStatus", "vnp_OrderInfo", "vnp_PromotionCode",
                           "vnp_PromotionAmount")


def gmt7(moment: dt.datetime) -> str:
    """`yyyyMMddHHmmss` in GMT+7, as VNPay dates are written."""
    return moment.astimezone(GMT7).strftime("%Y%m%d%H%M%S")


def parse_gmt7(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=GMT7)


def _encode(value: object) -> str:
    # PHP's urlencode, which VNPay's reference code uses: spaces as '+', '~' encoded too
    return quote_plus(str(value), safe="").replace("~", "%7E")


def canonical(fields: Mapping[str, object]) -> str:
    """The signed text: the vnp_* fields but the hash fields, sorted by name, URL-encoded, joined k=v&k=v."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(fields.items())
                    if k.startswith("vnp_") and k not in HASH_FIELDS and v not in (None, ""))


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha512).hexdigest()


def signed_query(secret: str, fields: Mapping[str, object]) -> str:
    text = canonical(fields)
    return f"{text}&vnp_SecureHash={sign(secret, text)}"


def verify(secret: str, fields: Mapping[str, str]) -> bool:
    """True when vnp_SecureHash is the HMAC-SHA512 of the other fields (compared in constant time)."""
    given = fields.get("vnp_SecureHash")
    if not given:
        return False
    return hmac.compare_digest(sign(secret, canonical(fields)), given.lower())


def sign_piped(secret: str, fields: Mapping[str, object], order: tuple[str, ...]) -> str:
    return sign(secret, "|".join(str(fields.get(name) or "") for name in order))


def verify_piped(secret: str, fields: Mapping[str, object], order: tuple[str, ...]) -> bool:
    given = str(fields.get("vnp_SecureHash") or "")
    return bool(given) and hmac.compare_digest(sign_piped(secret, fields, order), given.lower())


def pay_fields(*, tmn_code: str, amount_vnd: int, txn_ref: str, order_info: str, return_url: str, ip_addr: str,
               created: dt.datetime, expires: dt.datetime, locale: str = "vn", bank_code: str | None = None,
               order_type: str = "topup") -> dict[str, str]:
    fields = {
        "vnp_Version": VERSION, "vnp_Command": "pay", "vnp_TmnCode": tmn_code,
        "vnp_Amount": str(amount_vnd * 100),  # VNPay counts in hundredths of a đồng
        "vnp_CurrCode": "VND", "vnp_TxnRef": txn_ref, "vnp_OrderInfo": order_info, "vnp_OrderType": order_type,
        "vnp_Locale": locale, "vnp_ReturnUrl": return_url, "vnp_IpAddr": ip_addr,
        "vnp_CreateDate": gmt7(created), "vnp_ExpireDate": gmt7(expires),
    }
    if bank_code:
        fields["vnp_BankCode"] = bank_code
    return fields
