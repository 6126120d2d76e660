"""Feedback's settings (`Module(settings=...)`), read with `settings.of("feedback")`."""

from __future__ import annotations

from typing import Annotated

import msgspec

from modules import Settings


class FeedbackSettings(msgspec.Struct, frozen=True, kw_only=True):
    photos_per_hour: Annotated[int, msgspec.Meta(ge=1)] = 30
    event_retention_months: Annotated[int, msgspec.Meta(ge=0)] = 0


SETTINGS = Settings(FeedbackSettings, {
    "IHANOI_FEEDBACK_PHOTOS_PER_HOUR": (
        "photos_per_hour", "photos one resident may upload per hour (default 30); more answer 429 with Retry-After"),
    "IHANOI_FEEDBACK_EVENT_RETENTION_MONTHS": (
        "event_retention_months", "months of report steps kept attached to `report_event`; older months are "
        "detached (kept as their own tables for the archive; a report's timeline then starts after them); 0 keeps "
        "every month (default 0)"),
})


def feedback_settings(settings) -> FeedbackSettings:
    return settings.of("feedback")
