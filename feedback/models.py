"""Request and response bodies of the feedback endpoints.

Times go out in Asia/Ho_Chi_Minh (+07:00); they are stored in UTC. Names of categories, units and
statuses come in the caller's language (Vietnamese unless `Accept-Language: en`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from app.web import HumanText
from feedback.places import HANOI_LAT, HANOI_LNG

Urgency = Literal["normal", "complex", "urgent"]
Status = Literal["submitted", "received", "in_progress", "answered", "closed", "rejected"]

Reason = Annotated[HumanText, msgspec.Meta(min_length=5, max_length=2000)]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
# A place a report is about: inside Hanoi's extent (feedback.places), as the document says.
HanoiLatitude = Annotated[float, msgspec.Meta(ge=HANOI_LAT[0], le=HANOI_LAT[1], description="inside Hanoi")]
HanoiLongitude = Annotated[float, msgspec.Meta(ge=HANOI_LNG[0], le=HANOI_LNG[1], description="inside Hanoi")]


class Named(msgspec.Struct):
    code: str
    name: str


class Category(msgspec.Struct):
    code: str
    name: str
    description: str
    keywords: str
    urgency: Urgency
    default_unit: str  # a unit code, or "ward": the ward the report is in
    receive_hours: int
    answer_hours: int


class CategoryList(msgspec.Struct):
    categories: list[Category]


class Photo(msgspec.Struct):
    id: str
    url: str
    thumbnail_url: str
    content_type: str
    width: int
    height: int
    byte_size: int
    public: bool


class PhotoRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    # a private photo (a face, a number plate) is seen only by the reporter and city staff
    public: bool = True


Photos = Annotated[list[PhotoRef], msgspec.Meta(max_length=5)]


class ReportCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=41)]
    description: Annotated[HumanText, msgspec.Meta(min_length=10, max_length=4000)]
    latitude: HanoiLatitude
    longitude: HanoiLongitude
    ward: Annotated[str, msgspec.Meta(min_length=2, max_length=64)]
    address: Annotated[HumanText, msgspec.Meta(max_length=300)] = ""
    photos: Photos = []
    hide_name: bool = False
    visibility: Literal["public", "private"] = "public"
    # false: the server first offers open reports of the same category nearby (409 possible-duplicates)
    duplicates_checked: bool = False


class Answer(msgspec.Struct):
    text: str
    at: dt.datetime
    on_time: bool | None
    unit: Named
    photos: list[Photo]


class Rating(msgspec.Struct):
    stars: int
    comment: str | None
    at: dt.datetime


class Report(msgspec.Struct, omit_defaults=True):
    id: int
    category: Named
    status: Status
    status_label: str
    urgency: Urgency
    description: str
    latitude: float
    longitude: float
    address: str
    ward: Named
    unit: Named
    visibility: str
    reporter_name: str | None  # None when hidden (except for staff)
    name_hidden: bool
    submitted_at: dt.datetime
    updated_at: dt.datetime
    receive_due_at: dt.datetime
    answer_due_at: dt.datetime
    overdue: bool
    photos: list[Photo]
    follower_count: int
    mine: bool
    following: bool
    answer: Answer | None = None
    rating: Rating | None = None
    closed_at: dt.datetime | None = None
    close_reason: str | None = None
    duplicate_of: int | None = None
    reopen_count: int = 0
    can_reopen_until: dt.datetime | None = None
    # staff only
    assignee_id: str | None = None
    escalation_level: int | None = None
    source: str | None = None


class ReportSummary(msgspec.Struct):
    """A row of the public list, the map, the staff queue and 'my reports'."""

    id: int
    category: Named
    status: Status
    status_label: str
    urgency: Urgency
    description: str
    latitude: float
    longitude: float
    address: str
    ward: Named
    unit: Named
    submitted_at: dt.datetime
    answer_due_at: dt.datetime
    overdue: bool
    follower_count: int
    thumbnail_url: str | None


class ReportPage(msgspec.Struct):
    items: list[ReportSummary]
    next_cursor: str | None


class Event(msgspec.Struct, omit_defaults=True):
    id: int
    at: dt.datetime
    kind: str
    label: str
    actor: str  # "reporter", "staff" or "system"
    public: bool
    actor_unit: Named | None = None
    from_status: str | None = None
    to_status: str | None = None
    message: str | None = None
    photos: list[Photo] = []
    data: dict | None = None
    actor_id: str | None = None  # staff only


class Timeline(msgspec.Struct):
    report_id: int
    events: list[Event]


# ---- staff actions ----------------------------------------------------------------------------------------


class Receive(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    urgency: Urgency | None = None  # staff may judge it complex or urgent on receipt; deadlines follow


class Assign(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    assignee_id: str


class AnswerCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[HumanText, msgspec.Meta(max_length=4000)] = ""
    template: str | None = None
    values: dict[str, Annotated[HumanText, msgspec.Meta(max_length=1000)]] = {}
    photos: Photos = []


class Reject(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    template: str | None = None
    values: dict[str, Annotated[HumanText, msgspec.Meta(max_length=1000)]] = {}


class Transfer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    unit: Annotated[str, msgspec.Meta(min_length=2, max_length=64)]
    reason: Reason


class Note(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[HumanText, msgspec.Meta(min_length=1, max_length=4000)]


class Merge(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    into: int  # the report this one duplicates


class AnswerTemplate(msgspec.Struct):
    code: str
    kind: Literal["answer", "reject"]
    title: str
    body: str
    variables: list[str]


class AnswerTemplateList(msgspec.Struct):
    templates: list[AnswerTemplate]


# ---- resident actions -------------------------------------------------------------------------------------


class Reopen(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Reason


class Rate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    stars: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: Annotated[HumanText, msgspec.Meta(max_length=1000)] | None = None


class Following(msgspec.Struct):
    report_id: int
    following: bool
    follower_count: int


# ---- transparency ------------------------------------------------------------------------------------------


class UnitStats(msgspec.Struct):
    unit: Named
    received: int
    answered: int
    answered_on_time: int
    on_time_rate: float | None
    open: int
    overdue: int
    ratings: int
    average_rating: float | None


class UnitStatsList(msgspec.Struct):
    since: dt.datetime
    units: list[UnitStats]
