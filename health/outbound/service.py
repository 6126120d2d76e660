"""The rules of the outbound sync: what a finished visit's claim holds, and how the outbox is delivered.

Rows are claimed in one short statement (`FOR UPDATE SKIP LOCKED`, pushed ahead by a lease longer than a send's
timeout), so no transaction is open while the receiver is called and two workers never send the same row at
once. The receiver is idempotent on `visit_key` and `revision`: a send whose answer was lost is simply sent again.

A visit that changes after it was sent (its Encounter, or a diagnosis or medicine of it) gets a new revision (the
triggers of migration 061); the receiver keeps the highest revision of a visit. A revision whose claim is the same
as the one delivered before (a facility sending the same visit again) is not sent: 'unchanged'.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import httpx
import msgspec

from health import store as health_store
from health.crypto import HealthCipher
from health.outbound import store
from health.resident.ips import concept_text, describe

log = logging.getLogger("ihanoi.health.outbound")

VISITS_PATH = "/v1/visits"
# Answers worth trying again: the receiver may do better later. Any other 4xx is this claim's own fault and would
# fail the same way again, so the row is marked failed at once (counted and kept for a person to look at).
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 12
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 6 * 3600.0
    timeout_seconds: float = 10.0


def backoff(policy: Policy, attempts: int, retry_after: float | None = None,
            rng: random.Random | None = None) -> float:
    """Seconds before the next try after `attempts` failed ones: base x 2^(n-1), capped, +-20 % jitter so that a
    receiver back from an outage is not hit by every row in the same second; never sooner than its Retry-After."""
    delay = min(policy.backoff_max_seconds, policy.backoff_seconds * 2 ** max(0, attempts - 1))
    delay *= (rng or random).uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.backoff_max_seconds))
    return delay


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _codings(concept) -> list[dict]:
    found = []
    for coding in (concept or {}).get("coding") or ():
        if coding.get("code"):
            found.append({"system": coding.get("system") or "", "code": coding["code"],
                          "display": coding.get("display")})
    return found


async def claim_of(conn, cipher: HealthCipher, row) -> dict | None:
    """The claim the receiver takes for one outbox row, read from the sealed record now; None if the visit is
    gone. Diagnoses are the visit's Conditions, medicines its MedicationRequests (linked by the encounter)."""
    encounter = await health_store.get_resource(conn, cipher, "Encounter", row["encounter_id"])
    if encounter is None:
        return None
    facility = await health_store.facility(conn, encounter.facility_id) if encounter.facility_id else None
    patient = await health_store.patient(conn, row["patient_id"])
    linked = await health_store.find_resources(
        conn, cipher, health_store.Query(patient_id=row["patient_id"], types=("Condition", "MedicationRequest"),
                                         encounter_id=row["encounter_id"]), limit=500, newest_first=False)
    resource = encounter.resource
    period = resource.get("period") or {}
    diagnoses = [c for r in linked if r.resource_type == "Condition" for c in _codings(r.resource.get("code"))]
    medicines = []
    for r in linked:
        if r.resource_type == "MedicationRequest":
            name, dosage = describe(r.resource)
            medicines.append(f"{name} ({dosage})" if dosage else name)
    return {
        "visit_key": row["visit_key"], "revision": row["revision"],
        "facility_code": facility["code"] if facility else "ihanoi",
        "facility_bhyt_code": facility["bhyt_code"] if facility else None,
        "insurance_card": health_store.bhyt_of(cipher, patient) if patient else None,
        "period_start": period.get("start"), "period_end": period.get("end"),
        "visit_class": (resource.get("class") or {}).get("code") or concept_text(resource.get("class")),
        "diagnoses": diagnoses, "medications": medicines,
    }


def claim_hash(cipher: HealthCipher, claim: dict) -> bytes:
    """A keyed hash of what a claim says (its revision aside): the same visit sent again hashes the same."""
    body = {k: v for k, v in claim.items() if k != "revision"}
    return cipher.lookup(msgspec.json.encode(body, order="sorted").decode(), context=b"visit-claim")


async def deliver_due(pool, cipher: HealthCipher, http: httpx.AsyncClient, endpoint: str, policy: Policy, *,
                      batch: int = 100) -> dict[str, int]:
    """One pass over the due rows: delivered, unchanged (not sent), to retry later, or failed for good. Returns the
    counts."""
    counts = {"delivered": 0, "unchanged": 0, "retry": 0, "failed": 0}
    async with pool.acquire() as conn:
        rows = await store.claim_due(conn, limit=batch, lease_seconds=policy.timeout_seconds + 60)
    for row in rows:
        async with pool.acquire() as conn:
            claim = await claim_of(conn, cipher, row)
            sent_before = None if claim is None or row["revision"] == 1 else await store.last_delivered_hash(
                conn, row["destination"], row["encounter_id"])
        status: int | None = None
        wait: float | None = None
        hashed = None if claim is None else claim_hash(cipher, claim)
        if claim is None:
            outcome, error = "failed", "the visit is no longer in the record"
        elif sent_before is not None and sent_before == hashed:
            outcome, error = "unchanged", ""
        else:
            try:
                response = await http.post(endpoint.rstrip("/") + VISITS_PATH, json=claim,
                                           headers={"Idempotency-Key": f"{row['visit_key']}:{row['revision']}"},
                                           timeout=policy.timeout_seconds)
            except httpx.HTTPError as exc:  # no answer: it may or may not have arrived; the key makes a resend safe
                outcome, error = "retry", f"no answer ({type(exc).__name__})"
            else:
                status = response.status_code
                if status in (200, 201):
                    outcome, error = "delivered", ""
                elif status in RETRYABLE:
                    outcome, error, wait = "retry", f"HTTP {status}", _retry_after(response)
                else:
                    outcome, error = "failed", f"HTTP {status} refused the claim"
        if outcome == "retry" and row["attempts"] >= policy.max_attempts:
            outcome, error = "failed", f"{error}; gave up after {row['attempts']} attempts"
        async with pool.acquire() as conn:
            if outcome == "delivered":
                try:
                    receipt = response.json().get("receipt")
                except (ValueError, AttributeError):  # taken, but its answer is not the JSON we expect
                    receipt = None
                await store.delivered(conn, row["id"], status=status, receipt=receipt, claim_hash=hashed,
                                      changes_seen=row["changes"])
            elif outcome == "unchanged":
                await store.unchanged(conn, row["id"], changes_seen=row["changes"])
            elif outcome == "retry":
                await store.retry_later(conn, row["id"], status=status, error=error,
                                        after_seconds=backoff(policy, row["attempts"], wait))
            else:
                await store.failed(conn, row["id"], status=status, error=error)
                log.warning("visit not delivered to social insurance", extra={"outbox": row["id"], "error": error})
        counts[outcome] += 1
    return counts
