"""The parking module's settings."""

from __future__ import annotations

from typing import Annotated

import msgspec

from modules import Settings


class ParkingSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_stay_minutes: int = 240
    clock_tolerance_seconds: int = 120
    reminder_minutes: int = 10
    pass_code_seconds: int = 120
    remit_within_days: int = 7
    gate_max_stay_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


SETTINGS = Settings(ParkingSettings, {
    "IHANOI_PARKING_MAX_STAY_MINUTES": ("max_stay_minutes", "longest on-street session a resident may buy, extensions included, in minutes (default 240)"),
    "IHANOI_PARKING_CLOCK_TOLERANCE": ("clock_tolerance_seconds", "seconds a gate's or attendant phone's clock may differ from the server's before its check-in/out is refused (default 120)"),
    "IHANOI_PARKING_REMINDER_MINUTES": ("reminder_minutes", "minutes before an on-street session ends that the resident is reminded (default 10)"),
    "IHANOI_PARKING_PASS_CODE_SECONDS": ("pass_code_seconds", "seconds the QR pass code from the resident's app is valid at a gate (default 120)"),
    "IHANOI_PARKING_REMIT_WITHIN_DAYS": ("remit_within_days", "days after which money an operator collected and has not remitted is a reconciliation gap (default 7)"),
    "IHANOI_PARKING_GATE_MAX_STAY_DAYS": ("gate_max_stay_days", "days a vehicle may stay at a gated lot; a longer stay still checks out and pays its fee, and is flagged for the operator's staff (overstays list) (default 30)"),
})


def of(settings) -> ParkingSettings:
    return settings.of("parking")
