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


def _validator(base: str, data_dir, state, env, codes: list[bytes]) -> subprocess.CompletedProcess:
    from transit import demo

    return subprocess.run([*IHANOI, "transit", "validator", "--url", base, "--client-id", demo.VALIDATOR, "--key-file",
                           str(data_dir / demo.KEY_FILE), "--route", "102", "--vehicle", "29B-2", "--state",
                           str(state), "run"], input="".join(c.hex() + "\n" for c in codes), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_seeded_demo_a_restarted_validator_still_refuses_a_code_it_accepted(start_server, databases, redis_url,
                                                                            tmp_path):
    """`ihanoi seed`, then the demo resident's pass shown to the seeded validator, which is stopped and started
    again between scans: its memory file (beside its state file) refuses the same code; without it, it would not."""
    import asyncio
    import base64
    import time

    import httpx

    from app.identity.devlogin import sign_in
    from transit import demo

    data_dir = tmp_path / "data"
    # a database of its own, migrated and seeded by `ihanoi seed` (the run's may hold what `ihanoi dev` seeded)
    database_url = asyncio.run(databases.create("seed"))
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_DATA_DIR=str(data_dir))
    seeded = subprocess.run([*IHANOI, "seed"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert seeded.returncode == 0, seeded.stderr
    assert "seed: transit validators: 1" in seeded.stdout and "seed: transit passes: 1" in seeded.stdout, seeded.stdout
    base, _ = start_server(DATABASE_URL=database_url)

    async def phone_code() -> bytes:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            signed = await sign_in(http, demo.RESIDENT)
            resident = {"Authorization": f"Bearer {signed.json()['access_token']}"}
            ticket = (await http.get("/v1/transit/tickets", headers=resident)).json()["tickets"][0]
            phone = credential.new_key()
            device = await http.post("/v1/transit/devices", headers=resident, json={
                "public_key": base64.b64encode(credential.compressed(phone.public_key())).decode()})
            level1 = await http.get(f"/v1/transit/tickets/{ticket['id']}/credential",
                                    params={"device_id": device.json()["id"]}, headers=resident)
            assert level1.status_code == 200, level1.text
            return credential.present(base64.b64decode(level1.json()["level1"]), phone, int(time.time()))

    code = asyncio.run(phone_code())
    state = tmp_path / "bus.json"
    first = _validator(base, data_dir, state, env, [code])
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "ACCEPT", first.stdout
    again = _validator(base, data_dir, state, env, [code])  # a new process: what it knows came from its disk
    assert again.stdout.splitlines()[0] == "REFUSE already-used", again.stdout
    (tmp_path / "bus.json.seen.log").unlink()  # the control: a validator that forgot would let it through
    forgot = _validator(base, data_dir, state, env, [code])
    assert forgot.stdout.splitlines()[0] == "ACCEPT", forgot.stdout


def test_issuer_key_rotation_from_the_command_line(database_url, redis_url):
    import asyncio

    import asyncpg

    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url)

    def rotate() -> subprocess.CompletedProcess:
        return subprocess.run([*IHANOI, "transit", "keys", "rotate"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    first, second = rotate(), rotate()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    new_id = int(second.stdout.split()[2])
    old_id = int(first.stdout.split()[2])
    assert second.stdout.splitlines()[0] == f"issuer key {new_id} signs from now", second.stdout
    assert f"issuer key {old_id} retired: verifies codes until " in second.stdout, second.stdout

    async def keys():
        conn = await asyncpg.connect(database_url)
        try:
            return {r["id"]: r for r in await conn.fetch(
                "SELECT id, retired_at, verify_until - retired_at AS overlap FROM transit_issuer_key")}
        finally:
            await conn.close()

    rows = asyncio.run(keys())
    assert rows[new_id]["retired_at"] is None
    assert rows[old_id]["retired_at"] is not None and rows[old_id]["overlap"].total_seconds() == 72 * 3600
    assert [k for k, r in rows.items() if r["retired_at"] is None] == [new_id]  # one key signs
