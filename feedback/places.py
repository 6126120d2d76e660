"""Where a place is: inside Hà Nội or not, and which ward or commune it is in.

The unit directory (app/identity/units.py) has no geometry and this project has no ward boundaries (no
PostGIS), so a ward is derived from `data/ward_centres.csv`: each ward's centre point and area (see
data/WARD_CENTRES.md for the source and the measured accuracy). The ward given is the one whose centre
is nearest measured in that ward's own size, distance ÷ √area, so a place on the edge of a large rural
commune is not handed to the small ward whose centre happens to be closer. It is an approximation: a
client that knows the ward sends it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.identity.units import UnitDirectory

# Hanoi's administrative extent with a small margin (Ba Vì in the west to Gia Lâm in the east).
HANOI_LAT = (20.53, 21.42)
HANOI_LNG = (105.28, 106.03)
CENTRES = Path(__file__).parent / "data" / "ward_centres.csv"
# Farther than this (in units of the ward's √area) is no ward of ours: every known point of a ward lies
# within 0.8 (data/WARD_CENTRES.md); past 1.0 the place is most likely in a neighbouring province.
MAX_REACH = 1.0
_EARTH_KM = 6371.0


@dataclass(frozen=True)
class Centre:
    code: str
    latitude: float
    longitude: float
    area_km2: float


def outside_hanoi(latitude: float, longitude: float) -> str | None:
    """The coordinate that puts the place outside Hanoi ("latitude" or "longitude"), or None when inside."""
    if not HANOI_LAT[0] <= latitude <= HANOI_LAT[1]:
        return "latitude"
    if not HANOI_LNG[0] <= longitude <= HANOI_LNG[1]:
        return "longitude"
    return None


@lru_cache(maxsize=1)
def centres() -> tuple[Centre, ...]:
    with CENTRES.open(encoding="utf-8", newline="") as f:
        return tuple(Centre(row["code"], float(row["latitude"]), float(row["longitude"]), float(row["area_km2"]))
                     for row in csv.DictReader(f))


def _km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Equirectangular distance: exact enough within a city."""
    mean = math.radians((lat1 + lat2) / 2)
    return _EARTH_KM * math.hypot(math.radians(lng2 - lng1) * math.cos(mean), math.radians(lat2 - lat1))


def ward_at(units: UnitDirectory, latitude: float, longitude: float) -> str | None:
    """The code of the ward or commune of this place, or None when it cannot be told: outside Hanoi, or no
    known centre near enough (a deployment's own units file whose codes have no centre gets None too)."""
    if outside_hanoi(latitude, longitude) is not None:
        return None
    best, reach = None, MAX_REACH
    for centre in centres():
        unit = units.get(centre.code)
        if unit is None or unit.kind not in ("ward", "commune"):
            continue
        scaled = _km(latitude, longitude, centre.latitude, centre.longitude) / math.sqrt(centre.area_km2)
        if scaled <= reach:
            best, reach = centre.code, scaled
    return best
