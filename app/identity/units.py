"""The directory of Hanoi's organisational units: the city, its departments, wards and communes.

The shipped `data/units.csv` reflects the two-level local government in force since 1 July 2025
(Resolution 1656/NQ-UBTVQH15: no more districts; 126 commune-level units = 51 wards + 75 communes,
all directly under the city) and the city departments after the 2025 merger of departments.

A deployment may point at its own file with the same format: UTF-8 CSV, header
`code,kind,name_vi,name_en,parent_code` (any column order), one row per unit, `kind` one of
city / department / ward / commune, `code` a lowercase slug (`^[a-z0-9][a-z0-9-]{1,62}$`), and
`parent_code` empty for exactly one row (the root) and otherwise the code of another row, which may
come later in the file. Blank lines are ignored. Every problem is reported as `UnitsFileError`
with its line number. No database is involved: the directory is read once into memory.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "COLUMNS",
    "DEFAULT_PATH",
    "KINDS",
    "Unit",
    "UnitDirectory",
    "UnitsFileError",
    "load_units",
]

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "units.csv"
COLUMNS: tuple[str, ...] = ("code", "kind", "name_vi", "name_en", "parent_code")
KINDS: frozenset[str] = frozenset({"city", "department", "ward", "commune"})
CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class UnitsFileError(ValueError):
    """The units file is malformed; `line` is the 1-based line of the offending row (None if none)."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Unit:
    code: str
    kind: str
    name_vi: str
    name_en: str
    parent_code: str | None


@dataclass
class UnitDirectory:
    units: dict[str, Unit]
    _children: dict[str, list[Unit]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._children = {code: [] for code in self.units}
        for unit in self.units.values():
            if unit.parent_code is not None and unit.parent_code in self._children:
                self._children[unit.parent_code].append(unit)

    def get(self, code: str) -> Unit | None:
        return self.units.get(code)

    def children(self, code: str) -> list[Unit]:
        """Direct children in file order; empty for a leaf or an unknown code."""
        return list(self._children.get(code, ()))

    def ancestors(self, code: str) -> list[Unit]:
        """Parent, grandparent, ... up to and including the root; empty for the root or an unknown code."""
        result: list[Unit] = []
        unit = self.units.get(code)
        seen = {code}
        while unit is not None and unit.parent_code is not None and unit.parent_code not in seen:
            seen.add(unit.parent_code)
            unit = self.units.get(unit.parent_code)
            if unit is not None:
                result.append(unit)
        return result

    def contains(self, ancestor_code: str, code: str) -> bool:
        """True if `code` is a known unit and is `ancestor_code` itself or lies anywhere below it."""
        if code not in self.units:
            return False
        return code == ancestor_code or any(u.code == ancestor_code for u in self.ancestors(code))

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units.values())


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value.strip())


@lru_cache(maxsize=4)
def units_file_directory(path: str | None) -> UnitDirectory:
    """The directory of a configured units file (None: the shipped one), read once per process (worker jobs)."""
    return load_units(Path(path) if path else None)


def load_units(path: Path | None = None) -> UnitDirectory:
    """Read and validate a units CSV (the packaged `data/units.csv` by default)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    units: dict[str, Unit] = {}
    lines: dict[str, int] = {}
    roots: list[str] = []

    # utf-8-sig: tolerate the byte-order mark spreadsheet programs put in front of CSV exports.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise UnitsFileError(path, 1, "the file is empty: expected the header " + ",".join(COLUMNS))
            names = [h.strip() for h in header]
            missing = [c for c in COLUMNS if c not in names]
            extra = [h for h in names if h not in COLUMNS]
            duplicated = sorted({h for h in names if names.count(h) > 1})
            if missing or extra or duplicated:
                parts = []
                if missing:
                    parts.append("missing columns " + ", ".join(missing))
                if extra:
                    parts.append("unexpected columns " + ", ".join(repr(h) for h in extra))
                if duplicated:
                    parts.append("duplicated columns " + ", ".join(duplicated))
                raise UnitsFileError(path, reader.line_num, "; ".join(parts))
            index = {name: i for i, name in enumerate(names)}

            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(COLUMNS):
                    raise UnitsFileError(path, line, f"expected {len(COLUMNS)} columns, found {len(row)}")
                code = row[index["code"]].strip()
                kind = row[index["kind"]].strip()
                name_vi = _nfc(row[index["name_vi"]])
                name_en = _nfc(row[index["name_en"]])
                parent = row[index["parent_code"]].strip() or None

                if not CODE_RE.match(code):
                    raise UnitsFileError(path, line, f"code {code!r} must match {CODE_RE.pattern}")
                if code in units:
                    raise UnitsFileError(path, line, f"duplicate code {code!r} (first on line {lines[code]})")
                if kind not in KINDS:
                    raise UnitsFileError(path, line, f"kind {kind!r} must be one of {', '.join(sorted(KINDS))}")
                if not name_vi or not name_en:
                    raise UnitsFileError(path, line, "name_vi and name_en must not be empty")
                if parent == code:
                    raise UnitsFileError(path, line, f"unit {code!r} is its own parent")
                if parent is None:
                    roots.append(code)
                units[code] = Unit(code=code, kind=kind, name_vi=name_vi, name_en=name_en, parent_code=parent)
                lines[code] = line
        except csv.Error as exc:
            raise UnitsFileError(path, reader.line_num, f"malformed CSV: {exc}") from None

    # Parents may come after their children, so references are checked once everything is read.
    for code, unit in units.items():
        if unit.parent_code is not None and unit.parent_code not in units:
            raise UnitsFileError(path, lines[code], f"unknown parent_code {unit.parent_code!r} of {code!r}")

    if not roots:
        raise UnitsFileError(path, None, "no root: exactly one row must have an empty parent_code")
    if len(roots) > 1:
        raise UnitsFileError(
            path, lines[roots[1]], f"more than one root (empty parent_code): {roots[0]!r} and {roots[1]!r}"
        )

    # Every unit must reach a root by following parents; walking into a unit already on the
    # current path is a cycle. Units proven to reach the root are remembered to keep this linear.
    reaches_root: set[str] = set()
    for start in units:
        path_codes: list[str] = []
        on_path: set[str] = set()
        current: str | None = start
        while current is not None and current not in reaches_root:
            if current in on_path:
                cycle = path_codes[path_codes.index(current) :] + [current]
                raise UnitsFileError(path, lines[current], "cycle in parent_code: " + " -> ".join(cycle))
            on_path.add(current)
            path_codes.append(current)
            current = units[current].parent_code
        reaches_root.update(path_codes)

    return UnitDirectory(units)
