"""The reference validator: a machine client that verifies offline and uploads its taps when online.

It holds only public keys (a stolen validator cannot mint tickets). `sync` downloads the issuer keys, the
deny-lists and the fare rules; `scan` decides from that alone and logs the tap; `upload` sends the log in
batches whose tap ids are unique forever, so a batch sent twice (a lost answer) counts once. An offline
validator cannot see other validators' scans: a screenshot shown on two buses is found at reconciliation.
Nothing a passenger shows makes it raise: a bad code is a refusal with a reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt

from transit import credential


class SeenStore:
    """The validator's own memory of what it accepted, in a local append-only file (the device's storage, not
    the server's).

    One line per accepted code, written with one `write` before the answer is shown, so an accepted code
    survives the validator's process dying (the device's power failing may lose the last few, as the OS has
    not flushed them); read back at start, so a restarted validator still refuses a code it already accepted
    and a single ride it already let board. A line cut short by a crash is skipped. At start the file is
    rewritten without what has aged out."""

    KEEP_SECONDS = 2 * 24 * 3600  # longer than any code stays valid (a paper ticket: 24 h)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def load(self, now: int) -> tuple[dict[bytes, int], set[int]]:
        horizon = now - self.KEEP_SECONDS
        kept: list[bytes] = []
        seen: dict[bytes, int] = {}
        singles: set[int] = set()
        if self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    fingerprint, at, single = line.split(b" ")
                    when = int(at)
                    code = bytes.fromhex(fingerprint.decode())
                    ticket = None if single == b"-" else int(single)
                except ValueError:  # a line the process died writing
                    continue
                if when >= horizon:
                    kept.append(line + b"\n")
                    seen[code] = when
                    if ticket is not None:
                        singles.add(ticket)
        fresh = self.path.with_name(self.path.name + ".new")
        fresh.write_bytes(b"".join(kept))
        fresh.replace(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return seen, singles

    @staticmethod
    def _line(fingerprint: bytes, at: int, single_ticket: int | None) -> bytes:
        single = b"-" if single_ticket is None else b"%d" % single_ticket
        return b"%s %d %s\n" % (fingerprint.hex().encode(), at, single)

    def remember(self, fingerprint: bytes, now: int, single_ticket: int | None) -> None:
        if self.fd is None:
            self.load(now)
        line = self._line(fingerprint, now, single_ticket)  # one line: both the code and its single ride, or neither
        if os.write(self.fd, line) != len(line):
            raise OSError("the validator's memory took only part of a line")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class Validator:
    client_id: str
    private_key: object  # the client's own key (private_key_jwt), not an issuer key
    base_url: str
    vehicle: str
    route_id: int
    operator_code: int = 0
    keys: dict[int, object] = field(default_factory=dict)
    revoked_tickets: set[int] = field(default_factory=set)
    revoked_devices: set[bytes] = field(default_factory=set)
    policy: credential.Policy = credential.Policy()
    tap_off_routes: set[int] = field(default_factory=set)
    log: list[dict] = field(default_factory=list)  # taps not yet uploaded
    seen: dict[bytes, int] = field(default_factory=dict)  # fingerprint -> when (this validator's own scans)
    used_singles: set[int] = field(default_factory=set)
    single_products: set[int] = field(default_factory=set)
    synced_at: float = 0.0
    memory: SeenStore | None = None  # where accepted codes are kept between runs (the CLI's file)
    _token: tuple[str, float] | None = None
    _devices: dict[bytes, object] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)

    # ---- talking to the backend ----

    async def token(self, http: httpx.AsyncClient) -> str:
        if self._token and self._token[1] > time.time() + 30:
            return self._token[0]
        now = int(time.time())
        assertion = jwt.encode({"iss": self.client_id, "sub": self.client_id, "aud": self.base_url + "/oauth/token",
                                "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}, self.private_key,
                               algorithm="ES256")
        response = await http.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        response.raise_for_status()
        body = response.json()
        self._token = (body["access_token"], time.time() + body["expires_in"])
        return body["access_token"]

    async def sync(self, http: httpx.AsyncClient) -> dict:
        response = await http.get("/v1/transit/validator/sync",
                                   headers={"Authorization": f"Bearer {await self.token(http)}"})
        response.raise_for_status()
        body = response.json()
        self.operator_code = body["operator_code"]
        self._verified = set()
        self.keys = {k["key_id"]: credential.public_key(base64.b64decode(k["public_key"])) for k in body["keys"]}
        self.revoked_tickets = set(body["revoked_tickets"])
        self.revoked_devices = {base64.b64decode(d) for d in body["revoked_devices"]}
        self.policy = credential.Policy(body["freshness_seconds"], body["clock_skew_seconds"])
        self.tap_off_routes = {r["id"] for r in body["routes"] if r["tap_off"]}
        self.single_products = {p["code"] for p in body["fare_products"] if p["kind"] == "single"}
        self.synced_at = time.time()
        return body

    async def upload(self, http: httpx.AsyncClient, batch_size: int = 500) -> list[dict]:
        receipts = []
        while self.log:
            batch = self.log[:batch_size]
            # the key names the batch: a retry after a lost answer is the same request
            key = "taps-" + uuid.uuid5(uuid.NAMESPACE_URL, ",".join(t["tap_id"] for t in batch)).hex
            response = await http.post("/v1/transit/validator/taps", json={"taps": batch}, headers={
                "Authorization": f"Bearer {await self.token(http)}", "Idempotency-Key": key})
            response.raise_for_status()
            receipts.append(response.json())
            del self.log[:len(batch)]
        return receipts

    # ---- offline ----

    def scan(self, data: object, *, now: int | None = None, direction: str = "on") -> tuple[bool, str | None]:
        """Accept or refuse a scanned code from what the last sync brought; the tap is logged either way."""
        now = int(time.time()) if now is None else now
        accepted, reason, ticket_id, fingerprint = False, None, 0, b""
        try:
            if direction not in ("on", "off") or (direction == "off" and self.route_id not in self.tap_off_routes):
                raise credential.Refused("no-tap-off")
            scanned = credential.verify(data, self.keys, now, operator=self.operator_code, route=self.route_id,
                                        policy=self.policy, device_keys=self._devices,
                                        verified=self._verified)
            ticket_id, fingerprint = scanned.ticket.ticket_id, scanned.fingerprint()
            if ticket_id in self.revoked_tickets:
                raise credential.Refused("revoked")
            if scanned.ticket.device_key is not None and scanned.ticket.device_key in self.revoked_devices:
                raise credential.Refused("device-revoked")
            if direction == "on":
                if fingerprint in self.seen:
                    raise credential.Refused("already-used")
                if scanned.ticket.product in self.single_products and ticket_id in self.used_singles:
                    raise credential.Refused("already-used")
            accepted = True
        except credential.Refused as refused:
            reason = refused.reason
        except Exception:  # a validator never stops for a passenger's code
            reason = "malformed"
        if accepted:
            single = direction == "on" and scanned.ticket.product in self.single_products
            if self.memory is not None:  # kept before the rider is let through
                try:
                    self.memory.remember(fingerprint, now, ticket_id if single else None)
                except OSError:
                    accepted, reason = False, "storage-failed"  # never let a code through unrecorded
        if accepted:
            self.seen[fingerprint] = now
            if single:
                self.used_singles.add(ticket_id)
            horizon = now - self.policy.freshness - self.policy.skew
            if len(self.seen) > 10_000:
                # a paper code's bytes stay the same all day: its single ride is in used_singles
                self.seen = {f: t for f, t in self.seen.items() if t >= horizon}
        if ticket_id:  # taps of codes that did not even parse name no ticket and are not uploaded
            self.log.append({"tap_id": str(uuid.uuid4()), "ticket_id": ticket_id, "route_id": self.route_id,
                             "vehicle": self.vehicle, "direction": direction,
                             "at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(), "accepted": accepted,
                             "reason": reason, "fingerprint": (fingerprint or bytes(16)).hex()})
        return accepted, reason

    # ---- a state file for the CLI ----

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"log": self.log, "used_singles": sorted(self.used_singles)}))

    def restore(self, path: Path, memory: SeenStore | None = None) -> None:
        if path.exists():
            data = json.loads(path.read_text())
            self.log = data.get("log", [])
            self.used_singles = set(data.get("used_singles", []))
        if memory is not None:
            self.memory = memory
            seen, singles = memory.load(int(time.time()))
            self.seen.update(seen)
            self.used_singles |= singles
