"""Share codes are short: failed redemptions are limited per caller and per address (429 problem details with
Retry-After, even for a right code once the budget is spent), and no refused or failed try uses the resident's
code up."""

from __future__ import annotations

import httpx

from app.settings import load_settings
from tests.health.support import PATIENT, bearer, facility, visit

WRONG = "ABCDE-FGHJK"


def from_address(client, host: str) -> httpx.AsyncClient:
    """The same app, called from another address."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app, client=(host, 40000)),
                             base_url="http://ihanoi.test")


async def redeem(http, headers, code: str) -> httpx.Response:
    return await http.post("/v1/health/share-codes/redeem", json={"code": code}, headers=headers)


async def unredeemed(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM health_share_code WHERE redeemed_at IS NULL")


async def test_failed_redemptions_are_limited_per_caller_and_per_address(make_client, settings, conn):
    limited = load_settings(dict(settings.environ) | {"IHANOI_HEALTH_RATE_SHARE_REDEEM_FAILED": "3/60",
                                                      "IHANOI_HEALTH_RATE_SHARE_REDEEM_FAILED_ADDRESS": "5/60"})
    async with make_client(limited) as client, from_address(client, "203.0.113.7") as counter:
        _, his_a = await facility(client, conn)
        _, his_b = await facility(client, conn)
        _, his_c = await facility(client, conn)
        _, his_d = await facility(client, conn)
        patient_id = await visit(client, his_a)
        resident = await bearer(client, PATIENT)
        shown = (await client.post("/v1/health/share-codes", json={}, headers=resident)).json()

        # facility A guesses from the counter's address: three failures, then refused before any look-up
        assert [(await redeem(counter, his_a, WRONG)).status_code for _ in range(3)] == [400] * 3
        refused = await redeem(counter, his_a, WRONG)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "urn:ihanoi:problem:too-many-requests"
        assert "share-code" in refused.json()["detail"] and 1 <= int(refused.headers["retry-after"]) <= 60
        # even the right code: refused, and the resident's code is not used up by any of it
        assert (await redeem(counter, his_a, shown["code"])).status_code == 429
        assert await unredeemed(conn) == 1

        # another facility at the same address has its own budget (the address has used 3 of 5)
        assert (await redeem(counter, his_b, WRONG)).status_code == 400
        taken = await redeem(counter, his_b, shown["qr"])
        assert taken.status_code == 200 and taken.json()["patient"] == patient_id
        assert await unredeemed(conn) == 0

        # the address's budget: a fifth failure from it, and every caller there is refused, right code or not
        second = (await client.post("/v1/health/share-codes", json={}, headers=resident)).json()
        assert (await redeem(counter, his_c, WRONG)).status_code == 400
        assert (await redeem(counter, his_c, second["code"])).status_code == 429
        assert await unredeemed(conn) == 1
        # a facility elsewhere is not held back by the counter's guesses
        assert (await redeem(client, his_d, second["code"])).status_code == 200
        # what was refused never reached the record: one consent per successful redemption
        assert await conn.fetchval("SELECT count(*) FROM health_consent WHERE via = 'share_code'") == 2
