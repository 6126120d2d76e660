"""The transit demo seed: the demo resident's family card and monthly pass, operator staff, a validator client."""

from __future__ import annotations

import stat

from tests.transit.support import h, session
from transit import demo
from transit.validator import Validator


async def test_the_demo_seed_gives_a_card_a_pass_staff_and_a_validator_once(client, conn, tmp_path):
    lines: list[str] = []
    vault = client.app.state.identity.vault
    first = await demo.seed(conn, lines.append, vault=vault, data_dir=tmp_path)
    assert await demo.seed(conn, lines.append, vault=vault, data_dir=tmp_path) == {
        "staff": 0, "cards": 0, "passes": 0, "validators": 0}
    assert first["passes"] in (0, 1) and len(lines) == 2  # 0 if an `ihanoi seed` of this run committed them

    resident = h(await session(client, demo.RESIDENT))  # the stand-in's demo resident signs in: it is the same one
    tickets = (await client.get("/v1/transit/tickets", headers=resident)).json()["tickets"]
    assert [(t["product_id"], t["status"], t["amount_vnd"], t["route_id"]) for t in tickets] == [
        ("bus-monthly-network", "active", 0, None)]
    cards = (await client.get("/v1/transit/cards", headers=resident)).json()["cards"]
    assert [(c["holder_name"], c["birth_date"]) for c in cards] == [("Nguyễn Minh Khôi", "2022-05-09")]

    staff = h(await session(client, demo.STAFF))
    queue = await client.get("/v1/transit/operators/hanoibus/applications", headers=staff)
    assert queue.status_code == 200, queue.text
    assert (await client.get("/v1/transit/operators/hanoi-metro/applications", headers=staff)).status_code == 403
    accounts = await conn.fetch("SELECT operator_slug FROM payment_account WHERE operator_slug IN "
                                "('hanoibus', 'hanoi-metro') ORDER BY 1")
    assert [a["operator_slug"] for a in accounts] == ["hanoi-metro", "hanoibus"]

    if first["validators"]:
        key_file = tmp_path / demo.KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        v = Validator(client_id=demo.VALIDATOR, private_key=load_pem_private_key(key_file.read_bytes(), None),
                      base_url="http://ihanoi.test", vehicle="29B-1", route_id=102)
        synced = await v.sync(client)
        assert synced["operator"] == "hanoibus" and synced["keys"]
