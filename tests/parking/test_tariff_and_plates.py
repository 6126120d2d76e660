"""Tariff arithmetic across day and night bands, midnight and multi-day stays; plate normalisation."""

from __future__ import annotations

import datetime as dt

import pytest

from parking.plates import PlateUnreadable, normalise
from parking.tariff import CITY_TZ, HANOI_DEFAULTS, fee

MOTORBIKE = HANOI_DEFAULTS["motorbike"][0]
CAR = HANOI_DEFAULTS["car"][0]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=CITY_TZ)


@pytest.mark.parametrize(("start", "end", "expected"), [
    (at(2, 8), at(2, 11), 5_000),          # day only
    (at(2, 6), at(2, 17, 59), 5_000),      # the whole day band
    (at(2, 19), at(2, 23), 8_000),         # night only
    (at(2, 22), at(3, 5), 8_000),          # across midnight, still night
    (at(2, 17), at(2, 19), 12_000),        # day into night
    (at(2, 5), at(2, 7), 12_000),          # night into day
    (at(2, 8), at(3, 8), 12_000),          # exactly 24 hours: one day-and-night
    (at(2, 8), at(3, 10), 17_000),         # 24 h, then 2 h of day
    (at(2, 20), at(4, 23), 2 * 12_000 + 8_000),  # two whole days, then 3 h of night
    (at(2, 10), at(2, 10), 5_000),         # in and straight out: one turn
])
def test_motorbike_turns(start, end, expected):
    assert fee(MOTORBIKE, start, end) == expected


def test_band_times_are_hanoi_time_whatever_zone_the_stay_is_given_in():
    start = at(2, 8).astimezone(dt.UTC)  # 01:00 UTC
    assert fee(MOTORBIKE, start, start + dt.timedelta(hours=3)) == 5_000


@pytest.mark.parametrize(("minutes", "expected"), [
    (1, 25_000), (60, 25_000), (61, 50_000), (120, 50_000), (150, 85_000), (240, 120_000),
    (241, 165_000), (300, 165_000), (360, 210_000),
    (24 * 60, 120_000 + 20 * 45_000),          # a whole day: hours keep counting
    (50 * 60, 120_000 + 46 * 45_000),          # over two days, across two midnights
])
def test_car_hours(minutes, expected):
    start = at(2, 22, 30)
    assert fee(CAR, start, start + dt.timedelta(minutes=minutes)) == expected


def test_car_across_midnight_counts_hours_not_days():
    assert fee(CAR, at(2, 23), at(3, 1)) == 50_000


@pytest.mark.parametrize(("text", "expected"), [
    ("29A-123.45", "29A-123.45"), ("29a12345", "29A-123.45"), ("30E12345", "30E-123.45"),
    ("30e-123.45", "30E-123.45"), (" 30E 123 45 ", "30E-123.45"), ("29A-1234", "29A-1234"),
    ("30LD-123.45", "30LD-123.45"),
    ("29-B1 123.45", "29-B1 123.45"), ("29B112345", "29-B1 123.45"), ("29-b1-12345", "29-B1 123.45"),
    ("29 B1 1234", "29-B1 1234"), ("29-AA 123.45", "29-AA 123.45"),
])
def test_plates_have_one_written_form(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("text", ["", "ABC", "29A", "00A-123.45", "29A-123456789", "29A_123.45", "2९A-123.45",
                                  "29A-12", "29-B1 12"])
def test_unreadable_plates_are_named(text):
    with pytest.raises(PlateUnreadable) as caught:
        normalise(text)
    assert caught.value.errors[0].field == "plate"
