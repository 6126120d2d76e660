"""`ihanoi transit validator`: a real process signing in as a machine client against a real server."""

from __future__ import annotations

import subprocess
import uuid

from cryptography.hazmat.primitives import serialization

from tests.conftest import IHANOI, ROOT, process_env
from transit import credential


def test_the_reference_validator_syncs_and_refuses_bad_codes_without_stopping(start_server, database_url,
                                                                               redis_url, tmp_path):
    base, _ = start_server()
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url)
    key = credential.new_key()
    (tmp_path / "gate.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (tmp_path / "gate.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    client_id = f"validator-{uuid.uuid4().hex[:8]}"
    added = subprocess.run([*IHANOI, "clients", "add", "--id", client_id, "--name", "Xe 29B", "--role",
                            "transit_validator:hanoibus", "--public-key", str(tmp_path / "gate.pub")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    stranger = credential.new_key()
    forged = credential.issue(credential.Ticket(key_id=1, ticket_id=5, operator=1, route=0, product=30, category=1,
                                                valid_from=0, valid_until=2**32 - 1, paper=True), stranger)
    lines = ["zz-not-a-code", (b"\x01" * 300).hex(), forged.hex(), ""]
    ran = subprocess.run([*IHANOI, "transit", "validator", "--url", base, "--client-id", client_id, "--key-file",
                          str(tmp_path / "gate.pem"), "--route", "102", "--vehicle", "29B-1", "--state",
                          str(tmp_path / "state.json"), "run"], input="\n".join(lines), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    answers = ran.stdout.strip().splitlines()
    assert answers[0] in ("REFUSE malformed", "REFUSE truncated"), ran.stdout
    assert answers[1:3] == ["REFUSE oversized", "REFUSE bad-issuer-signature"], ran.stdout
    assert "offline" not in ran.stderr
