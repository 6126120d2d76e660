"""Everything a module may declare works with no edit outside its folder: the test module
(tests/fixture_module) brings a problem type, a role, a notification category and template, settings,
a CLI command and a live channel, and declares idempotent routes; the second test module is level 2."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import msgspec
import pytest

from app import live
from app.asgi import create_app
from app.identity.devlogin import sign_in
from app.settings import SettingsError
from tests.conftest import EXTRA_MODULES, IHANOI, ROOT, TEST_MODULES, process_env

RESIDENT, ADMIN = "001090012345", "001080033333"


async def bearer(client, personal_id: str = RESIDENT, level: int = 2) -> dict[str, str]:
    response = await sign_in(client, personal_id, level=level)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_item(client, quantity: int = 1) -> int:
    response = await client.post("/v1/fixture/items", json={"name": f"item-{uuid.uuid4().hex[:8]}",
                                                            "quantity": quantity})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_a_modules_problem_type_has_its_titles_in_both_languages(client):
    item = await new_item(client, quantity=0)
    for language, title in (("vi", "Hết hàng"), ("en", "Out of stock")):
        response = await client.post(f"/v1/fixture/items/{item}/take", headers={"Accept-Language": language})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:ihanoi:problem:fixture-out-of-stock"
        assert response.json()["title"] == title


async def test_an_idempotent_route_runs_once_per_key(client, conn):
    item = await new_item(client, quantity=5)
    headers = {"Idempotency-Key": "take-" + uuid.uuid4().hex}
    first = await client.post(f"/v1/fixture/items/{item}/take", headers=headers)
    again = await client.post(f"/v1/fixture/items/{item}/take", headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await conn.fetchval("SELECT quantity FROM fixture_item WHERE id = $1", item) == 4
    # the same key for another request is refused; without a key every request runs
    other = await new_item(client)
    reused = await client.post(f"/v1/fixture/items/{other}/take", headers=headers)
    assert reused.status_code == 422 and reused.json()["type"].endswith("idempotency-key-reused")
    assert (await client.post(f"/v1/fixture/items/{item}/take")).json()["quantity"] == 3
    assert (await client.post(f"/v1/fixture/items/{item}/take")).json()["quantity"] == 2
    # a failed write stores nothing: the retry runs afresh
    empty = await new_item(client, quantity=0)
    failing = {"Idempotency-Key": "empty-" + uuid.uuid4().hex}
    assert (await client.post(f"/v1/fixture/items/{empty}/take", headers=failing)).status_code == 409
    await conn.execute("UPDATE fixture_item SET quantity = 1 WHERE id = $1", empty)
    retried = await client.post(f"/v1/fixture/items/{empty}/take", headers=failing)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


@pytest.mark.parametrize("bad", ["short", "x" * 129, "has a space 12345"])
async def test_a_bad_idempotency_key_is_named(client, bad):
    item = await new_item(client)
    response = await client.post(f"/v1/fixture/items/{item}/take", headers={"Idempotency-Key": bad})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_a_required_key_and_the_modules_own_notification_category(client, conn):
    headers = await bearer(client)
    item = await new_item(client)
    missing = await client.post(f"/v1/fixture/items/{item}/restocked", headers=headers)
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "Idempotency-Key"
    done = await client.post(f"/v1/fixture/items/{item}/restocked",
                             headers=headers | {"Idempotency-Key": uuid.uuid4().hex})
    assert done.status_code == 200 and done.json() == {"notified": 1}
    inbox = (await client.get("/v1/notifications", headers=headers | {"Accept-Language": "en"})).json()["items"]
    assert [(i["category"], i["title"], i["body"]) for i in inbox] == [
        ("fixture", f"Item #{item} is back", f"Item #{item} is in stock again.")]
    # a resident may mute the module's category like any other
    preferences = (await client.get("/v1/notifications/preferences", headers=headers)).json()
    assert preferences["push"]["fixture"] is True


async def test_a_modules_role_is_granted_with_its_scope(client, conn):
    from tests.feedback.support import grant

    await grant(client, conn, ADMIN, "admin")
    admin = await bearer(client, ADMIN)
    target = await client.post("/v1/admin/residents/lookup", json={"personal_id": RESIDENT}, headers=admin)
    if target.status_code == 404:
        await bearer(client, RESIDENT)
        target = await client.post("/v1/admin/residents/lookup", json={"personal_id": RESIDENT}, headers=admin)
    resident_id = target.json()["resident_id"]
    granted = await client.post("/v1/admin/roles", json={"resident_id": resident_id, "role": "fixture_keeper",
                                                         "scope": "cua-hang-so-1"}, headers=admin)
    assert granted.status_code == 201, granted.text
    token = await bearer(client, RESIDENT)
    roles = (await client.get("/v1/me", headers=token)).json()["roles"]
    assert {"role": "fixture_keeper", "scope": "cua-hang-so-1"} in roles


async def test_a_modules_settings_come_from_the_environment(make_client, settings):
    assert (await _greeting(make_client, settings, {})) == {"greeting": "Xin chào", "shelf_size": 10}
    assert (await _greeting(make_client, settings, {"IHANOI_FIXTURE_GREETING": "Chào buổi sáng",
                                                    "IHANOI_FIXTURE_SHELF_SIZE": "25"})) == {
        "greeting": "Chào buổi sáng", "shelf_size": 25}
    bad = msgspec.structs.replace(settings, environ={**settings.environ, "IHANOI_FIXTURE_SHELF_SIZE": "nhiều"})
    with pytest.raises(SettingsError, match="IHANOI_FIXTURE_SHELF_SIZE"):
        create_app(bad, modules=TEST_MODULES)


async def _greeting(make_client, settings, environ: dict[str, str]) -> dict:
    configured = msgspec.structs.replace(settings, environ={**settings.environ, **environ})
    async with make_client(configured) as client:
        return (await client.get("/v1/fixture/greeting")).json()


def test_a_modules_cli_command_is_mounted_under_its_name(database_url, redis_url):
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_EXTRA_MODULES=EXTRA_MODULES)
    listed = subprocess.run([*IHANOI, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "fixture" in listed.stdout.split("Commands:")[1]
    counted = subprocess.run([*IHANOI, "fixture", "count"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip().startswith("fixture items: ")
    int(counted.stdout.strip().rsplit(" ", 1)[1])


async def test_a_modules_live_channel_reaches_listeners(redis, make_client):
    async with make_client():  # the app installs the modules' declarations
        pass
    channel = live.channel(redis, "fixture", "stock", key="42")
    stream = live.listen(redis, channel, keepalive=0.2)
    assert await anext(stream) is None  # subscribed; silence gives a keep-alive
    await live.publish(redis, "fixture", "stock", {"item": 42, "quantity": 3}, key="42")
    received = await asyncio.wait_for(anext(stream), 5)
    assert received == (channel, {"item": 42, "quantity": 3})
    await stream.aclose()
    with pytest.raises(LookupError):
        live.channel(redis, "fixture", "gossip")
    with pytest.raises(ValueError, match="keyed"):
        live.channel(redis, "fixture", "stock")


async def test_a_level_2_module_asks_a_level_1_resident_to_step_up(client):
    level1 = await bearer(client, level=1)
    refused = await client.get("/v1/second/mine", headers=level1)
    assert refused.status_code == 403 and refused.json()["type"].endswith("step-up-required")
    # unless the route says level 1 is enough; and public routes stay public
    assert (await client.get("/v1/second/overview", headers=level1)).json() == {"level": 1}
    assert (await client.get("/v1/second/hello")).status_code == 200
    assert (await client.get("/v1/second/mine", headers=await bearer(client, level=2))).json() == {"level": 2}
    # a level-1 module's routes take level 1
    assert (await client.get("/v1/notifications/unread-count", headers=level1)).status_code == 200
