"""feedback.places: the ward centres cover the shipped unit directory, and a directory they do not cover gets no
derived ward."""

from __future__ import annotations

from app.identity.units import Unit, UnitDirectory, load_units
from feedback import places


def test_every_ward_and_commune_of_the_shipped_directory_has_one_centre():
    units = load_units()
    wards = {u.code for u in units if u.kind in ("ward", "commune")}
    codes = [c.code for c in places.centres()]
    assert len(codes) == len(set(codes)) and set(codes) == wards and len(wards) == 126
    assert all(places.outside_hanoi(c.latitude, c.longitude) is None and c.area_km2 > 0 for c in places.centres())


def test_a_directory_without_those_codes_derives_nothing():
    own = UnitDirectory({"city": Unit("city", "city", "Thành phố", "City", None),
                         "ward-1": Unit("ward-1", "ward", "Phường 1", "Ward 1", "city")})
    assert places.ward_at(own, 21.0287, 105.8524) is None
    assert places.ward_at(load_units(), 21.0287, 105.8524) == "phuong-hoan-kiem"
    assert places.ward_at(load_units(), 10.77, 106.70) is None  # Ho Chi Minh City
