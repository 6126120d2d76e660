"""The transit module's settings."""

from __future__ import annotations

import msgspec

from modules import Settings


class TransitSettings(msgspec.Struct, frozen=True, kw_only=True):
    qr_freshness_seconds: int = 30
    qr_refresh_seconds: int = 15
    clock_skew_seconds: int = 5
    key_overlap_hours: int = 72
    renewal_reminder_days: int = 3
    impossible_journey_seconds: int = 120
    paper_ticket_hours: int = 24
    single_ticket_hours: int = 24
    tap_retention_months: int = 0

    def __post_init__(self) -> None:
        if not 15 <= self.qr_freshness_seconds <= 30:
            raise msgspec.ValidationError("IHANOI_TRANSIT_QR_FRESHNESS must be 15-30 seconds")
        if not 5 <= self.qr_refresh_seconds <= self.qr_freshness_seconds:
            raise msgspec.ValidationError("IHANOI_TRANSIT_QR_REFRESH must be 5 seconds up to the freshness window")
        if not 0 <= self.clock_skew_seconds <= 60:
            raise msgspec.ValidationError("IHANOI_TRANSIT_CLOCK_SKEW must be 0-60 seconds")
        if not 1 <= self.key_overlap_hours <= 24 * 60:
            raise msgspec.ValidationError("IHANOI_TRANSIT_KEY_OVERLAP_HOURS must be 1-1440 hours")


SETTINGS = Settings(TransitSettings, {
    "IHANOI_TRANSIT_QR_FRESHNESS": ("qr_freshness_seconds", "seconds a phone's signed timestamp stays good at a gate or validator, 15-30 (default 30)"),
    "IHANOI_TRANSIT_QR_REFRESH": ("qr_refresh_seconds", "how often the app re-signs its QR timestamp, at most the freshness window (default 15)"),
    "IHANOI_TRANSIT_CLOCK_SKEW": ("clock_skew_seconds", "seconds a phone's clock may run ahead of a validator's before its code is refused as from the future (default 5)"),
    "IHANOI_TRANSIT_KEY_OVERLAP_HOURS": ("key_overlap_hours", "hours a rotated-out issuer key still verifies, so validators that have not synced and issued codes keep working (default 72)"),
    "IHANOI_TRANSIT_RENEWAL_REMINDER_DAYS": ("renewal_reminder_days", "days before a monthly pass ends that its holder is reminded to renew (default 3)"),
    "IHANOI_TRANSIT_IMPOSSIBLE_JOURNEY_SECONDS": ("impossible_journey_seconds", "boardings of one ticket on two vehicles closer than this are flagged at reconciliation (default 120)"),
    "IHANOI_TRANSIT_PAPER_TICKET_HOURS": ("paper_ticket_hours", "hours a paper single-ride ticket sold at a kiosk stays valid (default 24)"),
    "IHANOI_TRANSIT_SINGLE_TICKET_HOURS": ("single_ticket_hours", "hours an app single-ride ticket stays valid after purchase (default 24)"),
    "IHANOI_TRANSIT_TAP_RETENTION_MONTHS": ("tap_retention_months", "months of validator taps kept in `transit_tap`; older months are dropped (taps say where a rider went), so the operator reports cover only the months kept; 0 keeps every month (default 0)"),
})


def of(settings) -> TransitSettings:
    return settings.of("transit")
