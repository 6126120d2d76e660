"""Signing in to the console the way a browser does: the console's own start, the VNeID stand-in, the callback."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from app.identity.devlogin import persona

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VERSION = re.compile(r'name="version" value="([^"]+)"')


async def console_sign_in(client, personal_id: str, *, level: int = 2, next: str = "/console/feedback"):
    """Returns the callback's response (303 to `next` with the session cookie, or the refusal page)."""
    started = await client.get("/console/login/start", params={"next": next})
    assert started.status_code == 302, started.text
    url = urlsplit(started.headers["location"])
    form = {k: v[0] for k, v in parse_qs(url.query).items()} | persona(personal_id) | {"level": str(level)}
    authorized = await client.post(url.path, data=form)
    assert authorized.status_code == 302, authorized.headers
    back = urlsplit(authorized.headers["location"])
    assert back.path == "/console/login/callback"
    return await client.get(back.path + "?" + back.query)


def csrf_of(html: str) -> str:
    return CSRF.search(html).group(1)


def version_of(html: str) -> str:
    return VERSION.search(html).group(1)
