"""The rules of transit: fares, who rides at which price, buying, credentials, checks, taps, reports."""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import datetime as dt
import hashlib
import io
import itertools
import logging
import os
import time
import unicodedata
import uuid

import asyncpg
import msgspec
from redis.exceptions import NoScriptError, RedisError

import payments
from app import images, web
from app.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    UnknownReference,
    Unprocessable,
)
from app.identity import Principal, profile_of
from notifications import notify
from transit import credential, store
from transit.config import TransitSettings
from transit.models import (
    ApplicationView,
    Card,
    CardCreate,
    CheckResult,
    Credential,
    Decision,
    Eligibility,
    FareMedia,
    FareProduct,
    Fares,
    Flag,
    IssuerKey,
    Purchase,
    Report,
    RevenueRow,
    RiderCategory,
    RideRow,
    Route,
    SyncView,
    TapBatch,
    TapReceipt,
    TicketView,
)

log = logging.getLogger("ihanoi.transit")
FREE = ("senior", "child", "disability", "meritorious", "poor-household")
PROOF_MAX_BYTES = 5 * 1024 * 1024
PROOF = ("student", "industrial-worker", "disability", "meritorious", "poor-household")
_KEY_CONTEXT = b"transit-issuer-key"


class PassAlreadyActive(DomainError):
    slug = "transit-pass-already-active"


class NotRefundable(DomainError):
    slug = "transit-not-refundable"


class CredentialUnavailable(DomainError):
    slug = "transit-credential-unavailable"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def today() -> dt.date:
    return utcnow().astimezone(web.CITY_TZ).date()


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def b64decode(text: str, field: str) -> bytes:
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput.field(field, "not base64") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- fares --------------------------------------------------------------------------------------------------


def _product(r) -> FareProduct:
    return FareProduct(fare_product_id=r["product_id"], code=r["code"], operator=r["operator_slug"],
                       fare_product_name={"vi": r["name_vi"], "en": r["name_en"]}, kind=r["kind"],
                       network=r["network"], min_km=float(r["min_km"]) if r["min_km"] is not None else None,
                       max_km=float(r["max_km"]) if r["max_km"] is not None else None,
                       rider_category_id=r["rider_category_id"], amount=r["amount_vnd"], currency="VND",
                       fare_media_id=r["fare_media_id"], effective_from=r["effective_from"],
                       effective_to=r["effective_to"])


def _route(r) -> Route:
    return Route(id=r["id"], operator=r["operator_slug"], short_name=r["short_name"], name=r["name"], mode=r["mode"],
                 length_km=float(r["length_km"]), tap_off=r["tap_off"])


async def fares(conn: asyncpg.Connection, day: dt.date | None = None) -> Fares:
    day = day or today()
    media = [FareMedia(fare_media_id=r["id"], fare_media_name=r["name"], fare_media_type=r["media_type"])
             for r in await store.fare_media(conn)]
    categories = [RiderCategory(rider_category_id=r["id"], rider_category_name={"vi": r["name_vi"], "en": r["name_en"]},
                                is_default_fare_category=r["is_default"], eligibility=r["eligibility"],
                                eligibility_url=r["eligibility_url"]) for r in await store.rider_categories(conn)]
    return Fares(on=day, fare_media=media, rider_categories=categories,
                 fare_products=[_product(r) for r in await store.products_on(conn, day)],
                 routes=[_route(r) for r in await store.routes(conn)])


async def eligibility(conn: asyncpg.Connection, resident: uuid.UUID, day: dt.date | None = None,
                      card_id: int | None = None) -> Eligibility:
    """The rider category decided from verified data: VNeID's birth date, then approved proof.

    A family member's card: a child under 6 rides free once staff approved the birth certificate."""
    day = day or today()
    if card_id is not None:
        card = await own_card(conn, resident, card_id)
        approved = {r["rider_category_id"]: r["valid_until"]
                    for r in await store.approved_categories(conn, resident, day, card_id)}
        if "child" in approved and age_on(card["birth_date"], day) < 6:
            return Eligibility(rider_category_id="child", why="under 6 (approved birth certificate)",
                               valid_until=approved["child"])
        return Eligibility(rider_category_id="regular", why="no reduced fare applies", valid_until=None)
    profile = await profile_of(conn, resident)
    if profile is not None and profile.birth_date is not None:
        age = age_on(profile.birth_date, day)
        if age >= 60:
            return Eligibility(rider_category_id="senior", why="aged 60 or over (VNeID birth date)", valid_until=None)
        if age < 6:
            until = profile.birth_date.replace(year=profile.birth_date.year + 6) - dt.timedelta(days=1)
            return Eligibility(rider_category_id="child", why="under 6 (VNeID birth date)", valid_until=until)
    approved = {r["rider_category_id"]: r["valid_until"] for r in await store.approved_categories(conn, resident, day)}
    for category in ("disability", "meritorious", "poor-household", "student", "industrial-worker"):
        if category in approved:
            return Eligibility(rider_category_id=category, why="approved proof", valid_until=approved[category])
    return Eligibility(rider_category_id="regular", why="no reduced fare applies", valid_until=None)


# ---- applications with proof --------------------------------------------------------------------------------


def _application(r) -> ApplicationView:
    return ApplicationView(id=r["id"], rider_category_id=r["rider_category_id"], operator=r["operator_slug"],
                           status=r["status"], note=r["note"], valid_until=r["valid_until"],
                           created_at=web.local(r["created_at"]),
                           decided_at=web.local(r["decided_at"]) if r["decided_at"] else None, card_id=r["card_id"])


async def own_card(conn: asyncpg.Connection, resident: uuid.UUID, card_id: int):
    card = await store.card(conn, card_id)
    if card is None or card["owner_id"] != resident:
        raise NotFound(f"no card {card_id}")
    return card


def _card(r) -> Card:
    return Card(id=r["id"], holder_name=r["holder_name"], birth_date=r["birth_date"],
                created_at=web.local(r["created_at"]))


async def add_card(conn: asyncpg.Connection, principal: Principal, body: CardCreate) -> Card:
    name = unicodedata.normalize("NFC", body.holder_name).strip()
    if not name:
        raise InvalidInput.field("holder_name", "the family member's name")
    if not today() - dt.timedelta(days=120 * 366) < body.birth_date <= today():
        raise Unprocessable.field("birth_date", "a birth date in the past")
    if len(await store.cards_of(conn, uuid.UUID(principal.sub))) >= 10:
        raise Conflict("at most 10 family cards")
    return _card(await store.insert_card(conn, uuid.UUID(principal.sub), name, body.birth_date))


async def apply(conn: asyncpg.Connection, principal: Principal, category: str, operator_slug: str,
                photo: bytes, card_id: int | None = None) -> ApplicationView:
    if card_id is not None:
        card = await own_card(conn, uuid.UUID(principal.sub), card_id)
        if category != "child":
            raise Unprocessable.field("category", "a family member's card applies as child (with the birth "
                                     "certificate)", source="query")
        if age_on(card["birth_date"], today()) >= 6:
            raise Unprocessable.field("card_id", "the child is 6 or older: the regular fare applies", source="query")
    elif category not in PROOF:
        # "child" is of the document's form, but only with a family card: 422, as for the card's checks above
        raise Unprocessable.field("category", f"one of {', '.join(PROOF)} (age-based fares need no application)",
                                  source="query")
    if await store.operator(conn, operator_slug) is None:
        raise UnknownReference.field("operator", f"no transit operator {operator_slug!r}", source="query")
    if not photo:
        raise Unprocessable.field("photo", "send a photo of the proof (JPEG or PNG) as the body")
    # a photo of an ID or a certificate: only its pixels are kept (no EXIF/GPS, no device details)
    cleaned = await asyncio.to_thread(images.process_photo, photo, max_bytes=PROOF_MAX_BYTES, field="photo")
    row = await store.insert_application(conn, uuid.UUID(principal.sub), category, operator_slug, cleaned.data,
                                         cleaned.content_type, card_id)
    return _application(row)


def may_staff(principal: Principal, slug: str) -> bool:
    return principal.has_role("admin") or slug in principal.scopes_of("transit_operator")


def check_staff(principal: Principal, slug: str) -> None:
    if not may_staff(principal, slug):
        raise Forbidden(f"this needs the transit_operator role for {slug}")


async def decide(conn: asyncpg.Connection, principal: Principal, slug: str, application_id: int,
                 decision: Decision) -> ApplicationView:
    check_staff(principal, slug)
    row = await store.application(conn, application_id, lock=True)
    if row is None or row["operator_slug"] != slug:
        raise NotFound(f"no application {application_id} for {slug}")
    if row["status"] != "pending":
        raise Conflict(f"application {application_id} was already {row['status']}")
    if decision.decision == "approve":
        day = today()
        if row["card_id"] is not None:  # a child's card: free until the day before the sixth birthday
            born = (await store.card(conn, row["card_id"]))["birth_date"]
            until = born.replace(year=born.year + 6) - dt.timedelta(days=1) if (born.month, born.day) != (2, 29) \
                else dt.date(born.year + 6, 2, 28)
            if until < day:
                raise Unprocessable.field("decision", "the child is 6 or older")
        elif decision.valid_until is None or not day < decision.valid_until <= day + dt.timedelta(days=400):
            raise InvalidInput.field("valid_until", "an approval needs an expiry after today, at most 400 days ahead")
        else:
            until = decision.valid_until
        status = "approved"
    else:
        if not decision.note:
            raise InvalidInput.field("note", "say why the application is refused")
        status, until = "refused", None
    decided = await store.decide(conn, application_id, status, until, decision.note, uuid.UUID(principal.sub))
    category = {r["id"]: r for r in await store.rider_categories(conn)}[row["rider_category_id"]]
    outcome_vi = "được duyệt" if status == "approved" else "bị từ chối"
    await notify(conn, [row["resident_id"]], "transit.application_decided",
                 {"category_vi": category["name_vi"], "category_en": category["name_en"], "outcome_vi": outcome_vi,
                  "outcome_en": status, "note": decision.note or ""},
                 category="transit", idempotency_key=f"transit:application:{application_id}",
                 deep_link=f"ihanoi://transit/applications/{application_id}")
    return _application(decided)


# ---- issuer keys ----------------------------------------------------------------------------------------------


class KeyRing:
    """The issuer keys as this process knows them (reloaded every few seconds, at once after a rotation)."""

    TTL = 10.0

    def __init__(self, vault) -> None:
        self.vault = vault
        self.loaded_at = 0.0
        self.public: dict[int, object] = {}
        self.rows: list = []
        self.signing: tuple[int, object] | None = None
        self.devices: dict[bytes, object] = {}
        self.verified: set[bytes] = set()  # level-1 bytes whose issuer signature verified
        self.operator_codes: dict[str, int] = {}
        # the online gate's cache: ticket id -> (status, kind, loaded at); device key -> (session, live, loaded at)
        self.tickets: dict[int, tuple[str | None, str | None, float]] = {}
        self.device_state: dict[bytes, tuple[str | None, bool, float]] = {}
        self._script = None

    def stale(self) -> bool:
        return time.monotonic() - self.loaded_at >= self.TTL

    def gate_batch(self, redis) -> GateBatch:
        if self._script is None:
            self._script = GateBatch(redis)
        return self._script

    async def gate_state(self, pool, ticket_id: int, device_key: bytes | None):
        """(status, kind, session id, device live) from this process's cache, read on a miss."""
        clock = time.monotonic()
        cached = self.tickets.get(ticket_id)
        device = self.device_state.get(device_key) if device_key is not None else (None, True, clock)
        if cached is None or clock - cached[2] >= GATE_TTL or device is None or clock - device[2] >= GATE_TTL:
            async with pool.acquire() as conn:
                row = await store.gate_state(conn, ticket_id, device_key)
            if len(self.tickets) >= 100_000:
                self.tickets.clear()
            if len(self.device_state) >= 100_000:
                self.device_state.clear()
            cached = self.tickets[ticket_id] = (row["status"], row["kind"], clock)
            if device_key is not None:
                session = str(row["session_id"]) if row["session_id"] is not None else None
                device = self.device_state[device_key] = (session, bool(row["device_live"]), clock)
        return cached[0], cached[1], device[0], device[1]

    def forget_ticket(self, ticket_id: int) -> None:
        self.tickets.pop(ticket_id, None)

    async def load(self, conn: asyncpg.Connection, *, force: bool = False) -> None:
        if not force and not self.stale():
            return
        rows = await store.live_keys(conn)
        self.rows = rows
        public = {r["id"]: credential.public_key(bytes(r["public_key"])) for r in rows}
        if set(public) != set(self.public):
            self.verified = set()
        self.public = public
        self.signing = None
        self.loaded_at = time.monotonic()

    async def signer(self, conn: asyncpg.Connection) -> tuple[int, object]:
        await self.load(conn)
        if self.signing is None:
            current = [r for r in self.rows if r["retired_at"] is None]
            if not current:
                async with conn.transaction():  # the advisory lock holds until the new key is written
                    await store.lock_keys(conn)
                    await self.load(conn, force=True)
                    current = [r for r in self.rows if r["retired_at"] is None]
                    if not current:
                        await self._create(conn)
                        await self.load(conn, force=True)
                        current = [r for r in self.rows if r["retired_at"] is None]
            row = current[-1]
            from cryptography.hazmat.primitives.serialization import load_der_private_key

            private = load_der_private_key(self.vault.decrypt(bytes(row["private_sealed"]), context=_KEY_CONTEXT),
                                           None)
            self.signing = (row["id"], private)
        return self.signing

    async def _create(self, conn: asyncpg.Connection) -> int:
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        key = credential.new_key()
        der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        return await store.insert_key(conn, credential.compressed(key.public_key()),
                                      self.vault.encrypt(der, context=_KEY_CONTEXT))

    async def rotate(self, conn: asyncpg.Connection, overlap: dt.timedelta) -> tuple[int, list[int]]:
        await store.lock_keys(conn)
        retired = await store.retire_signing_keys(conn, overlap)
        new_id = await self._create(conn)
        await self.load(conn, force=True)
        return new_id, retired


def ring_of(state) -> KeyRing:
    ring = getattr(state, "transit_ring", None)
    if ring is None:
        ring = KeyRing(state.identity.vault)
        state.transit_ring = ring
    return ring


async def rotate(conn: asyncpg.Connection, ring: KeyRing, own: TransitSettings) -> tuple[int, list[int]]:
    return await ring.rotate(conn, dt.timedelta(hours=own.key_overlap_hours))


# ---- devices, buying, credentials -----------------------------------------------------------------------------


async def register_device(conn: asyncpg.Connection, principal: Principal, public_key_b64: str):
    point = b64decode(public_key_b64, "public_key")
    if len(point) != credential.POINT_SIZE:
        raise InvalidInput.field("public_key", "a compressed P-256 point (33 bytes)")
    try:
        credential.public_key(point)
    except ValueError:
        raise Unprocessable.field("public_key", "not a point on P-256") from None
    if not principal.session_id:
        raise Forbidden("a device key is registered for a signed-in session")
    row = await store.insert_device(conn, uuid.UUID(principal.sub), uuid.UUID(principal.session_id), point)
    if row is None:
        raise Conflict("this device key is already registered")
    return row


async def on_session_end(conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    """Logout: the session's device keys sign nothing more; validators learn it at their next sync."""
    await store.revoke_session_devices(conn, session_id)


def _ticket(r) -> TicketView:
    return TicketView(id=r["id"], operator=r["operator_slug"], product_id=r["product_id"], kind=r["kind"],
                      route_id=r["route_id"], rider_category_id=r["rider_category_id"], amount_vnd=r["amount_vnd"],
                      valid_from=web.local(r["valid_from"]), valid_until=web.local(r["valid_until"]),
                      status=r["status"], charge_id=r["charge_id"], paper=r["paper"], card_id=r["card_id"])


def _add_month(day: dt.date) -> dt.date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=web.CITY_TZ).astimezone(dt.UTC)


async def _priced(conn, product_id: str, category: str, day: dt.date, *, paper: bool):
    row = await store.product_price(conn, product_id, category, day)
    if row is None and category != "regular":
        row = await store.product_price(conn, product_id, "regular", day)
    if row is None:
        raise UnknownReference.field("product_id", f"no fare product {product_id!r} on sale on {day.isoformat()}")
    if (row["fare_media_id"] == "paper") != paper:
        raise InvalidInput.field("product_id", "a paper product is sold at kiosks" if not paper
                                 else "not a paper product")
    return row


async def _route_for(conn, product, route_id: int | None):
    if product["network"]:
        if route_id is not None:
            route = await store.route(conn, route_id)
            if route is None or route["operator_slug"] != product["operator_slug"]:
                raise InvalidInput.field("route_id", f"no route {route_id} of {product['operator_slug']}")
        return None  # every route
    if route_id is None:
        raise InvalidInput.field("route_id", "this product is for one route: name it")
    route = await store.route(conn, route_id)
    if route is None or route["operator_slug"] != product["operator_slug"]:
        raise InvalidInput.field("route_id", f"no route {route_id} of {product['operator_slug']}")
    if product["min_km"] is not None:
        length = route["length_km"]
        if length < product["min_km"] or (product["max_km"] is not None and length >= product["max_km"]):
            raise Unprocessable.field("product_id",
                                      f"route {route['short_name']} is {length} km: another distance band")
    return route_id


async def buy(conn: asyncpg.Connection, principal: Principal, body: Purchase, key: str,
              own: TransitSettings) -> TicketView:
    resident = uuid.UUID(principal.sub)
    ticket_key = f"{resident}:{key}"
    existing = await store.ticket_by_key(conn, ticket_key)
    if existing is not None:
        return _ticket(existing)
    now = utcnow()
    day = today()
    category = (await eligibility(conn, resident, day, body.card_id)).rider_category_id
    product = await _priced(conn, body.product_id, category, day, paper=False)
    route_id = await _route_for(conn, product, body.route_id)
    if product["kind"] == "single":
        if body.starts_on is not None:
            raise InvalidInput.field("starts_on", "a single ride starts when it is bought")
        start, end = now, now + dt.timedelta(hours=own.single_ticket_hours)
    else:
        # one pass of a kind per operator at a time: serialise this resident's purchases of that kind
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                           f"transit:{resident}:{body.card_id}:{product['operator_slug']}:{product['kind']}")
        first = body.starts_on or day
        if first < day or first > day + dt.timedelta(days=31):
            raise InvalidInput.field("starts_on", "today or within the next 31 days")
        if product["kind"] == "day":
            start, end = _midnight(first), _midnight(first + dt.timedelta(days=1))
        else:
            start, end = _midnight(first), _midnight(_add_month(first))
        clash = await store.overlapping_pass(conn, resident, product["operator_slug"], product["kind"], start, end,
                                             body.card_id)
        if clash is not None:
            raise PassAlreadyActive(
                f"pass {clash['id']} of this kind is active until {web.local(clash['valid_until']).date()}; "
                "a renewal starts the day it ends", ticket_id=clash["id"],
                renew_from=web.local(clash["valid_until"]).date().isoformat())
    charge_id = None
    amount = product["amount_vnd"]
    if amount > 0:
        reason = f"{product['product_id']}"
        try:
            posted = await payments.charge(conn, resident, product["operator_slug"], amount, reason,
                                           f"transit:{ticket_key}")
        except NotFound:
            operator = await store.operator(conn, product["operator_slug"])
            await payments.ensure_operator(conn, operator["slug"], operator["name"], "transit")
            posted = await payments.charge(conn, resident, product["operator_slug"], amount, reason,
                                           f"transit:{ticket_key}")
        charge_id = posted.transaction_id
    ticket_id = await store.insert_ticket(
        conn, resident_id=resident, operator_slug=product["operator_slug"], fare_product_id=product["id"],
        kind=product["kind"], route_id=route_id, rider_category_id=product["rider_category_id"], amount_vnd=amount,
        charge_id=charge_id, valid_from=start, valid_until=end, paper=False, idempotency_key=ticket_key,
        card_id=body.card_id)
    return _ticket(await store.ticket(conn, ticket_id))


async def my_ticket(conn, principal: Principal, ticket_id: int, *, lock: bool = False):
    row = await store.ticket(conn, ticket_id, lock=lock)
    if row is None or str(row["resident_id"]) != principal.sub:
        raise NotFound(f"no ticket {ticket_id}")
    return row


async def refund(conn: asyncpg.Connection, principal: Principal, ticket_id: int, redis) -> TicketView:
    """An unused single ride goes back to the wallet; it is then on the deny-list until it would have expired.

    The ride's Redis key decides against the gates: whichever of a gate's boarding (maybe not yet flushed to
    transit_tap) and this refund sets it first wins; a retried refund finds its own mark."""
    row = await my_ticket(conn, principal, ticket_id, lock=True)
    if row["status"] == "refunded":
        return _ticket(row)
    if row["kind"] != "single":
        raise NotRefundable("only single-ride tickets are refunded")
    if row["status"] != "active" or await store.was_tapped(conn, ticket_id, row["valid_from"], row["valid_until"]):
        raise NotRefundable("this ticket was used")
    if row["valid_until"] <= utcnow():
        raise NotRefundable("this ticket has expired")
    key = ride_key(redis, ticket_id)
    try:
        if not await redis.client.set(key, b"refunded", nx=True, ex=_marker_ttl(row["valid_until"])) \
                and await redis.client.get(key) != b"refunded":
            raise NotRefundable("this ticket was used")
    except (RedisError, OSError):
        raise ServiceUnavailable("cannot tell whether a gate just used this ticket; try again shortly") from None
    if row["charge_id"] is not None:
        await payments.refund(conn, row["charge_id"], None, f"transit-refund:{ticket_id}",
                              reason=f"{row['product_id']} (unused)")
    await store.set_status(conn, ticket_id, "refunded")
    return _ticket(await store.ticket(conn, ticket_id))


async def revoke(conn: asyncpg.Connection, principal: Principal, slug: str, ticket_id: int, redis=None,
                 ring: KeyRing | None = None) -> TicketView:
    """Gates refuse the ticket at once (a Redis mark every gate's check reads; the database, their cache's
    source, within GATE_TTL if Redis lost it); offline validators at their next sync."""
    check_staff(principal, slug)
    row = await store.ticket(conn, ticket_id, lock=True)
    if row is None or row["operator_slug"] != slug:
        raise NotFound(f"no ticket {ticket_id} of {slug}")
    if row["status"] != "revoked":
        await store.set_status(conn, ticket_id, "revoked")
    if ring is not None:
        ring.forget_ticket(ticket_id)
    if redis is not None:
        try:
            await redis.client.set(denied_key(redis, ticket_id), b"1", ex=_marker_ttl(row["valid_until"]))
        except (RedisError, OSError) as exc:
            log.warning("ticket revocation not marked in redis: gates learn it from the database",
                        extra={"ticket": ticket_id, "error": type(exc).__name__})
    return _ticket(await store.ticket(conn, ticket_id))


def _wire(row, key_id: int, *, device_key: bytes | None = None) -> credential.Ticket:
    return credential.Ticket(key_id=key_id, ticket_id=row["id"], operator=row["operator_code"],
                             route=row["route_id"] or 0, product=row["product_code"], category=row["category_code"],
                             valid_from=int(row["valid_from"].timestamp()),
                             valid_until=int(row["valid_until"].timestamp()), device_key=device_key,
                             paper=row["paper"])


async def credential_for(conn: asyncpg.Connection, ring: KeyRing, principal: Principal, ticket_id: int,
                         device_id: int, own: TransitSettings) -> Credential:
    row = await my_ticket(conn, principal, ticket_id)
    if row["status"] != "active" or row["valid_until"] <= utcnow():
        state = row["status"] if row["status"] != "active" else "expired"
        raise CredentialUnavailable(f"ticket {ticket_id} is {state}")
    device = await store.device(conn, device_id)
    if (device is None or str(device["resident_id"]) != principal.sub
            or str(device["session_id"]) != principal.session_id):
        raise NotFound(f"no device {device_id} in this session")
    if device["revoked_at"] is not None:
        raise CredentialUnavailable("this device key was ended")
    key_id, signer = await ring.signer(conn)
    level1 = credential.issue(_wire(row, key_id, device_key=bytes(device["public_key"])), signer)
    return Credential(ticket_id=ticket_id, level1=b64(level1), key_id=key_id, refresh_seconds=own.qr_refresh_seconds)


async def sell_paper(conn: asyncpg.Connection, ring: KeyRing, principal: Principal, slug: str, product_id: str,
                     route_id: int | None, key: str, own: TransitSettings) -> tuple[TicketView, bytes]:
    """A kiosk sale (cash): a single ride, issuer-signed only, valid once; the cash is posted to the payments
    ledger as the operator's (record_cash_sale), its transaction id kept as the ticket's charge_id."""
    check_staff(principal, slug)
    ticket_key = f"kiosk:{principal.sub}:{key}"
    row = await store.ticket_by_key(conn, ticket_key)
    if row is None:
        product = await _priced(conn, product_id, "regular", today(), paper=True)
        if product["operator_slug"] != slug:
            raise InvalidInput.field("product_id", f"not a product of {slug}")
        route = await _route_for(conn, product, route_id)
        now = utcnow()
        cash_id = None
        if product["amount_vnd"] > 0:  # the kiosk took cash: the ledger says so, once per sale
            operator = await store.operator(conn, slug)
            args = (slug, product["amount_vnd"], f"{product['product_id']} (cash)", f"transit:{ticket_key}")
            try:
                cash_id = (await payments.record_cash_sale(conn, *args)).transaction_id
            except NotFound:
                await payments.ensure_operator(conn, slug, operator["name"], "transit")
                cash_id = (await payments.record_cash_sale(conn, *args)).transaction_id
        ticket_id = await store.insert_ticket(
            conn, resident_id=None, operator_slug=slug, fare_product_id=product["id"], kind="single", route_id=route,
            rider_category_id="regular", amount_vnd=product["amount_vnd"], charge_id=cash_id, valid_from=now,
            valid_until=now + dt.timedelta(hours=own.paper_ticket_hours), paper=True, idempotency_key=ticket_key)
        row = await store.ticket(conn, ticket_id)
    return _ticket(row), await paper_code(conn, ring, principal, slug, row["id"])


async def paper_code(conn: asyncpg.Connection, ring: KeyRing, principal: Principal, slug: str, ticket_id: int) -> bytes:
    check_staff(principal, slug)
    row = await store.ticket(conn, ticket_id)
    if row is None or row["operator_slug"] != slug or not row["paper"]:
        raise NotFound(f"no paper ticket {ticket_id} of {slug}")
    key_id, signer = await ring.signer(conn)
    return credential.issue(_wire(row, key_id), signer)


# ---- gates and validators ---------------------------------------------------------------------------------------


def validator_operator(principal: Principal) -> str:
    scopes = principal.scopes_of("transit_validator")
    if not scopes:
        raise Forbidden("this needs the transit_validator role")
    return scopes[0]


# ---- the online gate ------------------------------------------------------------------------------------------
#
# An accepted check touches no database: the ticket's status and the device key's session come from a cache per
# process (loaded on first sight, refreshed every GATE_TTL seconds), and one Redis script decides and records:
# a revoked or refunded ticket is refused (markers written by revoke and refund), these exact bytes once on every
# gate (SET NX), a single ride once (SET NX), and the boarding appended to a Redis stream. The stream is the
# boarding's durable record until the `transit.flush_boardings` job writes it to transit_tap (and marks singles
# used) and only then deletes it, so a crash of either process loses nothing; a repeated drain writes a tap
# id once. Logout is refused at once through the kernel's view of ended sessions (every process, within a second).

GATE_TTL = 30.0
GATE_SHARDS = 8  # the stream and a ticket's keys share a hash tag (one slot in a Redis Cluster)
_GATE_CHECK = """
if redis.call('exists', KEYS[1]) == 1 then return 'revoked' end
if not redis.call('set', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 'already-used' end
if ARGV[2] ~= '0' and not redis.call('set', KEYS[3], 'used', 'NX', 'EX', ARGV[2]) then
  if redis.call('get', KEYS[3]) == 'refunded' then return 'revoked' end
  return 'already-used'
end
redis.call('xadd', KEYS[4], '*', 'b', ARGV[3])
return 'ok'
"""
_BOARDING = msgspec.msgpack.Encoder()
# a boarding's tap id: a random prefix per process and a counter (unique, and no getrandom call per check)
_TAP_PREFIX = os.urandom(8)
_TAP_SEQUENCE = itertools.count(1)


def _tag(ticket_id: int) -> str:
    return f"{{transit-gate-{ticket_id % GATE_SHARDS}}}"


def denied_key(redis, ticket_id: int) -> str:
    return redis.key("transit", _tag(ticket_id), "denied", ticket_id)


def ride_key(redis, ticket_id: int) -> str:
    return redis.key("transit", _tag(ticket_id), "ride", ticket_id)


def boardings_key(redis, shard: int) -> str:
    return redis.key("transit", f"{{transit-gate-{shard}}}", "boardings")


def _marker_ttl(valid_until: dt.datetime) -> int:
    # after valid_until every code of the ticket is refused as expired anyway
    return max(60, int((valid_until - utcnow()).total_seconds()) + 60)


class GateBatch:
    """The gate script's calls of one event-loop turn, sent to Redis as one pipeline (each call is still its own
    atomic script): under load, dozens of checks share a round trip and the client's per-command overhead."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.sha = hashlib.sha1(_GATE_CHECK.encode()).hexdigest()
        self.pending: list[tuple[list, list, asyncio.Future]] = []
        self.sending: set[asyncio.Task] = set()  # held so a running send is not garbage-collected

    def run(self, keys: list, args: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((keys, args, future))
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self._start)
        return future

    def _start(self) -> None:
        task = asyncio.ensure_future(self._send())
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self) -> None:
        batch, self.pending = self.pending, []
        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted or flushed its scripts
                await self.redis.client.script_load(_GATE_CHECK)
                results = await self._pipeline(batch)
        except Exception as exc:  # noqa: BLE001 - every waiting check gets the error
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch) -> list:
        if self.redis.cluster:
            # redis-py's cluster pipeline refuses scripts: the calls go out together instead, each to the node
            # holding its ticket's slot (its keys share one hash tag)
            return await asyncio.gather(*(self.redis.client.evalsha(self.sha, len(keys), *keys, *args)
                                          for keys, args, _ in batch), return_exceptions=True)
        pipe = self.redis.client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)


async def check_online(pool, redis, ring: KeyRing, principal: Principal, code_b64: str,
                       route_id: int, vehicle: str, own: TransitSettings, sessions=None) -> CheckResult:
    """An always-connected gate: every offline check, the cached ticket and device state, then Redis.

    A pool connection is taken only on a cache miss (keys, an operator, a ticket or device key first seen in
    GATE_TTL seconds), so neither a flood of bad codes nor the accepted ones cost database work."""
    slug = validator_operator(principal)
    if ring.stale() or slug not in ring.operator_codes:
        async with pool.acquire() as conn:
            await ring.load(conn)
            await _operator_codes(conn, ring, slug)
    operator = ring.operator_codes.get(slug)
    if operator is None:
        raise Forbidden(f"no transit operator {slug!r}")
    try:
        data = b64decode(code_b64, "code")
    except InvalidInput:
        return CheckResult(accepted=False, reason="malformed")
    now = int(time.time())
    try:
        scanned = credential.verify(data, ring.public, now, operator=operator, route=route_id,
                                    policy=credential.Policy(own.qr_freshness_seconds, own.clock_skew_seconds),
                                    device_keys=ring.devices, verified=ring.verified)
    except credential.Refused as refused:
        return CheckResult(accepted=False, reason=refused.reason)
    ticket = scanned.ticket
    status, kind, session_id, device_live = await ring.gate_state(pool, ticket.ticket_id, ticket.device_key)
    if status is None or status in ("revoked", "refunded"):
        return CheckResult(accepted=False, reason="revoked", ticket_id=ticket.ticket_id)
    if status != "active":
        return CheckResult(accepted=False, reason="already-used", ticket_id=ticket.ticket_id)
    if ticket.device_key is not None and (not device_live or (sessions is not None
                                                              and sessions.is_revoked(session_id))):
        return CheckResult(accepted=False, reason="device-revoked", ticket_id=ticket.ticket_id)
    fingerprint = scanned.fingerprint()
    window = own.qr_freshness_seconds + own.clock_skew_seconds + 1
    until = ticket.valid_until - now + 60
    single = kind == "single"
    tap_id = _TAP_PREFIX + next(_TAP_SEQUENCE).to_bytes(8, "big")
    boarding = _BOARDING.encode((tap_id, f"client:{principal.client_id or principal.sub}", slug,
                                 ticket.ticket_id, route_id, vehicle, time.time(), fingerprint, single))
    tag = _tag(ticket.ticket_id)
    prefix = f"{redis.prefix}transit:{tag}:"
    decided = ring.gate_batch(redis).run(
        [f"{prefix}denied:{ticket.ticket_id}", f"{prefix}used:{fingerprint.hex()}", f"{prefix}ride:{ticket.ticket_id}",
         f"{prefix}boardings"],
        # these bytes once, on every gate: a screenshot shown again (here or elsewhere) is refused
        [window if ticket.device_key is not None else max(1, until), until if single else 0, boarding])
    try:
        answer = await decided
    except (RedisError, OSError):
        # without Redis no gate can know whether another accepted these bytes: nobody is let through unrecorded
        raise ServiceUnavailable("the gate cannot reach the fleet's memory of used codes; retry") from None
    if answer == b"ok":
        return CheckResult(accepted=True, ticket_id=ticket.ticket_id, rider_category=ticket.category)
    return CheckResult(accepted=False, reason=answer.decode(), ticket_id=ticket.ticket_id)


async def flush_boardings(conn: asyncpg.Connection, redis, *, batch: int = 1000) -> int:
    """Move the online boardings from their Redis streams to transit_tap: written and committed first, deleted
    from Redis after, so a crash in between writes them again (a tap id counts once) and loses none."""
    decoder = msgspec.msgpack.Decoder()
    moved = 0
    for shard in range(GATE_SHARDS):
        key = boardings_key(redis, shard)
        while True:
            entries = await redis.client.xrange(key, "-", "+", count=batch)
            if not entries:
                break
            rows = []
            for _, fields in entries:
                tap_id, validator, slug, ticket_id, route_id, vehicle, at, fingerprint, single = \
                    decoder.decode(fields[b"b"])
                rows.append((uuid.UUID(bytes=tap_id), validator, slug, ticket_id, route_id, vehicle,
                             dt.datetime.fromtimestamp(at, dt.UTC), fingerprint, single))
            # not flagged here: a gate refuses a replay at once; an offline tap uploaded later is flagged against
            # these (pairing each boarding with all of a pass's earlier ones at every flush would cost the most)
            async with conn.transaction():
                stored = await store.insert_boardings(conn, rows)
            await redis.client.xdel(key, *[entry_id for entry_id, _ in entries])
            moved += len(stored)
            if len(entries) < batch:
                break
    return moved


async def _operator_codes(conn, ring: KeyRing, slug: str) -> None:
    if slug not in ring.operator_codes:
        ring.operator_codes = {r["slug"]: r["code"] for r in await store.operators(conn)}


async def sync(conn: asyncpg.Connection, ring: KeyRing, principal: Principal, own: TransitSettings) -> SyncView:
    slug = validator_operator(principal)
    operator = await store.operator(conn, slug)
    if operator is None:
        raise Forbidden(f"no transit operator {slug!r}")
    await ring.signer(conn)  # there is always a key to hand out
    await ring.load(conn, force=True)
    now = utcnow()
    keys = [IssuerKey(key_id=r["id"], public_key=b64(bytes(r["public_key"])), signs=r["retired_at"] is None,
                      verify_until=r["verify_until"]) for r in ring.rows]
    # a device revoked within a pass's longest life may still hold a valid level 1
    devices = await store.revoked_devices(conn, now - dt.timedelta(days=32))
    return SyncView(operator=slug, operator_code=operator["code"], at=now, keys=keys,
                    revoked_tickets=await store.denied_tickets(conn, slug, now),
                    revoked_devices=[b64(bytes(d)) for d in devices],
                    fare_products=[_product(r) for r in await store.products_on(conn, today(), slug)],
                    routes=[_route(r) for r in await store.routes(conn, slug)],
                    freshness_seconds=own.qr_freshness_seconds, clock_skew_seconds=own.clock_skew_seconds)


async def upload_taps(conn: asyncpg.Connection, principal: Principal, batch: TapBatch,
                      own: TransitSettings) -> TapReceipt:
    slug = validator_operator(principal)
    stored = await store.insert_taps(conn, f"client:{principal.client_id or principal.sub}", slug, batch.taps)
    flagged = await store.flag_new_taps(conn, stored, dt.timedelta(seconds=own.impossible_journey_seconds)) \
        if stored else 0
    if flagged:
        log.warning("transit taps flagged", extra={"operator": slug, "flags": flagged})
    return TapReceipt(received=len(batch.taps), stored=len(stored), duplicates=len(batch.taps) - len(stored),
                      flagged=flagged)


# ---- operator views ---------------------------------------------------------------------------------------------


def _range(date_from: dt.date, date_to: dt.date) -> tuple[dt.datetime, dt.datetime]:
    if date_to < date_from:
        raise InvalidInput.field("to", "on or after `from`", source="query")
    if (date_to - date_from).days > 366:
        raise InvalidInput.field("to", "at most 366 days after `from`", source="query")
    return _midnight(date_from), _midnight(date_to + dt.timedelta(days=1))


async def report(conn: asyncpg.Connection, principal: Principal, slug: str, date_from: dt.date,
                 date_to: dt.date) -> Report:
    check_staff(principal, slug)
    if await store.operator(conn, slug) is None:
        raise NotFound(f"no transit operator {slug!r}")
    start, end = _range(date_from, date_to)
    return Report(operator=slug, date_from=date_from, date_to=date_to,
                  rides=[RideRow(route_id=r["route_id"], product_id=r["product_id"], rides=r["rides"])
                         for r in await store.rides(conn, slug, start, end)],
                  revenue=[RevenueRow(product_id=r["product_id"], tickets=r["tickets"], revenue_vnd=r["revenue"])
                           for r in await store.revenue(conn, slug, start, end)],
                  flags=await store.flag_count(conn, slug, start, end))


def report_csv(view: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "route_id", "product_id", "rides", "tickets", "revenue_vnd"])
    for r in view.rides:
        writer.writerow(["rides", r.route_id, r.product_id, r.rides, "", ""])
    for v in view.revenue:
        writer.writerow(["revenue", "", v.product_id, "", v.tickets, v.revenue_vnd])
    return out.getvalue()


async def flags(conn: asyncpg.Connection, principal: Principal, slug: str, limit: int) -> list[Flag]:
    check_staff(principal, slug)
    return [Flag(id=r["id"], ticket_id=r["ticket_id"], reason=r["reason"], first_tap=r["first_tap"],
                 second_tap=r["second_tap"], created_at=web.local(r["created_at"]))
            for r in await store.flags(conn, slug, limit)]


# ---- the renewal reminder (a job) ---------------------------------------------------------------------------------


async def remind_renewals(conn: asyncpg.Connection, own: TransitSettings, *, now: dt.datetime | None = None,
                          limit: int = 200) -> int:
    now = now or utcnow()
    rows = await store.due_reminders(conn, now + dt.timedelta(days=own.renewal_reminder_days), now, limit)
    for r in rows:
        ends = web.local(r["valid_until"]).date()
        await notify(conn, [r["resident_id"]], "transit.pass_renewal",
                     {"product_vi": r["name_vi"], "product_en": r["name_en"], "ends_vi": ends.strftime("%d/%m/%Y"),
                      "ends_en": ends.isoformat()},
                     category="transit", idempotency_key=f"transit:renewal:{r['id']}",
                     deep_link=f"ihanoi://transit/tickets/{r['id']}")
        await store.mark_reminded(conn, r["id"])
    return len(rows)
