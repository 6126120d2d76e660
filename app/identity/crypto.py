"""Secrets at rest: AES-GCM encryption and keyed look-up hashes, both derived from one master key.

The master key comes from `IHANOI_MASTER_KEY` (32 random bytes, base64). In dev a key is generated
once into the data folder; production refuses to start without one. Sub-keys are derived with HKDF
so that the encryption key and the look-up key are never the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


class KeyError_(RuntimeError):
    pass


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ihanoi", info=purpose).derive(master)


class Vault:
    """Encrypts small secrets (personal ID numbers, private keys) and hashes them for look-up."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise KeyError_("IHANOI_MASTER_KEY must decode to exactly 32 bytes")
        self._aead = AESGCM(_derive(master_key, b"aes-gcm-v1"))
        self._lookup_key = _derive(master_key, b"lookup-hmac-v1")

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        """version || nonce || ciphertext; `context` is bound as associated data (e.g. b"personal_id")."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        if blob[:1] != _VERSION:
            raise KeyError_("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], context)

    def lookup_hash(self, value: str, *, context: bytes) -> bytes:
        """A keyed hash: equal values give equal hashes, and without the key nothing can be guessed."""
        return hmac.new(self._lookup_key, context + b"\0" + value.encode(), hashlib.sha256).digest()


def load_master_key(value: str | None, *, env: str, data_dir: Path) -> bytes:
    if value:
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise KeyError_("IHANOI_MASTER_KEY is not valid base64") from None
    if env == "prod":
        raise KeyError_("IHANOI_MASTER_KEY is required in production (32 random bytes, base64)")
    # dev and test: one key per data folder, created on first use and kept for the data's lifetime
    path = data_dir / "master.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
    return base64.b64decode(path.read_text().strip())


def token_hash(token: str) -> bytes:
    """Refresh tokens are stored as SHA-256: they are long random values, a keyed hash adds nothing."""
    return hashlib.sha256(token.encode()).digest()
