"""Open311 GeoReport v2 at /open311/v2 through HTTP: discovery, services and their definitions, public
requests and their filters, creating a request with a client's api_key and the resident's own token, and
errors in Open311's format, in JSON and in XML."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest_asyncio

from app import web
from feedback import context
from feedback.open311 import service as open311
from tests.feedback.support import (
    CLERK,
    LAT,
    LNG,
    OTHER_CLERK,
    OTHER_WARD,
    RESIDENT_A,
    RESIDENT_B,
    WARD,
    act,
    bearer,
    grant,
    submit,
    upload,
)

ADMIN = "001088044444"
BASE = "/open311/v2"
CLIENT = "test-app"


@pytest_asyncio.fixture
async def people(client, conn):
    await grant(client, conn, CLERK, "staff", WARD)
    return {"a": await bearer(client, RESIDENT_A), "b": await bearer(client, RESIDENT_B),
            "clerk": await bearer(client, CLERK)}


@pytest_asyncio.fixture
async def api_key(conn) -> str:
    return (await open311.create_client(conn, CLIENT)).api_key


def xml_of(response) -> ET.Element:
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(response.content)


def json_of(response, status: int = 200):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


def errors(response, status: int) -> list[dict]:
    """An Open311 error answer in JSON: an array of {code, description}."""
    body = json_of(response, status)
    assert isinstance(body, list) and body and all(set(e) == {"code", "description"} for e in body), body
    return body


def xml_errors(response, status: int) -> list[tuple[str, str]]:
    assert response.status_code == status, response.text
    root = xml_of(response)
    assert root.tag == "errors" and all(e.tag == "error" for e in root)
    return [(e.findtext("code"), e.findtext("description")) for e in root]


def form(**extra) -> dict[str, str]:
    fields = {"service_code": "ve-sinh-moi-truong", "lat": str(LAT), "long": str(LNG), "attribute[ward]": WARD,
              "description": "Rác thải đổ trộm đầu ngõ, bốc mùi nhiều ngày",
              "address_string": "Đầu ngõ 12 phố Hàng Bạc"}
    return {k: v for k, v in (fields | extra).items() if v is not None}


async def post(client, fields: dict, headers: dict | None = None, suffix: str = ".json"):
    return await client.post(f"{BASE}/requests{suffix}", data=fields, headers=headers or {})


# ---- discovery, services, definitions ---------------------------------------------------------------------------


async def test_discovery_in_both_formats(client):
    body = json_of(await client.get(f"{BASE}/discovery.json"))
    assert set(body) == {"changeset", "contact", "key_service", "endpoints"}
    assert body["contact"] and body["key_service"] and dt.datetime.fromisoformat(body["changeset"]).tzinfo
    [endpoint] = body["endpoints"]
    assert endpoint == {"specification": "http://wiki.open311.org/GeoReport_v2",
                        "url": "http://ihanoi.test/open311/v2", "changeset": body["changeset"],
                        "type": "test", "formats": ["text/xml", "application/json"]}
    assert json_of(await client.get(f"{BASE}/discovery")) == body  # no suffix: JSON

    root = xml_of(await client.get(f"{BASE}/discovery.xml"))
    assert root.tag == "discovery"
    assert [child.tag for child in root] == ["changeset", "contact", "key_service", "endpoints"]
    [endpoint_xml] = root.find("endpoints")
    assert endpoint_xml.tag == "endpoint"
    assert endpoint_xml.findtext("specification") == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint_xml.findtext("url") == "http://ihanoi.test/open311/v2"
    assert [f.text for f in endpoint_xml.find("formats").findall("format")] == ["text/xml", "application/json"]

    assert errors(await client.get(f"{BASE}/discovery.csv"), 400)[0]["description"].startswith("format:")


async def test_services_and_a_definition_in_both_formats(client):
    services = json_of(await client.get(f"{BASE}/services.json"))
    categories = (await client.get("/v1/feedback/categories")).json()["categories"]
    assert [s["service_code"] for s in services] == [c["code"] for c in categories]
    waste = next(s for s in services if s["service_code"] == "ve-sinh-moi-truong")
    assert set(waste) == {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}
    assert (waste["service_name"], waste["metadata"], waste["type"]) == ("Vệ sinh môi trường", True, "realtime")
    assert "40 giờ làm việc" in waste["description"] and "rác thải" in waste["keywords"]
    english = json_of(await client.get(f"{BASE}/services", headers={"Accept-Language": "en"}))
    assert next(s for s in english if s["service_code"] == "ve-sinh-moi-truong")["service_name"] \
        == "Environment and sanitation"

    root = xml_of(await client.get(f"{BASE}/services.xml"))
    assert root.tag == "services" and len(root) == len(services)
    first = root[0]
    assert first.tag == "service" and first.findtext("service_code") == services[0]["service_code"]
    assert first.findtext("metadata") == "true" and first.findtext("type") == "realtime"

    definition = json_of(await client.get(f"{BASE}/services/ve-sinh-moi-truong.json"))
    assert definition["service_code"] == "ve-sinh-moi-truong"
    [ward] = definition["attributes"]
    # not required: derived from lat/long when left out, and the definition says how
    assert (ward["variable"], ward["code"], ward["datatype"], ward["required"], ward["order"]) \
        == (True, "ward", "singlevaluelist", False, 1)
    assert "lat/long" in ward["description"] and "nearest" in json_of(await client.get(
        f"{BASE}/services/ve-sinh-moi-truong.json", headers={"Accept-Language": "en"}))["attributes"][0]["description"]
    units = client.app.state.identity.units
    assert len(ward["values"]) == sum(u.kind in ("ward", "commune") for u in units) == 126
    assert {"key": WARD, "name": "Phường Hoàn Kiếm"} in ward["values"]
    assert not any(v["key"] in ("hanoi", "so-xay-dung") for v in ward["values"])

    root = xml_of(await client.get(f"{BASE}/services/ve-sinh-moi-truong.xml"))
    assert root.tag == "service_definition" and root.findtext("service_code") == "ve-sinh-moi-truong"
    attribute = root.find("attributes/attribute")
    assert attribute.findtext("datatype") == "singlevaluelist" and attribute.findtext("required") == "false"
    keys = [v.findtext("key") for v in attribute.find("values").findall("value")]
    assert WARD in keys and len(keys) == 126

    missing = await client.get(f"{BASE}/services/no-such.json")
    assert errors(missing, 404)[0]["code"] == 404 and "no-such" in missing.json()[0]["description"]
    assert xml_errors(await client.get(f"{BASE}/services/no-such.xml"), 404)[0][0] == "404"
    assert errors(await client.get(f"{BASE}/services/ve-sinh-moi-truong.csv"), 400)[0]["code"] == 400
    assert errors(await client.get(f"{BASE}/services.csv"), 400)[0]["description"].startswith("format:")


# ---- creating a request -----------------------------------------------------------------------------------------


async def test_post_with_a_key_and_the_residents_token_sends_a_report(client, people, api_key):
    response = await post(client, form(api_key=api_key, first_name="Không", email="x@example.com",
                                       media_url="https://example.com/a.jpg"), people["a"])
    [created] = json_of(response)
    assert set(created) == {"service_request_id", "service_notice", "account_id"} and created["account_id"] is None
    assert "Phường Hoàn Kiếm" in created["service_notice"] and "media_url" in created["service_notice"]
    rid = created["service_request_id"]

    mine = (await client.get(f"/v1/feedback/reports/{rid}", headers=people["a"])).json()
    assert (mine["mine"], mine["status"], mine["category"]["code"], mine["ward"]["code"], mine["unit"]["code"]) \
        == (True, "submitted", "ve-sinh-moi-truong", WARD, WARD)
    assert mine["address"] == "Đầu ngõ 12 phố Hàng Bạc" and mine["name_hidden"] is True
    staff = (await client.get(f"/v1/feedback/reports/{rid}", headers=people["clerk"])).json()
    assert staff["source"] == f"open311:{CLIENT}"
    public = (await client.get(f"/v1/feedback/reports/{rid}")).json()
    assert public["reporter_name"] is None

    # the same form again is a new report (a fresh key each time), nearby duplicates are not asked about
    again = json_of(await post(client, form(api_key=api_key), people["a"], suffix=""))
    assert again[0]["service_request_id"] != rid
    # unless the client sends an Idempotency-Key: a retry then answers the first report
    retry = people["a"] | {"Idempotency-Key": "open311-retry-0001"}
    first = json_of(await post(client, form(api_key=api_key), retry))[0]["service_request_id"]
    assert json_of(await post(client, form(api_key=api_key), retry))[0]["service_request_id"] == first

    root = xml_of(await post(client, form(api_key=api_key, service_code="ha-tang-giao-thong"), people["b"],
                             suffix=".xml"))
    assert root.tag == "service_requests" and [r.tag for r in root] == ["request"]
    assert [c.tag for c in root[0]] == ["service_request_id", "service_notice", "account_id"]
    assert root[0].findtext("service_request_id").isdigit() and root[0].findtext("account_id") == ""
    assert "Sở Xây dựng" in root[0].findtext("service_notice")


async def test_a_missing_bad_or_revoked_key_is_403(client, conn, people, api_key):
    [error] = errors(await post(client, form(), people["a"]), 403)
    assert error["code"] == 403 and "api_key" in error["description"]
    [(code, description)] = xml_errors(await post(client, form(), people["a"], suffix=".xml"), 403)
    assert code == "403" and "api_key" in description
    assert errors(await post(client, form(api_key="o311_guessed"), people["a"]), 403)[0]["code"] == 403
    # the key is checked before the resident's token, even a bad one
    bad_token = {"Authorization": "Bearer not-a-token"}
    assert errors(await post(client, form(), bad_token), 403)[0]["code"] == 403
    assert errors(await post(client, form(api_key="o311_guessed"), bad_token), 403)[0]["code"] == 403

    assert await open311.revoke_client(conn, CLIENT) == 1
    [error] = errors(await post(client, form(api_key=api_key), people["a"]), 403)
    assert "revoked" in error["description"]
    assert await conn.fetchval("SELECT count(*) FROM report") == 0


async def test_without_the_residents_token_it_is_401(client, people, api_key):
    response = await post(client, form(api_key=api_key))
    [error] = errors(response, 401)
    assert error["code"] == 401 and "Authorization: Bearer" in error["description"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    [(code, _)] = xml_errors(await post(client, form(api_key=api_key), suffix=".xml"), 401)
    assert code == "401"
    # a token that is not ours is refused by the sign-in layer, still in Open311's format
    for token in ("Bearer not-a-token", "Bearer "):
        [error] = errors(await post(client, form(api_key=api_key), {"Authorization": token}), 401)
        assert error["code"] == 401


async def test_the_fields_are_checked_before_the_key_is_looked_up_and_the_token(client, conn, people, api_key):
    bad = form(service_code=None, description="")
    for key, headers in (("o311_guessed", people["a"]), (api_key, {"Authorization": "Bearer not-a-token"})):
        response = await post(client, bad | {"api_key": key}, headers)
        assert [e["description"].split(":")[0] for e in errors(response, 400)] == ["service_code", "description"]
    # no bearer token at all: the request has no resident, which no field can mend (401, as for any route)
    assert errors(await post(client, bad | {"api_key": api_key}), 401)[0]["code"] == 401
    # a service_code that names nothing needs the database: it comes after the key and the token
    assert errors(await post(client, form(api_key="o311_guessed", service_code="nope"), people["a"]), 403)
    assert errors(await post(client, form(api_key=api_key, service_code="nope")), 401)
    assert await conn.fetchval("SELECT count(*) FROM report") == 0


async def test_every_error_has_the_status_of_its_code(client, people, api_key):
    headers = people["a"]
    answers = [
        await post(client, form(api_key=api_key, lat="abc"), headers),
        await post(client, form(), headers),
        await post(client, form(api_key=api_key)),
        await post(client, form(api_key=api_key, service_code="nope"), headers),
        await post(client, form(api_key=api_key), headers | {"Idempotency-Key": "short"}),
        await client.get(f"{BASE}/requests/999.json"),
        await client.get(f"{BASE}/requests.json?page_size=0"),
    ]
    assert [r.status_code for r in answers] == [400, 403, 401, 404, 400, 404, 400]
    for response in answers:
        assert all(e["code"] == response.status_code for e in errors(response, response.status_code))


async def test_bad_fields_are_named(client, people, api_key):
    headers = people["a"]
    response = await post(client, form(api_key=api_key, service_code=None, lat=None), headers)
    descriptions = [e["description"] for e in errors(response, 400)]
    assert [d.split(":")[0] for d in descriptions] == ["service_code", "lat"]
    assert all(e["code"] == 400 for e in response.json())
    fields = [d.split(":")[0] for _, d in xml_errors(
        await post(client, form(api_key=api_key, description="", long=None, **{"attribute[ward]": None}), headers,
                   suffix=".xml"), 400)]
    assert fields == ["long", "attribute[ward]", "description"]

    outside = errors(await post(client, form(api_key=api_key, lat="10.77", long="106.70"), headers), 400)
    assert [e["description"] for e in outside] == ["lat: the place must be inside Hanoi"]
    assert errors(await post(client, form(api_key=api_key, long="abc"), headers), 400)[0]["description"] \
        .startswith("long:")
    assert errors(await post(client, form(api_key=api_key, **{"attribute[ward]": "nowhere"}), headers), 400)[0][
        "description"].startswith("attribute[ward]:")
    assert errors(await post(client, form(api_key=api_key, **{"attribute[ward]": "so-xay-dung"}), headers), 400)[0][
        "description"].startswith("attribute[ward]:")
    assert errors(await post(client, form(api_key=api_key, description="ngắn"), headers), 400)[0]["description"] \
        .startswith("description:")
    assert errors(await post(client, form(api_key=api_key, description="x" * 4001), headers), 400)[0][
        "description"] == "description: at most 4000 characters"
    assert errors(await post(client, form(api_key=api_key, description="Chuông reo \u0007 cả đêm ở đầu ngõ"),
                             headers), 400)[0]["description"] == "description: control characters are not allowed here"
    assert errors(await post(client, form(api_key=api_key, address_string="Ngõ \u001b 12"), headers), 400)[0][
        "description"] == "address_string: control characters are not allowed here"
    # a code that names no service is a 404, as the spec says
    assert errors(await post(client, form(api_key=api_key, service_code="nope"), headers), 404)[0]["code"] == 404
    assert errors(await client.post(f"{BASE}/requests.csv", data=form(api_key=api_key), headers=headers), 400)


# Landmarks and the ward or commune they are in since 1 July 2025.
LANDMARKS = [
    ((21.0287, 105.8524), "phuong-hoan-kiem"),  # Hoàn Kiếm lake
    ((21.0368, 105.8346), "phuong-ba-dinh"),  # Ho Chi Minh's mausoleum
    ((21.0205, 105.7640), "phuong-tu-liem"),  # Mỹ Đình national stadium
    ((21.1405, 105.5050), "phuong-son-tay"),  # Sơn Tây citadel
    ((20.6170, 105.7460), "xa-huong-son"),  # the Perfume pagoda
]


async def test_the_ward_is_derived_from_the_coordinates_when_left_out(client, people, api_key):
    for (lat, lng), ward in LANDMARKS:
        sent = await post(client, form(api_key=api_key, lat=str(lat), long=str(lng), **{"attribute[ward]": None}),
                          people["a"])
        [created] = json_of(sent)
        report = (await client.get(f"/v1/feedback/reports/{created['service_request_id']}", headers=people["a"])).json()
        assert report["ward"]["code"] == ward, (lat, lng)
        assert report["ward"]["name"] in created["service_notice"]  # a ward category: the ward's own unit
    # a ward that is sent is the one used
    [created] = json_of(await post(client, form(api_key=api_key, **{"attribute[ward]": "phuong-cua-nam"}), people["a"]))
    report = (await client.get(f"/v1/feedback/reports/{created['service_request_id']}", headers=people["a"])).json()
    assert report["ward"]["code"] == "phuong-cua-nam"
    # inside Hanoi's bounding box but far from every ward (Hòa Bình city): the ward cannot be told; the form is
    # well-formed, so 422 (as the OpenAPI document's 422: well-formed but not possible)
    [error] = errors(await post(client, form(api_key=api_key, lat="20.8133", long="105.3383",
                                             **{"attribute[ward]": None}), people["a"]), 422)
    assert error["description"].startswith("attribute[ward]: required here")
# ---- reading requests -------------------------------------------------------------------------------------------


async def test_requests_filters_and_the_status_mapping(client, conn, people):
    answered = await submit(client, people["a"])
    waiting = await submit(client, people["b"], duplicates_checked=True)
    roads = await submit(client, people["a"], category="ha-tang-giao-thong", description="Ổ gà lớn giữa đường")
    private = await submit(client, people["b"], visibility="private", duplicates_checked=True)
    rejected = await submit(client, people["b"], duplicates_checked=True, ward=OTHER_WARD)
    await act(client, people["clerk"], answered["id"], "receive")
    await act(client, people["clerk"], answered["id"], "answer", {"text": "Đã thu gom hết rác, cảm ơn."})
    await grant(client, conn, OTHER_CLERK, "staff", OTHER_WARD)
    other_clerk = await bearer(client, OTHER_CLERK)
    await act(client, other_clerk, rejected["id"], "reject", {"reason": "Không đủ thông tin vị trí"})

    everything = json_of(await client.get(f"{BASE}/requests.json"))
    ids = [r["service_request_id"] for r in everything]
    assert ids == [rejected["id"], roads["id"], waiting["id"], answered["id"]]  # newest first, no private one
    by_id = {r["service_request_id"]: r for r in everything}
    done = by_id[answered["id"]]
    assert set(done) == {"service_request_id", "status", "status_notes", "service_name", "service_code",
                         "description", "agency_responsible", "service_notice", "requested_datetime",
                         "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat", "long",
                         "media_url"}
    assert (done["status"], done["status_notes"]) == ("closed", "Đã thu gom hết rác, cảm ơn.")
    report = (await client.get(f"/v1/feedback/reports/{answered['id']}")).json()
    assert dt.datetime.fromisoformat(done["updated_datetime"]) \
        == dt.datetime.fromisoformat(report["answer"]["at"]).replace(microsecond=0)
    assert dt.datetime.fromisoformat(done["expected_datetime"]) \
        == dt.datetime.fromisoformat(report["answer_due_at"]).replace(microsecond=0)
    assert all(r["requested_datetime"].endswith("+07:00") for r in everything)
    assert (done["service_name"], done["agency_responsible"], done["lat"], done["long"]) \
        == ("Vệ sinh môi trường", "Phường Hoàn Kiếm", LAT, LNG)
    assert (by_id[waiting["id"]]["status"], by_id[waiting["id"]]["status_notes"]) == ("open", "Chờ tiếp nhận")
    assert (by_id[rejected["id"]]["status"], by_id[rejected["id"]]["status_notes"]) \
        == ("closed", "Không đủ thông tin vị trí")
    assert by_id[roads["id"]]["agency_responsible"] == "Sở Xây dựng"

    async def ids_for(query: str) -> list[int]:
        return [r["service_request_id"] for r in json_of(await client.get(f"{BASE}/requests.json?{query}"))]

    assert await ids_for("status=open") == [roads["id"], waiting["id"]]
    assert await ids_for("status=closed") == [rejected["id"], answered["id"]]
    assert await ids_for("status=open,closed") == ids
    assert await ids_for("status=open&status=closed") == ids
    assert await ids_for("service_code=ha-tang-giao-thong") == [roads["id"]]
    assert await ids_for("service_code=ha-tang-giao-thong,ve-sinh-moi-truong&status=open") \
        == [roads["id"], waiting["id"]]
    # service_request_id overrides the other filters, and never shows a private report
    assert await ids_for(f"service_request_id={answered['id']},{private['id']},{waiting['id']}&status=closed") \
        == [waiting["id"], answered["id"]]
    assert await ids_for(f"service_request_id={private['id']}") == []
    assert await ids_for("page=2&page_size=3") == [answered["id"]]
    assert await ids_for("page_size=1") == [rejected["id"]]
    assert await ids_for("service_code=") == ids  # an empty parameter is an absent one
    english = json_of(await client.get(f"{BASE}/requests.json?status=open", headers={"Accept-Language": "en"}))
    assert [(r["service_name"], r["status_notes"]) for r in english] \
        == [("Road infrastructure", "Waiting to be received"), ("Environment and sanitation", "Waiting to be received")]

    root = xml_of(await client.get(f"{BASE}/requests.xml?service_request_id={answered['id']}"))
    assert root.tag == "service_requests" and [r.tag for r in root] == ["request"]
    request = root[0]
    assert [c.tag for c in request] == list(done)
    assert request.findtext("status") == "closed" and request.findtext("lat") == str(LAT)
    assert request.findtext("media_url") == "" and request.findtext("address_id") == ""

    [one] = json_of(await client.get(f"{BASE}/requests/{answered['id']}.json"))
    assert one == done
    assert json_of(await client.get(f"{BASE}/requests/{answered['id']}")) == [done]
    assert xml_of(await client.get(f"{BASE}/requests/{answered['id']}.xml"))[0].findtext("service_request_id") \
        == str(answered["id"])
    for missing in (private["id"], 99999999, "abc"):
        [error] = errors(await client.get(f"{BASE}/requests/{missing}.json"), 404)
        assert error["code"] == 404
    assert xml_errors(await client.get(f"{BASE}/requests/{private['id']}.xml"), 404)[0][0] == "404"


async def test_the_date_window(client, people):
    rid = (await submit(client, people["a"]))["id"]
    now = web.local(context.utcnow())

    async def query(params: str):
        return await client.get(f"{BASE}/requests.json?{params}")

    assert [r["service_request_id"] for r in json_of(await query(""))] == [rid]
    too_wide = errors(await query("start_date=2025-01-01T00:00:00Z&end_date=2025-04-02T00:00:00Z"), 400)
    assert too_wide[0]["description"].startswith("end_date:") and "90 days" in too_wide[0]["description"]
    backwards = errors(await query("start_date=2025-03-01T00:00:00Z&end_date=2025-02-01T00:00:00Z"), 400)
    assert backwards[0]["description"].startswith("end_date:")
    assert errors(await query("start_date=yesterday"), 400)[0]["description"].startswith("start_date:")
    assert xml_errors(await client.get(f"{BASE}/requests.xml?end_date=soon"), 400)[0][1].startswith("end_date:")
    assert errors(await query("status=pending"), 400)[0]["description"].startswith("status:")
    assert errors(await query("page_size=1001"), 400)[0]["description"].startswith("page_size:")
    assert errors(await query("service_request_id=1,x"), 400)[0]["description"].startswith("service_request_id:")

    assert json_of(await query("start_date=2025-01-01T00:00:00Z&end_date=2025-03-31T00:00:00Z")) == []
    # an unencoded '+' of the zone arrives as a space, and is read as the '+' it was
    start = (now - dt.timedelta(hours=1)).replace(microsecond=0).isoformat()
    end = (now + dt.timedelta(hours=1)).replace(microsecond=0).isoformat()
    assert "+07:00" in start
    assert [r["service_request_id"] for r in json_of(await query(f"start_date={start}&end_date={end}"))] == [rid]
    assert json_of(await query(f"end_date={start}")) == []  # 90 days up to an hour ago
    assert len(json_of(await query(f"start_date={start}"))) == 1  # 90 days from an hour ago
    naive = (now - dt.timedelta(hours=1)).replace(tzinfo=None, microsecond=0).isoformat()
    assert len(json_of(await query(f"start_date={naive}"))) == 1  # read as Hanoi time


async def test_nothing_private_is_ever_shown(client, conn, people):
    public_photo, private_photo = await upload(client, people["a"]), await upload(client, people["a"])
    shown = await submit(client, people["a"], photos=[{"id": private_photo, "public": False}, {"id": public_photo}])
    only_private = await upload(client, people["b"])
    hidden = await submit(client, people["b"], hide_name=True, duplicates_checked=True,
                          photos=[{"id": only_private, "public": False}])
    names = await conn.fetch("SELECT DISTINCT reporter_name FROM report WHERE reporter_name IS NOT NULL")
    assert names

    listing = await client.get(f"{BASE}/requests.json")
    by_id = {r["service_request_id"]: r for r in json_of(listing)}
    assert by_id[shown["id"]]["media_url"] == f"http://ihanoi.test/v1/feedback/photos/{public_photo}"
    assert by_id[hidden["id"]]["media_url"] is None
    photo = await client.get(by_id[shown["id"]]["media_url"].removeprefix("http://ihanoi.test"))
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    xml_listing = await client.get(f"{BASE}/requests.xml")
    for response in (listing, xml_listing, await client.get(f"{BASE}/requests/{hidden['id']}.json")):
        text = response.content.decode()
        assert private_photo not in text and only_private not in text
        assert not any(row["reporter_name"] in text for row in names)
        assert "reporter" not in text and "account_id" not in text


# ---- api keys -----------------------------------------------------------------------------------------------------


async def test_admins_issue_and_revoke_keys(client, conn, people):
    await grant(client, conn, ADMIN, "admin")
    admin = await bearer(client, ADMIN)
    created = await client.post("/v1/feedback/open311-clients", json={"name": "fixmystreet-vn"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "fixmystreet-vn" and len(body["api_key"]) > 40
    stored = await conn.fetchrow("SELECT * FROM open311_client WHERE name = 'fixmystreet-vn'")
    assert body["api_key"] not in [str(v) for v in stored.values()] and stored["revoked_at"] is None

    for headers, status in ((people["a"], 403), (await bearer(client, ADMIN, level=1), 403), ({}, 401)):
        refused = await client.post("/v1/feedback/open311-clients", json={"name": "other"}, headers=headers)
        assert refused.status_code == status and refused.headers["content-type"] == "application/problem+json"
    bad = await client.post("/v1/feedback/open311-clients", json={"name": "Có Dấu"}, headers=admin)
    assert bad.status_code == 400

    [sent] = json_of(await post(client, form(api_key=body["api_key"]), people["a"]))
    staff = (await client.get(f"/v1/feedback/reports/{sent['service_request_id']}", headers=people["clerk"])).json()
    assert staff["source"] == "open311:fixmystreet-vn"

    revoked = await client.delete("/v1/feedback/open311-clients/fixmystreet-vn", headers=admin)
    assert revoked.status_code == 200 and revoked.json() == {"name": "fixmystreet-vn", "revoked": 1}
    assert (await client.delete("/v1/feedback/open311-clients/fixmystreet-vn", headers=admin)).status_code == 404
    errors(await post(client, form(api_key=body["api_key"]), people["a"]), 403)
