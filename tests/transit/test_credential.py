"""The credential library alone: sizes against the QR's capacity, every refusal by its reason, and no input
that makes the verifier raise anything but a refusal."""

from __future__ import annotations

import os
import random
import struct

import pytest
import qrcode

from transit import credential
from transit.credential import Policy, Refused, Ticket

NOW = 1_780_000_000
ISSUER = credential.new_key()
KEYS = {7: ISSUER.public_key()}


def ticket(device=None, **over) -> Ticket:
    fields = dict(key_id=7, ticket_id=123456789, operator=1, route=101, product=10, category=1,
                  valid_from=NOW - 3600, valid_until=NOW + 86400,
                  device_key=credential.compressed(device.public_key()) if device else None)
    return Ticket(**(fields | over))


def phone_code(at=NOW, **over):
    device = credential.new_key()
    level1 = credential.issue(ticket(device, **over), ISSUER)
    return credential.present(level1, device, at), device, level1


def verdict(data, now=NOW, **kw) -> str:
    try:
        credential.verify(data, KEYS, now, **kw)
    except Refused as refused:
        return refused.reason
    return "accepted"


def test_sizes_fit_a_version_10_qr_at_level_m():
    code, _, _ = phone_code()
    paper = credential.issue(ticket(paper=True), ISSUER)
    assert len(code) == credential.MAX_SIZE == 194 and len(paper) == 93
    for data in (code, paper):
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        qr.add_data(data, optimize=0)
        qr.make(fit=True)
        assert qr.version <= 10
    assert credential.QR_CAPACITY == 213


def test_a_fresh_phone_code_and_a_paper_ticket_are_accepted():
    code, _, _ = phone_code()
    assert verdict(code, operator=1, route=101) == "accepted"
    assert verdict(credential.issue(ticket(paper=True), ISSUER), operator=1, route=101) == "accepted"
    network = credential.issue(ticket(route=0, paper=True), ISSUER)
    assert verdict(network, route=186) == "accepted"


def test_each_refusal_names_its_reason():
    code, device, level1 = phone_code()
    forged = bytearray(code)
    forged[credential.HEAD_SIZE + credential.POINT_SIZE + 3] ^= 0x01  # inside the issuer's signature
    assert verdict(bytes(forged)) == "bad-issuer-signature"
    other_issuer = credential.issue(ticket(device), credential.new_key())
    assert verdict(credential.present(other_issuer, device, NOW)) == "bad-issuer-signature"
    # level 1 lifted from a genuine ticket, presented with another phone's key
    assert verdict(credential.present(level1, credential.new_key(), NOW)) == "bad-device-signature"
    # a timestamp edited forward without re-signing
    edited = level1 + struct.pack(">I", NOW) + code[-64:]
    assert verdict(edited, now=NOW) == "accepted"
    assert verdict(level1 + struct.pack(">I", NOW - 1) + code[-64:], now=NOW) == "bad-device-signature"
    assert verdict(code, now=NOW + 31) == "stale"
    assert verdict(code, now=NOW + 16, policy=Policy(freshness=15)) == "stale"
    future, _, _ = phone_code(at=NOW + 60)
    assert verdict(future) == "future-timestamp"
    assert verdict(phone_code(at=NOW + 4)[0]) == "accepted"  # within the allowed skew
    assert verdict(phone_code(valid_until=NOW - 1)[0]) == "expired"
    assert verdict(phone_code(valid_from=NOW + 3600)[0]) == "not-yet-valid"
    assert verdict(code, route=102) == "wrong-route"
    assert verdict(code, operator=2) == "wrong-operator"
    assert verdict(phone_code(key_id=99)[0]) == "unknown-key"
    # level 2 stripped while level 1 promises a device key: fraud, not a paper ticket
    assert verdict(level1) == "level2-missing"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "malformed"), (None, "malformed"), ("text", "malformed"), (b"\x01\x01\x00", "truncated"),
    (b"\x02" + bytes(200), "oversized"), (b"\x02" + bytes(150), "unsupported-version"),
    (b"\x01\xff" + bytes(150), "malformed"), (b"\x01\x03" + bytes(150), "malformed"),
])
def test_garbage_is_refused_by_reason(data, reason):
    assert verdict(data) == reason


def test_truncated_oversized_and_random_bytes_never_raise():
    code, _, _ = phone_code()
    assert verdict(code[:-1]) == "truncated"
    assert verdict(code + b"\x00") == "oversized"
    assert verdict(credential.issue(ticket(paper=True), ISSUER) + b"\x00") == "oversized"
    rng = random.Random(11)
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.4:
            data = os.urandom(rng.randrange(0, 260))
        elif choice < 0.8:  # a genuine code with bytes flipped
            data = bytearray(code)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            data = bytes(data)
        else:
            data = code[:rng.randrange(len(code))]
        try:
            credential.verify(data, KEYS, NOW)
        except Refused as refused:
            assert refused.reason in credential.REASONS


def test_the_level1_cache_skips_only_an_already_verified_issuer_signature():
    cache: set[bytes] = set()
    code, device, level1 = phone_code()
    assert credential.verify(code, KEYS, NOW, verified=cache) and level1 in cache
    # the same level 1 with another phone's signature is still refused; a forged level 1 is not in the cache
    assert verdict(credential.present(level1, credential.new_key(), NOW), verified=cache) == "bad-device-signature"
    forged = bytearray(code)
    forged[40] ^= 1
    assert verdict(bytes(forged), verified=cache) == "bad-issuer-signature"
    assert verdict(credential.present(level1, device, NOW + 1), now=NOW + 1, verified=cache) == "accepted"


def test_the_freshness_window_is_15_to_30_seconds():
    from app.settings import SettingsError, load_settings

    assert load_settings({"IHANOI_TRANSIT_QR_FRESHNESS": "20"}).of("transit").qr_freshness_seconds == 20
    for bad in ("10", "31", "abc"):
        with pytest.raises(SettingsError, match="IHANOI_TRANSIT_QR_FRESHNESS"):
            load_settings({"IHANOI_TRANSIT_QR_FRESHNESS": bad}).of("transit")
