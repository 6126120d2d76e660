"""Validation of the Vietnamese 12-digit personal identification number (số định danh cá nhân).

The same number is printed on the chip-based citizen identity card (CCCD / thẻ căn cước) and used by
VNeID. Its structure is fixed by Circular 59/2021/TT-BCA, Article 4 (carrying over Circular
07/2016/TT-BCA, Article 7), guiding the Law on Citizen Identification and Decree 137/2015/NĐ-CP:

* digits 1-3: code of the province / centrally-run city where the birth was registered (the 63
  codes of the appendix of those circulars, which are the national statistical province codes
  padded to three digits, e.g. 001 Hà Nội, 079 Hồ Chí Minh);
* digit 4: century of birth and sex: 20th century (1900-1999) male 0 / female 1, 21st century
  (2000-2099) 2 / 3, 22nd century 4 / 5, 23rd century 6 / 7, 24th century 8 / 9;
* digits 5-6: last two digits of the year of birth;
* digits 7-12: a random sequence.

There is no check digit, so only the structure can be validated here, never that a number was
actually issued (that is the job of the national population database / VNeID).

Numbers already issued never change. The 2025 merger of provinces (34 provinces from 1 July 2025)
does not invalidate any code below; the merged provinces' codes are, as far as we know, taken from
this same list, so the 63 legacy codes remain the set to accept.

The number is personal data (Decree 13/2023/NĐ-CP): this module never logs it, error messages never
contain it, and `PersonalId`'s repr is masked. Use `mask_personal_id` for anything shown or logged.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PROVINCES",
    "PersonalId",
    "PersonalIdError",
    "mask_personal_id",
    "parse_personal_id",
]

Sex = Literal["male", "female"]

# Appendix of Circular 59/2021/TT-BCA (and 07/2016/TT-BCA): province code of birth registration.
PROVINCES: dict[str, str] = {
    "001": "Hà Nội",
    "002": "Hà Giang",
    "004": "Cao Bằng",
    "006": "Bắc Kạn",
    "008": "Tuyên Quang",
    "010": "Lào Cai",
    "011": "Điện Biên",
    "012": "Lai Châu",
    "014": "Sơn La",
    "015": "Yên Bái",
    "017": "Hòa Bình",
    "019": "Thái Nguyên",
    "020": "Lạng Sơn",
    "022": "Quảng Ninh",
    "024": "Bắc Giang",
    "025": "Phú Thọ",
    "026": "Vĩnh Phúc",
    "027": "Bắc Ninh",
    "030": "Hải Dương",
    "031": "Hải Phòng",
    "033": "Hưng Yên",
    "034": "Thái Bình",
    "035": "Hà Nam",
    "036": "Nam Định",
    "037": "Ninh Bình",
    "038": "Thanh Hóa",
    "040": "Nghệ An",
    "042": "Hà Tĩnh",
    "044": "Quảng Bình",
    "045": "Quảng Trị",
    "046": "Thừa Thiên Huế",
    "048": "Đà Nẵng",
    "049": "Quảng Nam",
    "051": "Quảng Ngãi",
    "052": "Bình Định",
    "054": "Phú Yên",
    "056": "Khánh Hòa",
    "058": "Ninh Thuận",
    "060": "Bình Thuận",
    "062": "Kon Tum",
    "064": "Gia Lai",
    "066": "Đắk Lắk",
    "067": "Đắk Nông",
    "068": "Lâm Đồng",
    "070": "Bình Phước",
    "072": "Tây Ninh",
    "074": "Bình Dương",
    "075": "Đồng Nai",
    "077": "Bà Rịa - Vũng Tàu",
    "079": "Hồ Chí Minh",
    "080": "Long An",
    "082": "Tiền Giang",
    "083": "Bến Tre",
    "084": "Trà Vinh",
    "086": "Vĩnh Long",
    "087": "Đồng Tháp",
    "089": "An Giang",
    "091": "Kiên Giang",
    "092": "Cần Thơ",
    "093": "Hậu Giang",
    "094": "Sóc Trăng",
    "095": "Bạc Liêu",
    "096": "Cà Mau",
}

LENGTH = 12
_FIRST_CENTURY = 1900  # digit 4 in {0, 1}; each further pair of digits adds a century, up to 8/9 -> 2300-2399


class PersonalIdError(ValueError):
    """The number (or its agreement with the birth date / sex given) is not valid.

    `reason` is a short English sentence fit for an API field error; it never contains the number.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, repr=False)
class PersonalId:
    number: str
    province_code: str
    province: str
    sex: Sex
    birth_year: int

    def __repr__(self) -> str:
        return (
            f"PersonalId(number={mask_personal_id(self.number)!r}, province_code={self.province_code!r}, "
            f"province={self.province!r}, sex={self.sex!r}, birth_year={self.birth_year!r})"
        )


def _century_digit(year: int, sex: Sex) -> int | None:
    """The digit 4 that a person of this birth year and sex must have, or None outside 1900-2399."""
    century = (year - _FIRST_CENTURY) // 100
    if not 0 <= century <= 4:
        return None
    return 2 * century + (1 if sex == "female" else 0)


def parse_personal_id(
    number: str,
    *,
    birth_date: datetime.date | None = None,
    sex: str | None = None,
) -> PersonalId:
    """Validate and decode a personal identification number.

    Only surrounding whitespace is stripped; anything else that is not exactly twelve ASCII digits
    is refused (inner spaces, dashes, letters, full-width or other non-ASCII digits).
    When `birth_date` is given its year must equal the year decoded from digits 4-6; when `sex`
    ("male" or "female") is given it must agree with digit 4. A `sex` other than those two values
    is a caller error and raises a plain ValueError.
    Raises PersonalIdError with a `reason` otherwise.
    """
    if sex is not None and sex not in ("male", "female"):
        raise ValueError("sex must be 'male' or 'female'")
    if not isinstance(number, str):
        raise PersonalIdError("must be a string of 12 digits")
    value = number.strip()
    if not value:
        raise PersonalIdError("must be exactly 12 digits")
    if not (value.isascii() and value.isdigit()):
        raise PersonalIdError("must contain only the digits 0-9")
    if len(value) != LENGTH:
        raise PersonalIdError("must be exactly 12 digits")

    province_code = value[:3]
    province = PROVINCES.get(province_code)
    if province is None:
        raise PersonalIdError(f"unknown province code {province_code}")

    digit = int(value[3])
    decoded_sex: Sex = "female" if digit % 2 else "male"
    yy = int(value[4:6])
    birth_year = _FIRST_CENTURY + 100 * (digit // 2) + yy

    if birth_date is not None:
        expected_digit = _century_digit(birth_date.year, decoded_sex)
        if expected_digit is None or expected_digit != digit:
            raise PersonalIdError(f"century/sex digit {digit} does not match birth year {birth_date.year}")
        if birth_date.year % 100 != yy:
            raise PersonalIdError(f"birth year digits {value[4:6]} do not match birth year {birth_date.year}")

    if sex is not None and sex != decoded_sex:
        raise PersonalIdError(f"sex digit says {decoded_sex} but the sex given is {sex}")

    return PersonalId(
        number=value,
        province_code=province_code,
        province=province,
        sex=decoded_sex,
        birth_year=birth_year,
    )


def mask_personal_id(number: str) -> str:
    """Show only the first 3 and last 3 digits: "001099012345" -> "001******345".

    Anything that is not a well-formed 12-digit number is masked entirely ("************"), so a
    mistyped value never leaks into logs or screens either.
    """
    value = number.strip() if isinstance(number, str) else ""
    if len(value) != LENGTH or not (value.isascii() and value.isdigit()):
        return "*" * LENGTH
    return f"{value[:3]}{'*' * (LENGTH - 6)}{value[-3:]}"
