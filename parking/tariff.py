"""Tariff arithmetic: what a stay costs under one tariff. Pure functions, no database.

Two kinds of tariff, as Hanoi's fee decision has them:

- `turn` (motorbikes): a fee per turn by the bands the stay touches. Day is `day_starts`-`day_ends`
  (06:00-18:00) in Asia/Ho_Chi_Minh, night is the rest. A stay only in the day costs `day_vnd`, only in
  the night `night_vnd`, touching both `day_night_vnd`. A stay longer than 24 hours costs `day_night_vnd`
  for every whole 24 hours from check-in, then the rest is priced as a turn of its own.
- `hourly` (cars): every started hour costs the rate of its place in the stay: `hour_rates[i]` for hour
  i+1, the last rate for every hour after (25,000 for hours 1-2, 35,000 for 3-4, 45,000 from 5). The
  hours keep counting across midnight and days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

CITY_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Rates:
    mode: str  # "turn" or "hourly"
    day_vnd: int = 0
    night_vnd: int = 0
    day_night_vnd: int = 0
    hour_rates: tuple[int, ...] = ()
    day_starts: dt.time = dt.time(6)
    day_ends: dt.time = dt.time(18)


# Hanoi's levels (2017 decision); "large" (over 9 seats) is not in the issue: an assumption, documented.
HANOI_DEFAULTS: dict[str, tuple[Rates, int | None]] = {
    "motorbike": (Rates("turn", day_vnd=5_000, night_vnd=8_000, day_night_vnd=12_000), 120_000),
    "car": (Rates("hourly", hour_rates=(25_000, 25_000, 35_000, 35_000, 45_000)), None),
    "large": (Rates("hourly", hour_rates=(35_000, 35_000, 45_000, 45_000, 55_000)), None),
}


def _touches(start: dt.datetime, end: dt.datetime, rates: Rates) -> tuple[bool, bool]:
    """Whether [start, end) touches the day band and the night band (local time)."""
    local_start, local_end = start.astimezone(CITY_TZ), end.astimezone(CITY_TZ)
    day = night = False
    cursor = local_start.date() - dt.timedelta(days=1)
    while cursor <= local_end.date():
        day_from = dt.datetime.combine(cursor, rates.day_starts, CITY_TZ)
        day_to = dt.datetime.combine(cursor, rates.day_ends, CITY_TZ)
        if local_start < day_to and day_from < local_end:
            day = True
        next_day = dt.datetime.combine(cursor + dt.timedelta(days=1), rates.day_starts, CITY_TZ)
        if local_start < next_day and day_to < local_end:
            night = True
        cursor += dt.timedelta(days=1)
    return day, night


def fee(rates: Rates, start: dt.datetime, end: dt.datetime) -> int:
    """The fee in VND for a stay from `start` to `end` (aware datetimes); a zero-length stay is one turn/hour."""
    if end < start:
        raise ValueError("a stay ends after it starts")
    if rates.mode == "hourly":
        hours = max(1, -(-(end - start) // HOUR))
        rates_list = rates.hour_rates
        known = sum(rates_list[: min(hours, len(rates_list))])
        return known + max(0, hours - len(rates_list)) * rates_list[-1]
    whole_days = (end - start) // DAY
    rest_start = start + whole_days * DAY
    total = whole_days * rates.day_night_vnd
    if rest_start < end or whole_days == 0:
        day, night = _touches(rest_start, max(end, rest_start + dt.timedelta(seconds=1)), rates)
        total += rates.day_night_vnd if day and night else rates.day_vnd if day else rates.night_vnd
    return total
