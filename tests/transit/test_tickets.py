"""Fares as data, rider categories from verified data, buying from the wallet, refunds and reminders."""

from __future__ import annotations

import datetime as dt
import io
import uuid

from PIL import Image

from tests.payments.support import balance
from tests.transit.support import METRO_STAFF, RIDER, SENIOR, STAFF, STUDENT, buy, funded, grant, h, key, session
from transit import config, service


def photo() -> bytes:
    """A phone photo of a proof, with the GPS position and device the camera wrote."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8825).update({1: "N", 2: (21.0, 1.0, 43.0), 3: "E", 4: (105.0, 51.0, 9.0)})  # GPS
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(out.getvalue())).getexif()
    return out.getvalue()


async def test_fares_are_hanois_in_gtfs_fares_v2_terms(client):
    body = (await client.get("/v1/transit/fares")).json()
    assert {m["fare_media_id"]: m["fare_media_type"] for m in body["fare_media"]} == {"ihanoi-app": 4, "paper": 1}
    regular = {p["fare_product_id"]: p["amount"] for p in body["fare_products"] if p["rider_category_id"] == "regular"}
    assert [regular[f"bus-single-{b}"] for b in ("0-15", "15-25", "25-30", "30-40", "40")] == [
        8000, 10000, 12000, 15000, 20000]
    assert regular["bus-monthly-route"] == 140_000 and regular["bus-monthly-network"] == 280_000
    student = {p["fare_product_id"]: p["amount"] for p in body["fare_products"] if p["rider_category_id"] == "student"}
    assert student["bus-monthly-route"] == 70_000 and student["bus-monthly-network"] == 140_000
    assert student["metro-monthly"] == 100_000 and regular["metro-day"] == 30_000
    senior = {p["amount"] for p in body["fare_products"] if p["rider_category_id"] == "senior"}
    assert senior == {0}
    # before the fares took effect there were none: a price change adds rows and keeps history
    assert (await client.get("/v1/transit/fares", params={"on": "2024-10-31"})).json()["fare_products"] == []


async def test_a_price_change_does_not_rewrite_history(client, conn):
    await conn.execute("UPDATE transit_fare_product SET effective_to = DATE '2026-01-01' "
                       "WHERE product_id = 'bus-monthly-route' AND rider_category_id = 'regular'")
    await conn.execute(
        "INSERT INTO transit_fare_product (code, product_id, operator_slug, name_vi, name_en, kind, network, "
        "rider_category_id, amount_vnd, fare_media_id, effective_from) SELECT code, product_id, operator_slug, "
        "name_vi, name_en, kind, network, rider_category_id, 160000, fare_media_id, DATE '2026-01-01' "
        "FROM transit_fare_product WHERE product_id = 'bus-monthly-route' AND rider_category_id = 'regular'")
    def price(body):
        return [p["amount"] for p in body["fare_products"]
                if p["fare_product_id"] == "bus-monthly-route" and p["rider_category_id"] == "regular"]
    assert price((await client.get("/v1/transit/fares", params={"on": "2025-06-01"})).json()) == [140_000]
    assert price((await client.get("/v1/transit/fares", params={"on": "2026-02-01"})).json()) == [160_000]


async def test_sixty_and_over_ride_free_from_the_vneid_birth_date(client, conn):
    senior = await session(client, SENIOR)
    assert (await client.get("/v1/transit/eligibility", headers=h(senior))).json()["rider_category_id"] == "senior"
    ticket = await buy(client, senior, "bus-monthly-network")
    assert ticket["amount_vnd"] == 0 and ticket["charge_id"] is None and ticket["rider_category_id"] == "senior"
    # a form cannot make a 35-year-old a senior: the category comes from the profile only
    rider = await funded(client, RIDER)
    assert (await client.get("/v1/transit/eligibility", headers=h(rider))).json()["rider_category_id"] == "regular"


async def test_buying_charges_the_wallet_once_per_key(client, conn):
    rider = await funded(client, RIDER, 300_000)
    headers = h(rider) | key()
    body = {"product_id": "bus-single-25-30", "route_id": 101}
    first = await client.post("/v1/transit/tickets", json=body, headers=headers)
    again = await client.post("/v1/transit/tickets", json=body, headers=headers)
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert first.json()["amount_vnd"] == 12_000
    assert await balance(client, h(rider)) == 288_000
    # the distance band must be the route's
    wrong = await client.post("/v1/transit/tickets", json={"product_id": "bus-single-0-15", "route_id": 101},
                              headers=h(rider) | key())
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "product_id"
    poor = await session(client, "001091099999")
    broke = await client.post("/v1/transit/tickets", json=body, headers=h(poor) | key())
    assert broke.status_code == 402
    # theirs only: `ihanoi dev` and `ihanoi seed` tests of this run may have committed a demo pass
    residents = [uuid.UUID(await _sub(client, rider)), uuid.UUID(await _sub(client, poor))]
    assert await conn.fetchval("SELECT count(*) FROM transit_ticket t JOIN transit_fare_product p "
                               "ON p.id = t.fare_product_id WHERE t.resident_id = ANY($1::uuid[])", residents) == 1


async def test_one_active_pass_of_a_kind_and_renewal_starts_when_it_ends(client, conn):
    rider = await funded(client, RIDER, 1_000_000)
    first = await buy(client, rider, "bus-monthly-route", 102)
    clash = await client.post("/v1/transit/tickets", json={"product_id": "bus-monthly-network"},
                              headers=h(rider) | key())
    assert clash.status_code == 409 and clash.json()["type"].endswith("transit-pass-already-active")
    renew_from = clash.json()["extra"]["renew_from"]
    renewal = await buy(client, rider, "bus-monthly-network", starts_on=renew_from)
    assert renewal["valid_from"] == first["valid_until"]
    # a metro pass is another operator's: allowed alongside
    await buy(client, rider, "metro-monthly")
    assert await balance(client, h(rider)) == 1_000_000 - 140_000 - 280_000 - 200_000


async def test_an_unused_single_ticket_is_refunded_once(client, conn):
    rider = await funded(client, RIDER, 100_000)
    ticket = await buy(client, rider, "bus-single-0-15", 102)
    assert await balance(client, h(rider)) == 92_000
    headers = h(rider) | key()
    refunded = await client.post(f"/v1/transit/tickets/{ticket['id']}/refund", headers=headers)
    assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"
    again = await client.post(f"/v1/transit/tickets/{ticket['id']}/refund", headers=h(rider) | key())
    assert again.status_code == 200
    assert await balance(client, h(rider)) == 100_000
    other = await session(client, STUDENT)
    stranger = await client.post(f"/v1/transit/tickets/{ticket['id']}/refund", headers=h(other) | key())
    assert stranger.status_code == 404


async def test_a_used_or_pass_ticket_is_not_refunded(client, conn):
    rider = await funded(client, RIDER, 500_000)
    monthly = await buy(client, rider, "bus-monthly-route", 102)
    response = await client.post(f"/v1/transit/tickets/{monthly['id']}/refund", headers=h(rider) | key())
    assert response.status_code == 409 and response.json()["type"].endswith("transit-not-refundable")
    single = await buy(client, rider, "bus-single-0-15", 102)
    await conn.execute("UPDATE transit_ticket SET status = 'used' WHERE id = $1", single["id"])
    response = await client.post(f"/v1/transit/tickets/{single['id']}/refund", headers=h(rider) | key())
    assert response.status_code == 409
    assert await balance(client, h(rider)) == 500_000 - 140_000 - 8_000


async def test_proof_applications_are_decided_by_the_operators_staff_with_an_expiry(client, conn):
    await grant(client, conn, STAFF, "transit_operator", "hanoibus")
    await grant(client, conn, METRO_STAFF, "transit_operator", "hanoi-metro")
    student = await funded(client, STUDENT, 500_000)
    staff, metro = await session(client, STAFF), await session(client, METRO_STAFF)
    sent = await client.post("/v1/transit/applications", params={"category": "student", "operator": "hanoibus"},
                             content=photo(), headers=h(student) | key())
    assert sent.status_code == 201, sent.text
    app_id = sent.json()["id"]
    bad = await client.post("/v1/transit/applications", params={"category": "senior", "operator": "hanoibus"},
                            content=photo(), headers=h(student) | key())
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "category"
    not_photo = await client.post("/v1/transit/applications", params={"category": "student", "operator": "hanoibus"},
                                  content=b"%PDF-1.4", headers=h(student) | key())
    assert not_photo.status_code == 422 and not_photo.json()["errors"][0]["field"] == "photo"
    # of the document's form but not possible: an operator that does not exist, "child" without a family card
    for params, field in (({"category": "student", "operator": "no-such-operator"}, "operator"),
                          ({"category": "child", "operator": "hanoibus"}, "category")):
        refused = await client.post("/v1/transit/applications", params=params, content=photo(),
                                    headers=h(student) | key())
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field, refused.text

    # another operator's staff neither see nor decide it
    assert (await client.get("/v1/transit/operators/hanoibus/applications", headers=h(metro))).status_code == 403
    queue = (await client.get("/v1/transit/operators/hanoibus/applications", headers=h(staff))).json()
    assert [a["id"] for a in queue["applications"]] == [app_id]
    picture = await client.get(f"/v1/transit/operators/hanoibus/applications/{app_id}/photo", headers=h(staff))
    # the staff see the pixels only: the EXIF (GPS, device) the phone wrote is gone
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(picture.content))
    assert shown.size == (40, 30) and not shown.getexif() and "exif" not in shown.info
    refused_by_other = await client.post(f"/v1/transit/operators/hanoi-metro/applications/{app_id}/decision",
                                         json={"decision": "approve", "valid_until": "2027-06-30"}, headers=h(metro))
    assert refused_by_other.status_code == 404
    no_expiry = await client.post(f"/v1/transit/operators/hanoibus/applications/{app_id}/decision",
                                  json={"decision": "approve"}, headers=h(staff))
    assert no_expiry.status_code == 400 and no_expiry.json()["errors"][0]["field"] == "valid_until"
    until = (service.today() + dt.timedelta(days=200)).isoformat()
    decided = await client.post(f"/v1/transit/operators/hanoibus/applications/{app_id}/decision",
                                json={"decision": "approve", "valid_until": until}, headers=h(staff))
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    twice = await client.post(f"/v1/transit/operators/hanoibus/applications/{app_id}/decision",
                              json={"decision": "refuse", "note": "x"}, headers=h(staff))
    assert twice.status_code == 409

    eligible = (await client.get("/v1/transit/eligibility", headers=h(student))).json()
    assert eligible == {"rider_category_id": "student", "why": "approved proof", "valid_until": until}
    ticket = await buy(client, student, "bus-monthly-route", 102)
    assert ticket["amount_vnd"] == 70_000 and ticket["rider_category_id"] == "student"
    inbox = await conn.fetch("SELECT template FROM notification WHERE resident_id = $1::uuid",
                             uuid.UUID(await _sub(client, student)))
    assert "transit.application_decided" in [r["template"] for r in inbox]
    # once the approval expires, the regular fare applies again
    await conn.execute("UPDATE transit_application SET valid_until = now()::date - 1 WHERE id = $1", app_id)
    assert (await client.get("/v1/transit/eligibility", headers=h(student))).json()["rider_category_id"] == "regular"


async def _sub(client, headers) -> str:
    return (await client.get("/v1/me", headers=h(headers))).json()["id"]


async def test_the_renewal_reminder_goes_once_before_a_pass_ends(client, conn, settings):
    rider = await funded(client, RIDER, 500_000)
    ticket = await buy(client, rider, "bus-monthly-route", 102)
    own = config.of(settings)
    ends = dt.datetime.fromisoformat(ticket["valid_until"])
    reminded = "SELECT reminded FROM transit_ticket WHERE id = $1"  # this pass's (a demo pass may be due too)
    await service.remind_renewals(conn, own, now=ends - dt.timedelta(days=10))
    assert await conn.fetchval(reminded, ticket["id"]) is False
    assert await service.remind_renewals(conn, own, now=ends - dt.timedelta(days=2)) >= 1
    assert await conn.fetchval(reminded, ticket["id"]) is True
    await service.remind_renewals(conn, own, now=ends - dt.timedelta(days=1))
    sub = uuid.UUID(await _sub(client, rider))
    rows = await conn.fetch("SELECT template FROM notification WHERE resident_id = $1", sub)
    assert [r["template"] for r in rows].count("transit.pass_renewal") == 1


async def test_a_childs_family_card_rides_free_once_the_birth_certificate_is_approved(client, conn):
    await grant(client, conn, STAFF, "transit_operator", "hanoibus")
    parent = await funded(client, RIDER, 500_000)
    staff = await session(client, STAFF)
    born = service.today().replace(year=service.today().year - 4, day=1)
    card = await client.post("/v1/transit/cards", json={"holder_name": "Bé Na", "birth_date": born.isoformat()},
                             headers=h(parent) | key())
    assert card.status_code == 201, card.text
    card_id = card.json()["id"]
    # a declared birth date alone gives nothing: the regular fare until the proof is approved
    before = await client.get("/v1/transit/eligibility", params={"card_id": card_id}, headers=h(parent))
    assert before.json()["rider_category_id"] == "regular"
    sent = await client.post("/v1/transit/applications", params={"category": "child", "operator": "hanoibus",
                                                                 "card_id": card_id},
                             content=photo(), headers=h(parent) | key())
    assert sent.status_code == 201, sent.text
    decided = await client.post(f"/v1/transit/operators/hanoibus/applications/{sent.json()['id']}/decision",
                                json={"decision": "approve"}, headers=h(staff))
    assert decided.status_code == 200, decided.text
    assert decided.json()["valid_until"] == (born.replace(year=born.year + 6) - dt.timedelta(days=1)).isoformat()
    child = await buy(client, parent, "bus-monthly-network", card_id=card_id)
    assert child["amount_vnd"] == 0 and child["rider_category_id"] == "child" and child["card_id"] == card_id
    # the parent's own pass is another card: allowed alongside, at the parent's fare
    own = await buy(client, parent, "bus-monthly-network")
    assert own["amount_vnd"] == 280_000 and own["card_id"] is None
    clash = await client.post("/v1/transit/tickets", json={"product_id": "bus-monthly-network", "card_id": card_id},
                              headers=h(parent) | key())
    assert clash.status_code == 409
    # another resident cannot use the card
    other = await funded(client, STUDENT, 100_000)
    stolen = await client.post("/v1/transit/tickets", json={"product_id": "bus-monthly-network", "card_id": card_id},
                               headers=h(other) | key())
    assert stolen.status_code == 404
