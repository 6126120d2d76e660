"""Request and response bodies of the notifications endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

# A notification category: one that a loaded module declared (`Module(notification_categories=...)`).
Category = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,30}$")]
Urgency = Literal["normal", "emergency"]


class DeviceRegistration(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    fcm_token: Annotated[str, msgspec.Meta(min_length=8, max_length=4096)]
    installation_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    platform: Literal["android", "ios", "web"]
    locale: Literal["vi", "en"] = "vi"
    app_version: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class Device(msgspec.Struct):
    id: str
    platform: str
    locale: str
    app_version: str
    created_at: dt.datetime
    updated_at: dt.datetime


class InboxItem(msgspec.Struct):
    id: int
    category: str
    urgency: str
    title: str
    body: str
    deep_link: str | None
    data: dict[str, object]
    created_at: dt.datetime
    read_at: dt.datetime | None


class InboxPage(msgspec.Struct):
    items: list[InboxItem]
    next_cursor: str | None
    unread: int


class UnreadCount(msgspec.Struct):
    unread: int


class QuietHours(msgspec.Struct, forbid_unknown_fields=True):
    start: dt.time
    end: dt.time


class Preferences(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    push: dict[Category, bool]
    quiet_hours: QuietHours | None = None
    home_unit: str | None = None


class PreferencesView(msgspec.Struct):
    push: dict[str, bool]
    quiet_hours: QuietHours | None
    home_unit: str | None
    timezone: str = "Asia/Ho_Chi_Minh"


class BroadcastCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    target_unit: Annotated[str, msgspec.Meta(min_length=2, max_length=64)]
    urgency: Urgency = "normal"
    title_vi: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    body_vi: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    title_en: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    body_en: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    deep_link: Annotated[str, msgspec.Meta(max_length=300)] | None = None
    scheduled_at: dt.datetime | None = None


class Broadcast(msgspec.Struct):
    id: int
    target_unit: str
    urgency: str
    title: dict[str, str]
    status: str
    scheduled_at: dt.datetime
    needs_approval: bool
    approved_by: str | None
    recipients: int
    deliveries: dict[str, int]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None


class BroadcastList(msgspec.Struct):
    broadcasts: list[Broadcast]
