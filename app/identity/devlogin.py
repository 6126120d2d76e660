"""The whole VNeID sign-in, driven over HTTP against the local stand-in (dev and test only).

Used by `ihanoi token` and by the tests: it does what the mobile app and the resident's browser do,
so what it gets back is exactly what a real sign-in gives.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import httpx

from app.identity.personal_id import PersonalIdError, parse_personal_id
from app.identity.stand_in import DEMO_RESIDENTS


def persona(personal_id: str) -> dict[str, str]:
    """A demo resident's details, or details consistent with any well-formed number."""
    for demo in DEMO_RESIDENTS:
        if demo["personal_id"] == personal_id:
            return dict(demo)
    try:
        parsed = parse_personal_id(personal_id)
        birth, sex = dt.date(parsed.birth_year, 1, 1).isoformat(), parsed.sex
    except PersonalIdError:
        birth, sex = "1990-01-01", "male"
    return {"personal_id": personal_id, "full_name": "Cư dân Thử nghiệm", "birth_date": birth, "sex": sex}


async def sign_in(
    client: httpx.AsyncClient,
    personal_id: str,
    *,
    level: int = 2,
    scenario: str = "",
    device_name: str = "Thiết bị thử",
    platform: str = "android",
    **details: str,
) -> httpx.Response:
    """Start, authorize at the stand-in, complete; returns the `complete` response (200 with tokens)."""
    started = await client.post("/v1/auth/vneid/start", json={"device_name": device_name, "platform": platform})
    if started.status_code != 200:
        return started
    url = urlsplit(started.json()["authorization_url"])
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    form = {**params, **persona(personal_id), **details, "level": str(level), "scenario": scenario}
    authorized = await client.post(url.path, data=form)
    if authorized.status_code != 302:
        raise RuntimeError(f"the stand-in refused the sign-in: {authorized.status_code} "
                           f"{authorized.headers.get('x-error', '')}")
    back = {k: v[0] for k, v in parse_qs(urlsplit(authorized.headers["location"]).query).items()}
    return await client.post("/v1/auth/vneid/complete", json={"state": back["state"], "code": back["code"]})
