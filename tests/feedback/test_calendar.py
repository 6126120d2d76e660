"""Working-hour deadlines: Hanoi office hours, lunch, weekends, holidays, make-up Saturdays, the file."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from pathlib import Path

import pytest

from feedback.calendar import CalendarFileError, WorkingCalendar

HANOI = dt.timezone(dt.timedelta(hours=7))
CAL = WorkingCalendar.load()


def hn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=HANOI)


def due(start: dt.datetime, hours: float, calendar: WorkingCalendar = CAL) -> dt.datetime:
    result = calendar.add_working_hours(start, hours)
    assert result.utcoffset() == dt.timedelta(0)
    return result


def test_the_file_covers_2025_to_2027():
    assert (CAL.first_year, CAL.last_year) == (2025, 2027)
    for year in (2025, 2026, 2027):
        for month, day in ((1, 1), (4, 30), (5, 1), (9, 2)):
            assert not CAL.is_working_day(dt.date(year, month, day))
    # Giỗ Tổ Hùng Vương, 10/3 âm lịch
    assert not CAL.is_working_day(dt.date(2025, 4, 7))
    assert not CAL.is_working_day(dt.date(2026, 4, 27))  # 26/4 is a Sunday: taken on Monday
    assert not CAL.is_working_day(dt.date(2027, 4, 16))


def test_friday_evening_report_is_due_monday_at_five():
    assert due(hn(2026, 3, 6, 18), 8) == hn(2026, 3, 9, 17)


def test_four_hours_from_eleven_skip_lunch():
    assert due(hn(2026, 3, 4, 11), 4) == hn(2026, 3, 4, 16)


def test_result_is_utc_whatever_the_input_zone():
    start_utc = dt.datetime(2026, 3, 4, 4, 0, tzinfo=dt.UTC)  # 11:00 in Hanoi
    result = due(start_utc, 4)
    assert result.tzinfo is dt.UTC and result == dt.datetime(2026, 3, 4, 9, 0, tzinfo=dt.UTC)
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert due(dt.datetime(2026, 3, 3, 23, 0, tzinfo=new_york), 4) == hn(2026, 3, 4, 16)


def test_across_a_weekend():
    assert due(hn(2026, 3, 6, 15), 4) == hn(2026, 3, 9, 10)
    assert due(hn(2026, 3, 7, 10), 1) == hn(2026, 3, 9, 9)  # sent on Saturday
    assert CAL.working_hours_between(hn(2026, 3, 6, 15), hn(2026, 3, 9, 10)) == 4


def test_across_tet_2026():
    # Friday 13/2 is the last working day before the 14–22/2 break of Tết Bính Ngọ.
    assert CAL.is_working_day(dt.date(2026, 2, 13))
    assert not any(CAL.is_working_day(dt.date(2026, 2, day)) for day in range(14, 23))
    assert due(hn(2026, 2, 13, 9), 8) == hn(2026, 2, 23, 9)
    assert due(hn(2026, 2, 13, 16), 8) == hn(2026, 2, 23, 16)
    assert CAL.working_hours_between(hn(2026, 2, 13, 17), hn(2026, 2, 23, 8)) == 0


def test_make_up_saturday_counts():
    # 2/1/2026 was swapped for Saturday 10/1/2026.
    assert not CAL.is_working_day(dt.date(2026, 1, 2))
    assert CAL.is_working_day(dt.date(2026, 1, 10))
    assert due(hn(2026, 1, 9, 16), 2) == hn(2026, 1, 10, 9)
    assert due(hn(2025, 12, 31, 16), 2) == hn(2026, 1, 5, 9)
    # 2025: 2/5 off, Saturday 26/4 worked; 2026: 31/8 off, Saturday 22/8 worked.
    assert CAL.is_working_day(dt.date(2025, 4, 26)) and not CAL.is_working_day(dt.date(2025, 5, 2))
    assert due(hn(2025, 4, 25, 17), 8) == hn(2025, 4, 26, 17)
    assert CAL.is_working_day(dt.date(2026, 8, 22)) and not CAL.is_working_day(dt.date(2026, 8, 31))
    assert CAL.working_hours_between(hn(2026, 8, 21, 8), hn(2026, 8, 24, 17)) == 24


def test_ordinary_saturday_and_sunday_do_not_count():
    assert not CAL.is_working_day(dt.date(2026, 3, 7))
    assert not CAL.is_working_day(dt.date(2026, 3, 8))


def test_lunch_break():
    assert due(hn(2026, 3, 4, 12, 30), 1) == hn(2026, 3, 4, 14)
    assert due(hn(2026, 3, 4, 11, 30), 1) == hn(2026, 3, 4, 13, 30)
    assert CAL.working_hours_between(hn(2026, 3, 4, 11), hn(2026, 3, 4, 14)) == 2
    assert CAL.working_hours_between(hn(2026, 3, 4, 12), hn(2026, 3, 4, 13)) == 0


def test_deadline_on_the_end_of_a_session_stays_there():
    assert due(hn(2026, 3, 4, 8), 4) == hn(2026, 3, 4, 12)
    assert due(hn(2026, 3, 4, 11, 30), 0.5) == hn(2026, 3, 4, 12)
    assert due(hn(2026, 3, 4, 8), 8) == hn(2026, 3, 4, 17)
    assert due(hn(2026, 3, 4, 13), 4) == hn(2026, 3, 4, 17)
    assert due(hn(2026, 3, 6, 7), 8) == hn(2026, 3, 6, 17)  # Friday, before opening


def test_start_on_a_boundary():
    assert due(hn(2026, 3, 4, 12), 1) == hn(2026, 3, 4, 14)
    assert due(hn(2026, 3, 4, 17), 1) == hn(2026, 3, 5, 9)
    assert due(hn(2026, 3, 4, 8), 0.25) == hn(2026, 3, 4, 8, 15)


def test_working_hours_between_basics():
    assert CAL.working_hours_between(hn(2026, 3, 6, 18), hn(2026, 3, 9, 17)) == 8
    assert CAL.working_hours_between(hn(2026, 3, 9, 8), hn(2026, 3, 9, 17)) == 8
    assert CAL.working_hours_between(hn(2026, 3, 9, 17), hn(2026, 3, 9, 8)) == 0
    assert CAL.working_hours_between(hn(2026, 3, 9, 9), hn(2026, 3, 9, 9)) == 0
    assert CAL.working_hours_between(hn(2026, 3, 2, 8), hn(2026, 3, 9, 8)) == 40


def test_working_hours_between_inverts_add_working_hours():
    rng = random.Random(20260217)
    span = int((hn(2027, 12, 1) - hn(2025, 1, 1)).total_seconds())
    for _ in range(300):
        start = hn(2025, 1, 1) + dt.timedelta(seconds=rng.randrange(span))
        hours = rng.choice([0.25, 1, 4, 8, 16, 40, 80, round(rng.uniform(0.01, 120), 4)])
        end = due(start, hours)
        assert end > start
        assert CAL.working_hours_between(start, end) == pytest.approx(hours, abs=1e-6)
        # A deadline never moves earlier when more hours are allowed.
        assert due(start, hours + 0.5) > end
        # And back: an end inside working time is reached by the hours counted up to it.
        inside = due(start, rng.uniform(0.01, 40))
        elapsed = CAL.working_hours_between(start, inside)
        assert abs(due(start, elapsed) - inside) <= dt.timedelta(microseconds=1)


def test_eighty_hours_step_by_day_not_by_minute():
    class Counting(WorkingCalendar):
        calls = 0

        def is_working_day(self, day: dt.date) -> bool:
            Counting.calls += 1
            return super().is_working_day(day)

    counting = Counting(CAL.holidays, CAL.workdays, CAL.first_year, CAL.last_year)
    # 7 h on 13/2, Tết, 40 h the week of 23/2, 32 h Mon-Thu 2-5/3, the last hour on Friday 6/3.
    assert counting.add_working_hours(hn(2026, 2, 13, 9), 80) == hn(2026, 3, 6, 9)
    assert Counting.calls < 40


def test_naive_datetimes_are_rejected():
    naive = dt.datetime(2026, 3, 4, 9)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add_working_hours(naive, 4)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_hours_between(naive, hn(2026, 3, 5))
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_hours_between(hn(2026, 3, 3), naive)


@pytest.mark.parametrize("hours", [0, -1, math.nan, math.inf])
def test_hours_must_be_positive(hours: float):
    with pytest.raises(ValueError, match="hours"):
        CAL.add_working_hours(hn(2026, 3, 4, 9), hours)


def test_is_working_day_refuses_a_datetime():
    with pytest.raises(TypeError):
        CAL.is_working_day(hn(2026, 3, 4, 9))


HEADER = "date,kind,name_vi,name_en\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "holidays.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("2030-01-01,holiday,Tết Dương lịch,New Year\n2030-13-01,holiday,Sai,Bad\n",
     r"holidays.csv:3: bad date '2030-13-01'"),
    ("2030-01-01,holiday,Tết Dương lịch,New Year\n20300430,holiday,Sai,Bad\n", r"holidays.csv:3: bad date"),
    ("2030-01-01,vacation,Tết Dương lịch,New Year\n", r"holidays.csv:2: unknown kind 'vacation'"),
    ("2030-01-01,holiday,Tết Dương lịch,New Year\n2030-04-30,holiday,30/4,Reunification\n"
     "2030-01-01,holiday,Lặp,Duplicate\n", r"holidays.csv:4: duplicate date 2030-01-01 \(first on line 2\)"),
    ("2030-01-01,holiday,Tết Dương lịch,New Year\n2030-01-02,workday,Làm bù,Make-up\n",
     r"holidays.csv:3: workday 2030-01-02 is not a Saturday or Sunday"),
    ("2030-01-01,holiday,Tết Dương lịch\n", r"holidays.csv:2: expected 4 columns, got 3"),
    ("2030-01-01,holiday,,New Year\n", r"holidays.csv:2: name_vi is empty"),
    ("2030-01-01,holiday,Tết Dương lịch,New Year\n2032-01-01,holiday,Tết Dương lịch,New Year\n",
     r"holidays.csv: no rows for 2031 between 2030 and 2032"),
    ("", r"holidays.csv: no rows"),
])
def test_malformed_file_names_the_line(tmp_path: Path, body: str, message: str):
    with pytest.raises(CalendarFileError, match=message) as info:
        WorkingCalendar.load(write(tmp_path, body))
    assert isinstance(info.value, ValueError)


def test_bad_header_is_line_one(tmp_path: Path):
    path = tmp_path / "holidays.csv"
    path.write_text("ngay,loai\n2030-01-01,holiday\n", encoding="utf-8")
    with pytest.raises(CalendarFileError, match=r"holidays.csv:1: header") as info:
        WorkingCalendar.load(path)
    assert info.value.line == 1


def test_small_file_with_blank_lines_and_bom(tmp_path: Path):
    path = tmp_path / "holidays.csv"
    path.write_text("\ufeff" + HEADER + "2030-01-01,holiday,Tết Dương lịch,New Year\n\n"
                    "2030-01-05,workday,Làm bù,Make-up\n", encoding="utf-8")
    calendar = WorkingCalendar.load(path)
    assert (calendar.first_year, calendar.last_year) == (2030, 2030)
    assert not calendar.is_working_day(dt.date(2030, 1, 1))
    assert calendar.is_working_day(dt.date(2030, 1, 5))


def test_fallback_beyond_the_covered_years(caplog: pytest.LogCaptureFixture):
    calendar = WorkingCalendar.load()
    with caplog.at_level(logging.WARNING, logger="ihanoi.feedback"):
        assert calendar.is_working_day(dt.date(2028, 9, 5))  # ordinary Tuesday
        assert not calendar.is_working_day(dt.date(2028, 9, 1))  # fixed-date 1/9, a Friday
        assert not calendar.is_working_day(dt.date(2028, 9, 2))  # Saturday
        assert not calendar.is_working_day(dt.date(2028, 9, 4))  # 2/9 fell on Saturday: next Monday off
        assert not calendar.is_working_day(dt.date(2028, 5, 1))
        # 1/1/2028 is a Saturday, so Monday 3/1 is off; the deadline runs into Tuesday.
        assert due(hn(2027, 12, 31, 16), 2, calendar) == hn(2028, 1, 4, 9)
        # Lunar holidays are not known there: Tết Mậu Thân (26/1/2028) counts as working time.
        assert calendar.is_working_day(dt.date(2028, 1, 26))
        assert not calendar.is_working_day(dt.date(2024, 1, 1))
    warnings = [r for r in caplog.records if r.name == "ihanoi.feedback" and r.levelno == logging.WARNING]
    assert [r.args[0] for r in warnings] == [2028, 2024]  # one warning per year, not per call
    assert "outside holidays.csv" in warnings[0].getMessage()


def test_covered_years_do_not_warn(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="ihanoi.feedback"):
        due(hn(2027, 12, 20, 9), 16)
    assert not [r for r in caplog.records if r.name == "ihanoi.feedback"]
