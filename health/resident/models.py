"""Bodies of the resident-side health endpoints (msgspec Structs). Times are shown in Asia/Ho_Chi_Minh."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

ClientId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$", description="a machine client's id")]


class SummaryEntry(msgspec.Struct, kw_only=True):
    id: str
    type: str                        # the FHIR resource type
    text: str                        # what it is, as the facility wrote it
    detail: str | None = None        # a dosage, a result's value, a visit's reason
    status: str | None = None
    date: dt.datetime | None = None  # its clinical date, in Hanoi time
    code: str | None = None          # system|code of its first coding
    facility: str | None = None      # the facility that recorded it


class EmptyReason(msgspec.Struct):
    code: str                        # list-empty-reason: unavailable
    text: str


class SummarySection(msgspec.Struct, kw_only=True):
    key: str                         # allergies, problems, medications, immunizations, results, visits
    code: str                        # the section's LOINC code
    title: str
    entries: list[SummaryEntry]
    empty_reason: EmptyReason | None = None


class Summary(msgspec.Struct, kw_only=True):
    """The International Patient Summary's sections as the app shows them (the FHIR document has the same)."""

    patient_id: str | None           # the FHIR Patient id; None while no facility has written a record
    generated_at: dt.datetime
    language: str
    sections: list[SummarySection]


class TimelineItem(msgspec.Struct, kw_only=True):
    id: str
    type: str
    text: str
    detail: str | None = None
    status: str | None = None
    date: dt.datetime
    facility: str | None = None
    encounter_id: str | None = None  # the visit it belongs to (its summary PDF)


class Timeline(msgspec.Struct, kw_only=True):
    items: list[TimelineItem]
    next_cursor: str | None = None


class AppGrantCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    client_id: ClientId
    days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 365


class AppGrant(msgspec.Struct, kw_only=True):
    id: int
    client_id: str
    app_name: str | None
    granted_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    in_force: bool


class AppGrantList(msgspec.Struct):
    items: list[AppGrant]


class DisplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Whose summary an app asks for: the resident's personal ID number (in the body, never in a URL or a log)."""

    personal_id: Annotated[str, msgspec.Meta(min_length=9, max_length=12, pattern=r"^[0-9]+$")]
