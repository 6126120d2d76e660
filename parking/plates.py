"""Vietnamese number plates in one written form each, so a plate read by a camera, typed by an attendant or
saved in the app is the same key.

- cars: `29A-123.45` (province, series of one or two letters, five digits) and the older `29A-1234`;
- motorbikes: `29-B1 123.45` (province, series of a letter and a digit or two letters, four or five digits).

Separators are optional on input. Without them a car and an old motorbike plate can read alike (`29B11234`
is `29B-112.34` or `29-B1 1234`); a separator after the province (`29-B1...`, `29 B1...`) says motorbike,
otherwise it is read as the car plate.
"""

from __future__ import annotations

import re
import unicodedata

from app.errors import DomainError, FieldError


class PlateUnreadable(DomainError):
    slug = "plate-unreadable"


_ALLOWED = re.compile(r"^[0-9A-Z .\-]{6,16}$")
_COMPACT = re.compile(r"^(\d{2})([A-Z]{1,2})(\d{4,6})$")
_PROVINCE_SEPARATED = re.compile(r"^\d{2}\s*[-\s]")


def _refuse(text: str, field: str) -> PlateUnreadable:
    message = "not a Vietnamese plate such as 29A-123.45 or 29-B1 123.45"
    return PlateUnreadable(f"{text!r} is {message}", errors=[FieldError(field=field, message=message, source="body")])


def _number(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:]}" if len(digits) == 5 else digits


def normalise(text: object, field: str = "plate") -> str:
    """The plate's one written form; `PlateUnreadable` (422, naming `field`) when it is not a plate."""
    raw = unicodedata.normalize("NFC", str(text or "")).upper().strip()
    if not _ALLOWED.match(raw):
        raise _refuse(raw[:20], field)
    compact = re.sub(r"[ .\-]", "", raw)
    match = _COMPACT.match(compact)
    if not match or not 11 <= int(match.group(1)) <= 99:
        raise _refuse(raw, field)
    province, letters, digits = match.groups()
    motorbike = _PROVINCE_SEPARATED.match(raw) is not None or len(digits) == 6
    if motorbike:
        if len(letters) == 1:  # series of a letter and a digit: B1
            if len(digits) < 5:
                raise _refuse(raw, field)
            letters, digits = letters + digits[0], digits[1:]
        if len(digits) not in (4, 5):
            raise _refuse(raw, field)
        return f"{province}-{letters} {_number(digits)}"
    if len(digits) not in (4, 5):
        raise _refuse(raw, field)
    return f"{province}{letters}-{_number(digits)}"
