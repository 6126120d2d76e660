"""Working-time arithmetic for citizen-feedback deadlines (receive within 8 working hours, etc.).

Working time is the Vietnamese public sector's: Monday to Friday, 08:00-12:00 and 13:00-17:00 in
Asia/Ho_Chi_Minh, minus public holidays (ngày nghỉ lễ, Tết), plus the official make-up Saturdays
(ngày làm bù) traded for bridge days off. The days that differ from the weekly rule come from
`feedback/data/holidays.csv` (columns `date,kind,name_vi,name_en`; kind `holiday` or `workday`).

About the data (details and sources in `feedback/data/HOLIDAYS.md`):
- 2025 and 2026 follow the officially announced schedules for civil servants (Government Office
  letters 8726/VPCP-KGVX of 26/11/2024 and 12729/VPCP-KGVX of 25/12/2025, Ministry of Home Affairs
  notice 9441/TB-BNV of 16/10/2025), plus the statutory compensation rule of Labour Code art. 111.
- 2027 was not announced when the file was written: its rows are the statutory days of Labour Code
  art. 112 on the computed lunar dates, with Tết and the day next to 2/9 guessed from precedent
  (their names say "ước tính / estimate"). Replace them when the Government announces 2027.
- Outside the covered years only the weekly rule and the fixed-date holidays (1/1, 30/4, 1/5, 1/9,
  2/9; one on a weekend moves to the next weekday, art. 111) apply, with one warning a year on the
  "ihanoi.feedback" logger: Tết and Giỗ Tổ then count as working time, so deadlines there come out
  early. Extend the file every year.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

log = logging.getLogger("ihanoi.feedback")

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "holidays.csv"
HEADER = ["date", "kind", "name_vi", "name_en"]
KINDS = ("holiday", "workday")

# Asia/Ho_Chi_Minh has been UTC+07:00 without DST since 1975; a fixed offset gives the same answers
# without depending on the tz database, which slim container images may not ship.
LOCAL_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")
# Morning and afternoon sessions; 12:00-13:00 is the lunch break.
PERIODS = ((dt.time(8), dt.time(12)), (dt.time(13), dt.time(17)))
# Used outside the covered years: the statutory holidays whose solar date never moves (1/9 stands for
# the second National Day, which the Government may put on 3/9 instead).
FIXED_HOLIDAYS = frozenset({(1, 1), (4, 30), (5, 1), (9, 1), (9, 2)})


class CalendarFileError(ValueError):
    """The holiday file is malformed; the message names the file and line, like `holidays.csv:12: bad date`."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path.name}:{line}" if line is not None else path.name
        super().__init__(f"{where}: {message}")


def _require_aware(value: dt.datetime, name: str) -> None:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time is ambiguous (server UTC or Hanoi?), and a 7-hour error moves deadlines by a day.
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


@dataclass
class WorkingCalendar:
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    first_year: int
    last_year: int
    _warned_years: set[int] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path | None = None) -> WorkingCalendar:
        path = Path(path) if path is not None else DEFAULT_PATH
        try:
            # utf-8-sig: a file saved by a spreadsheet may start with a BOM.
            with path.open(encoding="utf-8-sig", newline="") as handle:
                rows = _read_rows(path, handle)
        except UnicodeDecodeError as exc:
            raise CalendarFileError(path, None, f"not UTF-8 ({exc.reason})") from None
        if not rows:
            raise CalendarFileError(path, None, "no rows")

        holidays: set[dt.date] = set()
        workdays: set[dt.date] = set()
        seen: dict[dt.date, int] = {}
        for line, day, kind in rows:
            if day in seen:
                raise CalendarFileError(path, line, f"duplicate date {day.isoformat()} (first on line {seen[day]})")
            seen[day] = line
            if kind == "workday":
                if day.weekday() < 5:
                    raise CalendarFileError(path, line, f"workday {day.isoformat()} is not a Saturday or Sunday")
                workdays.add(day)
            else:
                holidays.add(day)

        years = {day.year for day in seen}
        first, last = min(years), max(years)
        # Every year has at least 1/1, so a year without rows inside the range is a forgotten year,
        # which would silently count its Tết as working days.
        missing = sorted(set(range(first, last + 1)) - years)
        if missing:
            gap = ", ".join(map(str, missing))
            raise CalendarFileError(path, None, f"no rows for {gap} between {first} and {last}")
        return cls(frozenset(holidays), frozenset(workdays), first, last)

    def is_working_day(self, day: dt.date) -> bool:
        if isinstance(day, dt.datetime):
            # The calendar day of an instant depends on its zone: convert to Hanoi time first.
            raise TypeError("is_working_day takes a date; use value.astimezone(LOCAL_TZ).date() for a datetime")
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        covered = self.first_year <= day.year <= self.last_year
        if not covered:
            self._warn_uncovered(day.year)
        if day.weekday() >= 5:
            return False
        return covered or day not in _fallback_holidays(day.year)

    def add_working_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        _require_aware(start, "start")
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not math.isfinite(hours) or hours <= 0:
            raise ValueError(f"hours must be a positive number, got {hours!r}")
        remaining = dt.timedelta(hours=hours)
        current = start.astimezone(LOCAL_TZ)
        day = current.date()
        # One step per calendar day, at most two sessions each: 80 hours is about two weeks of steps.
        while True:
            if self.is_working_day(day):
                for begin, end in self._periods(day):
                    if current >= end:
                        continue
                    begin = max(begin, current)
                    available = end - begin
                    # `<=` so that a deadline landing on 12:00 or 17:00 stays there, not at the next opening.
                    if remaining <= available:
                        return (begin + remaining).astimezone(dt.UTC)
                    remaining -= available
            day += dt.timedelta(days=1)

    def working_hours_between(self, start: dt.datetime, end: dt.datetime) -> float:
        _require_aware(start, "start")
        _require_aware(end, "end")
        if end <= start:
            return 0.0
        start, end = start.astimezone(LOCAL_TZ), end.astimezone(LOCAL_TZ)
        total = dt.timedelta()
        day = start.date()
        while day <= end.date():
            if self.is_working_day(day):
                for begin, finish in self._periods(day):
                    overlap = min(finish, end) - max(begin, start)
                    if overlap > dt.timedelta():
                        total += overlap
            day += dt.timedelta(days=1)
        return total / dt.timedelta(hours=1)

    @staticmethod
    def _periods(day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        return [(dt.datetime.combine(day, begin, LOCAL_TZ), dt.datetime.combine(day, end, LOCAL_TZ))
                for begin, end in PERIODS]

    def _warn_uncovered(self, year: int) -> None:
        if year in self._warned_years:
            return
        self._warned_years.add(year)
        log.warning("working calendar: %d is outside holidays.csv (%d-%d); counting only weekends and the "
                    "fixed-date holidays, so Tết and Giỗ Tổ count as working time", year, self.first_year,
                    self.last_year)


@functools.cache
def _fallback_holidays(year: int) -> frozenset[dt.date]:
    """The fixed-date holidays of `year`, each falling on a weekend moved to the next free weekday."""
    days = {dt.date(year, month, day) for month, day in FIXED_HOLIDAYS}
    # Labour Code art. 111(3): a holiday on the weekly rest day is taken on the next working day.
    for day in sorted(days):
        if day.weekday() >= 5:
            substitute = day + dt.timedelta(days=1)
            while substitute.weekday() >= 5 or substitute in days:
                substitute += dt.timedelta(days=1)
            days.add(substitute)
    return frozenset(days)


def _read_rows(path: Path, handle: TextIO) -> list[tuple[int, dt.date, str]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise CalendarFileError(path, 1, "empty file")
    if [cell.strip() for cell in header] != HEADER:
        raise CalendarFileError(path, 1, f"header must be {','.join(HEADER)}, got {','.join(header)}")
    rows = []
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(HEADER):
            raise CalendarFileError(path, line, f"expected {len(HEADER)} columns, got {len(cells)}")
        raw_date, kind, name_vi, _name_en = (cell.strip() for cell in cells)
        try:
            day = dt.date.fromisoformat(raw_date)
        except ValueError:
            day = None
        # fromisoformat also takes 20250101 and the like; the file keeps one spelling.
        if day is None or day.isoformat() != raw_date:
            raise CalendarFileError(path, line, f"bad date {raw_date!r} (want YYYY-MM-DD)")
        if kind not in KINDS:
            raise CalendarFileError(path, line, f"unknown kind {kind!r} (want holiday or workday)")
        if not name_vi:
            raise CalendarFileError(path, line, "name_vi is empty")
        rows.append((line, day, kind))
    return rows
