"""The two-level QR credential: encode (the app and the issuer), parse and verify (gates and validators).

No I/O and nothing from the rest of the backend: a mobile developer, a validator and the tests use this
file as it is. Binary, big-endian, no Base64 inside the QR (see the README's "Transit QR layout"):

    level 1 (signed by the issuer, 29 bytes + 33 for the device key):
      0  u8   version (1)
      1  u8   flags: bit 0 = carries a device key (level 2 required), bit 1 = paper single ride
      2  u16  issuer key id
      4  u64  ticket id
      12 u16  operator code
      14 u32  route id (0 = every route of the operator)
      18 u16  fare product code
      20 u8   rider category code
      21 u32  valid from (Unix seconds, UTC)
      25 u32  valid until (Unix seconds, UTC)
      29 [33] device public key, compressed P-256 point (only with flag bit 0)
      .. [64] issuer signature, ECDSA P-256 / SHA-256, raw r||s, over every byte before it
    level 2 (signed by the phone's device key, only with flag bit 0):
      .. u32  timestamp (Unix seconds, UTC)
      .. [64] device signature, raw r||s, over level 1 (with its signature) and the timestamp

A phone's code is 194 bytes and a paper ticket's 93: both fit a version 10 QR at error correction M (213).
A code whose flags promise a device key but whose level 2 is missing is refused (stripping level 2 is fraud).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VERSION = 1
FLAG_DEVICE = 0x01
FLAG_PAPER = 0x02
_HEAD = struct.Struct(">BBHQHIHBII")
HEAD_SIZE = _HEAD.size  # 29
POINT_SIZE = 33
SIG_SIZE = 64
L2_SIZE = 4 + SIG_SIZE
MAX_SIZE = HEAD_SIZE + POINT_SIZE + SIG_SIZE + L2_SIZE  # 194
QR_CAPACITY = 213  # version 10, error correction M, byte mode
_ECDSA = ec.ECDSA(hashes.SHA256())
_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))

# Reason codes a refusal names (the same online and offline).
REASONS = (
    "malformed", "truncated", "oversized", "unsupported-version", "unknown-key", "bad-issuer-signature",
    "level2-missing", "bad-device-signature", "stale", "future-timestamp", "not-yet-valid", "expired",
    "wrong-operator", "wrong-route", "revoked", "device-revoked", "already-used",
    "no-tap-off",  # a validator asked to log a tap off on a route that does not ask for one
    "storage-failed",  # a validator could not keep the accepted code in its own memory: refused, not let through
)


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ticket:
    """What level 1 says."""

    key_id: int
    ticket_id: int
    operator: int
    route: int
    product: int
    category: int
    valid_from: int
    valid_until: int
    device_key: bytes | None = None  # compressed point
    paper: bool = False

    def body(self) -> bytes:
        flags = (FLAG_DEVICE if self.device_key else 0) | (FLAG_PAPER if self.paper else 0)
        head = _HEAD.pack(VERSION, flags, self.key_id, self.ticket_id, self.operator, self.route, self.product,
                          self.category, self.valid_from, self.valid_until)
        if self.device_key:
            if len(self.device_key) != POINT_SIZE:
                raise ValueError("a device key is a 33-byte compressed P-256 point")
            head += self.device_key
        return head


@dataclass(frozen=True)
class Scanned:
    """A parsed code; `signed` is level 1 without its signature, `level1` with it."""

    ticket: Ticket
    signed: bytes
    issuer_sig: bytes
    timestamp: int | None
    device_sig: bytes | None

    @property
    def level1(self) -> bytes:
        return self.signed + self.issuer_sig

    def fingerprint(self) -> bytes:
        """Identifies these exact bytes (a screenshot has the same): what 'used once' is keyed on."""
        return hashlib.sha256(self.level1 + (self.device_sig or b"")).digest()[:16]


# ---- keys and raw signatures --------------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def compressed(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """A compressed (or uncompressed) P-256 point; ValueError if it is not one."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, _ECDSA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """A raw r||s signature over `data`: hashed here (hashlib) and verified prehashed, with a key object parsed
    once by the caller (a point's decompression costs about half a verification)."""
    if len(signature) != SIG_SIZE:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, hashlib.sha256(data).digest(), _PREHASHED)
    except InvalidSignature:
        return False
    return True


# ---- encoding ---------------------------------------------------------------------------------------------------


def issue(ticket: Ticket, issuer: ec.EllipticCurvePrivateKey) -> bytes:
    """Level 1: the ticket and the issuer's signature (what the backend hands the app, or prints)."""
    body = ticket.body()
    return body + sign_raw(issuer, body)


def present(level1: bytes, device: ec.EllipticCurvePrivateKey, timestamp: int) -> bytes:
    """The app's side: level 1 and a fresh signed timestamp (redo every 15-30 s); the QR's bytes."""
    stamp = struct.pack(">I", timestamp)
    return level1 + stamp + sign_raw(device, level1 + stamp)


# ---- parsing and verifying (never raises anything but Refused) ------------------------------------------------


def parse(data: object) -> Scanned:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Refused("malformed")
    data = bytes(data)
    if len(data) < HEAD_SIZE:
        raise Refused("truncated" if data else "malformed")
    if len(data) > MAX_SIZE:
        raise Refused("oversized")
    version, flags, key_id, ticket_id, operator, route, product, category, start, end = _HEAD.unpack_from(data)
    if version != VERSION:
        raise Refused("unsupported-version")
    if flags & ~(FLAG_DEVICE | FLAG_PAPER) or (flags & FLAG_DEVICE and flags & FLAG_PAPER):
        raise Refused("malformed")
    at = HEAD_SIZE
    device_key = None
    if flags & FLAG_DEVICE:
        if len(data) < at + POINT_SIZE:
            raise Refused("truncated")
        device_key = data[at:at + POINT_SIZE]
        at += POINT_SIZE
    if len(data) < at + SIG_SIZE:
        raise Refused("truncated")
    signed, issuer_sig = data[:at], data[at:at + SIG_SIZE]
    at += SIG_SIZE
    timestamp = device_sig = None
    rest = len(data) - at
    if flags & FLAG_DEVICE:
        if rest == 0:
            raise Refused("level2-missing")
        if rest < L2_SIZE:
            raise Refused("truncated")
        if rest > L2_SIZE:
            raise Refused("oversized")
        (timestamp,) = struct.unpack_from(">I", data, at)
        device_sig = data[at + 4:]
    elif rest:
        raise Refused("oversized")
    ticket = Ticket(key_id=key_id, ticket_id=ticket_id, operator=operator, route=route, product=product,
                    category=category, valid_from=start, valid_until=end, device_key=device_key,
                    paper=bool(flags & FLAG_PAPER))
    return Scanned(ticket=ticket, signed=signed, issuer_sig=issuer_sig, timestamp=timestamp, device_sig=device_sig)


@dataclass(frozen=True)
class Policy:
    freshness: int = 30  # seconds a device timestamp stays good
    skew: int = 5  # seconds a phone's clock may run ahead of the validator's


def verify(data: object, keys: Mapping[int, ec.EllipticCurvePublicKey] | Callable[[int], object], now: int, *,
           operator: int | None = None, route: int | None = None, policy: Policy = Policy(),
           device_keys: dict[bytes, ec.EllipticCurvePublicKey] | None = None,
           verified: set[bytes] | None = None) -> Scanned:
    """Every offline check, cheapest first; returns the parsed code or raises Refused(reason).

    `keys` finds an issuer public key by key id; `device_keys` is an optional cache of parsed points, and
    `verified` of level-1 bytes whose issuer signature already verified (a pass's level 1 is shown for a
    month: only the phone's signature is new each time). Deny-lists and 'used once' are the caller's.
    """
    scanned = parse(data)
    ticket = scanned.ticket
    if scanned.timestamp is not None:
        if scanned.timestamp > now + policy.skew:
            raise Refused("future-timestamp")
        if scanned.timestamp < now - policy.freshness:
            raise Refused("stale")
    if now < ticket.valid_from - policy.skew:
        raise Refused("not-yet-valid")
    if now >= ticket.valid_until:
        raise Refused("expired")
    if operator is not None and ticket.operator != operator:
        raise Refused("wrong-operator")
    if route is not None and ticket.route not in (0, route):
        raise Refused("wrong-route")
    issuer = keys(ticket.key_id) if callable(keys) else keys.get(ticket.key_id)
    if issuer is None:
        raise Refused("unknown-key")
    level1 = scanned.level1
    if verified is None or level1 not in verified:
        if not verify_raw(issuer, scanned.issuer_sig, scanned.signed):  # type: ignore[arg-type]
            raise Refused("bad-issuer-signature")
        if verified is not None:
            if len(verified) >= 100_000:
                verified.clear()
            verified.add(level1)
    if ticket.device_key is not None:
        device = device_keys.get(ticket.device_key) if device_keys is not None else None
        if device is None:
            try:
                device = public_key(ticket.device_key)
            except ValueError:
                raise Refused("malformed") from None
            if device_keys is not None and len(device_keys) < 100_000:
                device_keys[ticket.device_key] = device
        stamp = struct.pack(">I", scanned.timestamp)
        if not verify_raw(device, scanned.device_sig, level1 + stamp):  # type: ignore[arg-type]
            raise Refused("bad-device-signature")
    return scanned
