"""The health key: seals resources at rest (AES-GCM), hashes look-up values (HMAC), chains the access log.

The key is the module's own setting (`IHANOI_HEALTH_DATA_KEY`), never the master key: a leak of one does not
open the other. Production refuses to run without it; dev and test derive one from the master key (HKDF, its
own purpose) so every process of a run agrees without a file to share. Sub-keys are derived with HKDF so that
sealing, look-up hashes and the log chain never use the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.identity.crypto import load_master_key
from health import config

_VERSION = b"\x01"


class HealthKeyError(RuntimeError):
    pass


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ihanoi-health", info=purpose).derive(key)


class HealthCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise HealthKeyError("IHANOI_HEALTH_DATA_KEY must decode to exactly 32 bytes")
        self._aead = AESGCM(_derive(key, b"seal-v1"))
        self._lookup = _derive(key, b"lookup-v1")
        self._chain = _derive(key, b"access-chain-v1")

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, blob: bytes, *, context: bytes) -> bytes:
        if blob[:1] != _VERSION:
            raise HealthKeyError("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], context)

    def seal_json(self, value: dict, *, context: bytes) -> bytes:
        return self.seal(msgspec.json.encode(value), context=context)

    def open_json(self, blob: bytes, *, context: bytes) -> dict:
        return msgspec.json.decode(self.open(bytes(blob), context=context))

    def lookup(self, value: str, *, context: bytes) -> bytes:
        return hmac.new(self._lookup, context + b"\0" + value.encode(), hashlib.sha256).digest()

    def chain(self, message: bytes) -> bytes:
        return hmac.new(self._chain, message, hashlib.sha256).digest()


@lru_cache(maxsize=8)
def _cipher(key: bytes) -> HealthCipher:
    return HealthCipher(key)


def cipher_of(settings) -> HealthCipher:
    """The process's cipher for these settings (cached per key)."""
    own = config.of(settings).data_key
    if own:
        try:
            key = base64.b64decode(own, validate=True)
        except ValueError:
            raise HealthKeyError("IHANOI_HEALTH_DATA_KEY is not valid base64") from None
    elif settings.env == "prod":
        raise HealthKeyError("IHANOI_HEALTH_DATA_KEY is required in production (32 random bytes, base64)")
    else:
        master = load_master_key(settings.master_key, env=settings.env, data_dir=settings.data_path)
        key = _derive(master, b"health-data-key-dev")
    return _cipher(key)
