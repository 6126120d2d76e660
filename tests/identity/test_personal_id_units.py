"""Personal identification number parsing/masking and the Hanoi units directory."""

from __future__ import annotations

import datetime
import unicodedata
from pathlib import Path

import pytest

from app.identity.personal_id import PROVINCES, PersonalId, PersonalIdError, mask_personal_id, parse_personal_id
from app.identity.units import DEFAULT_PATH, Unit, UnitsFileError, load_units

# --- personal identification number -------------------------------------------------------------


def test_provinces_are_the_63_legacy_codes() -> None:
    assert len(PROVINCES) == 63
    assert all(len(code) == 3 and code.isdigit() for code in PROVINCES)
    assert PROVINCES["001"] == "Hà Nội"
    assert PROVINCES["079"] == "Hồ Chí Minh"
    assert PROVINCES["096"] == "Cà Mau"
    assert all(unicodedata.is_normalized("NFC", name) for name in PROVINCES.values())


def test_valid_male_born_1999_in_hanoi() -> None:
    pid = parse_personal_id("001099012345", birth_date=datetime.date(1999, 5, 17), sex="male")
    assert pid == PersonalId(number="001099012345", province_code="001", province="Hà Nội", sex="male", birth_year=1999)


def test_valid_female_born_2003_in_hcmc() -> None:
    pid = parse_personal_id("079303001234", birth_date=datetime.date(2003, 1, 2), sex="female")
    assert (pid.province_code, pid.province, pid.sex, pid.birth_year) == ("079", "Hồ Chí Minh", "female", 2003)


def test_valid_without_birth_date_or_sex_and_surrounding_whitespace_stripped() -> None:
    pid = parse_personal_id("  001190012345\n")
    assert pid.number == "001190012345"
    assert (pid.sex, pid.birth_year) == ("female", 1990)


@pytest.mark.parametrize(
    ("digit", "sex", "year"),
    [
        ("0", "male", 1900),
        ("1", "female", 1900),
        ("2", "male", 2000),
        ("3", "female", 2000),
        ("4", "male", 2100),
        ("5", "female", 2100),
        ("6", "male", 2200),
        ("7", "female", 2200),
        ("8", "male", 2300),
        ("9", "female", 2300),
    ],
)
def test_century_and_sex_digit(digit: str, sex: str, year: int) -> None:
    pid = parse_personal_id(f"001{digit}00123456")
    assert (pid.sex, pid.birth_year) == (sex, year)
    assert parse_personal_id(f"001{digit}00123456", birth_date=datetime.date(year, 12, 31), sex=sex) == pid


def test_repr_does_not_show_the_number() -> None:
    pid = parse_personal_id("001099012345")
    assert "001099012345" not in repr(pid)
    assert "001******345" in repr(pid)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("00109901234", "must be exactly 12 digits"),
        ("0010990123456", "must be exactly 12 digits"),
        ("", "must be exactly 12 digits"),
        ("   ", "must be exactly 12 digits"),
        ("00109901234A", "must contain only the digits 0-9"),
        ("001099 012345", "must contain only the digits 0-9"),
        ("001 099012345", "must contain only the digits 0-9"),
        ("001-099-012345", "must contain only the digits 0-9"),
        ("００１０９９０１２３４５", "must contain only the digits 0-9"),
        ("٠٠١٠٩٩٠١٢٣٤٥", "must contain only the digits 0-9"),
        ("099099012345", "unknown province code 099"),
        ("000099012345", "unknown province code 000"),
        ("003099012345", "unknown province code 003"),
    ],
)
def test_refused_numbers(number: str, reason: str) -> None:
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id(number)
    assert info.value.reason == reason
    assert str(info.value) == reason
    assert isinstance(info.value, ValueError)


def test_century_digit_mismatch() -> None:
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id("001290012345", birth_date=datetime.date(1990, 3, 4))
    assert info.value.reason == "century/sex digit 2 does not match birth year 1990"


def test_century_digit_mismatch_for_year_out_of_range() -> None:
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id("001099012345", birth_date=datetime.date(1899, 3, 4))
    assert info.value.reason == "century/sex digit 0 does not match birth year 1899"


def test_year_digits_mismatch() -> None:
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id("001091012345", birth_date=datetime.date(1990, 3, 4))
    assert info.value.reason == "birth year digits 91 do not match birth year 1990"


def test_sex_mismatch() -> None:
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id("001190012345", sex="male")
    assert info.value.reason == "sex digit says female but the sex given is male"
    with pytest.raises(PersonalIdError) as info:
        parse_personal_id("001090012345", sex="female")
    assert info.value.reason == "sex digit says male but the sex given is female"


def test_reason_never_contains_the_number() -> None:
    for kwargs in ({"birth_date": datetime.date(1990, 1, 1)}, {"sex": "female"}):
        with pytest.raises(PersonalIdError) as info:
            parse_personal_id("001291012345", **kwargs)
        assert "001291012345" not in str(info.value)


def test_invalid_sex_argument_is_a_caller_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_personal_id("001099012345", sex="M")
    assert not isinstance(info.value, PersonalIdError)


def test_mask() -> None:
    assert mask_personal_id("001099012345") == "001******345"
    assert mask_personal_id(" 079303001234 ") == "079******234"
    assert len(mask_personal_id("001099012345")) == 12
    assert mask_personal_id("00109901234") == "************"
    assert mask_personal_id("not a number") == "************"


# --- units directory ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def units():
    return load_units()


def test_shipped_units_file_loads(units) -> None:
    assert DEFAULT_PATH.is_file()
    kinds = [u.kind for u in units.units.values()]
    assert kinds.count("city") == 1
    assert kinds.count("ward") == 51
    assert kinds.count("commune") <= 75
    assert kinds.count("department") >= 10
    assert units.get("hanoi") == Unit("hanoi", "city", "Thành phố Hà Nội", "Hanoi City", None)
    assert len(units) == len(kinds)


def test_every_ward_commune_and_department_hangs_off_hanoi(units) -> None:
    for unit in units.units.values():
        if unit.kind != "city":
            assert unit.parent_code == "hanoi", unit.code
        assert unit.code.startswith({"ward": "phuong-", "commune": "xa-"}.get(unit.kind, ""))
    assert len(units.children("hanoi")) == len(units) - 1


def test_shipped_wards_are_the_51_wards(units) -> None:
    expected = (
        "Hoàn Kiếm, Cửa Nam, Ba Đình, Ngọc Hà, Giảng Võ, Hai Bà Trưng, Vĩnh Tuy, Bạch Mai, Đống Đa, Kim Liên, "
        "Văn Miếu - Quốc Tử Giám, Láng, Ô Chợ Dừa, Hồng Hà, Lĩnh Nam, Hoàng Mai, Vĩnh Hưng, Tương Mai, Định Công, "
        "Hoàng Liệt, Yên Sở, Thanh Xuân, Khương Đình, Phương Liệt, Cầu Giấy, Nghĩa Đô, Yên Hòa, Tây Hồ, Phú Thượng, "
        "Tây Tựu, Phú Diễn, Xuân Đỉnh, Đông Ngạc, Thượng Cát, Từ Liêm, Xuân Phương, Tây Mỗ, Đại Mỗ, Long Biên, Bồ Đề, "
        "Việt Hưng, Phúc Lợi, Hà Đông, Dương Nội, Yên Nghĩa, Phú Lương, Kiến Hưng, Thanh Liệt, Chương Mỹ, Sơn Tây, "
        "Tùng Thiện"
    ).split(", ")
    names = {u.name_vi for u in units.units.values() if u.kind == "ward"}
    assert names == {unicodedata.normalize("NFC", f"Phường {n}") for n in expected}
    ward = units.get("phuong-hoan-kiem")
    assert ward is not None and ward.name_en == "Hoan Kiem Ward"
    assert units.get("phuong-van-mieu-quoc-tu-giam") is not None
    commune = units.get("xa-soc-son")
    assert commune is not None and (commune.kind, commune.name_en) == ("commune", "Soc Son Commune")


def test_shipped_names_are_nfc_and_english_names_ascii(units) -> None:
    for unit in units.units.values():
        assert unicodedata.is_normalized("NFC", unit.name_vi), unit.code
        assert unicodedata.is_normalized("NFC", unit.name_en), unit.code
        assert unit.name_en.isascii(), unit.code
        assert unit.code.isascii() and unit.code == unit.code.lower()


def test_shipped_file_is_nfc_utf8_without_bom() -> None:
    raw = DEFAULT_PATH.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8")
    assert unicodedata.is_normalized("NFC", text)
    assert text.splitlines()[0] == "code,kind,name_vi,name_en,parent_code"


def test_ancestors_and_contains(units) -> None:
    assert [u.code for u in units.ancestors("phuong-hoan-kiem")] == ["hanoi"]
    assert units.ancestors("hanoi") == []
    assert units.ancestors("no-such-unit") == []
    assert units.contains("hanoi", "phuong-hoan-kiem")
    assert units.contains("hanoi", "so-xay-dung")
    assert units.contains("hanoi", "hanoi")
    assert units.contains("phuong-hoan-kiem", "phuong-hoan-kiem")
    assert not units.contains("phuong-hoan-kiem", "hanoi")
    assert not units.contains("phuong-hoan-kiem", "phuong-cua-nam")
    assert not units.contains("hanoi", "no-such-unit")
    assert units.get("no-such-unit") is None
    assert units.children("phuong-hoan-kiem") == []


HEADER = "code,kind,name_vi,name_en,parent_code\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "units.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_replacement_file_deeper_tree_parents_after_children_and_nfc(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Phường Hoàn Kiếm")
    path = write(
        tmp_path,
        f"team-a,department,Tổ A,Team A,so-xay-dung\n"
        f"phuong-hoan-kiem,ward,{decomposed},Hoan Kiem Ward,hanoi\n"
        "\n"
        "so-xay-dung,department,Sở Xây dựng,Department of Construction,hanoi\n"
        "hanoi,city,Thành phố Hà Nội,Hanoi City,\n",
    )
    units = load_units(path)
    assert len(units) == 4
    assert [u.code for u in units.ancestors("team-a")] == ["so-xay-dung", "hanoi"]
    assert units.contains("hanoi", "team-a") and units.contains("so-xay-dung", "team-a")
    assert not units.contains("phuong-hoan-kiem", "team-a")
    assert [u.code for u in units.children("so-xay-dung")] == ["team-a"]
    assert units.get("phuong-hoan-kiem").name_vi == unicodedata.normalize("NFC", "Phường Hoàn Kiếm")


def test_replacement_file_columns_in_another_order(tmp_path: Path) -> None:
    path = write(tmp_path, ",city,Hà Nội,Hanoi,hanoi\n", header="parent_code,kind,name_vi,name_en,code\n")
    assert load_units(path).get("hanoi").kind == "city"


ROOT = "hanoi,city,Thành phố Hà Nội,Hanoi City,\n"


@pytest.mark.parametrize(
    ("header", "body", "line", "fragment"),
    [
        ("code,kind,name_vi,parent_code\n", ROOT, 1, "missing columns name_en"),
        ("code,kind,name_vi,name_en,parent_code,note\n", ROOT, 1, "unexpected columns 'note'"),
        ("code,kind,name_vi,name_en,code\n", ROOT, 1, "missing columns parent_code"),
        ("", "", 1, "empty"),
        (HEADER, ROOT + "phuong-a,ward,Phường A,A Ward,hanoi,extra\n", 3, "expected 5 columns, found 6"),
        (HEADER, ROOT + "phuong-a,ward,Phường A,A Ward\n", 3, "expected 5 columns, found 4"),
        (HEADER, ROOT + "phuong-a,district,Quận A,A District,hanoi\n", 3, "kind 'district'"),
        (
            HEADER,
            ROOT + "\nphuong-a,ward,Phường A,A Ward,hanoi\nphuong-a,ward,Phường B,B Ward,hanoi\n",
            5,
            "duplicate code 'phuong-a' (first on line 4)",
        ),
        (HEADER, ROOT + "Phuong-A,ward,Phường A,A Ward,hanoi\n", 3, "code 'Phuong-A'"),
        (HEADER, ROOT + "phường-a,ward,Phường A,A Ward,hanoi\n", 3, "code 'phường-a'"),
        (HEADER, ROOT + "-a,ward,Phường A,A Ward,hanoi\n", 3, "code '-a'"),
        (HEADER, ROOT + "a,ward,Phường A,A Ward,hanoi\n", 3, "code 'a'"),
        (HEADER, ROOT + f"{'a' * 64},ward,Phường A,A Ward,hanoi\n", 3, "must match"),
        (HEADER, ROOT + "phuong-a,ward,,A Ward,hanoi\n", 3, "must not be empty"),
        (HEADER, "phuong-a,ward,Phường A,A Ward,quan-x\n" + ROOT, 2, "unknown parent_code 'quan-x'"),
        (HEADER, ROOT + "phuong-a,ward,Phường A,A Ward,phuong-a\n", 3, "its own parent"),
        (HEADER, ROOT + "team-a,department,A,A,team-b\nteam-b,department,B,B,team-a\n", 3, "cycle"),
        (HEADER, ROOT + "saigon,city,Sài Gòn,Saigon,\n", 3, "more than one root"),
        (HEADER, "team-a,department,A,A,team-b\nteam-b,department,B,B,team-a\n", None, "no root"),
        (HEADER, "", None, "no root"),
        (HEADER, ROOT + 'phuong-a,ward,"Phường A,A Ward,hanoi\n', 3, "malformed CSV"),
    ],
)
def test_units_file_errors(tmp_path: Path, header: str, body: str, line: int | None, fragment: str) -> None:
    path = write(tmp_path, body, header=header)
    with pytest.raises(UnitsFileError) as info:
        load_units(path)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    if line is not None:
        assert f"units.csv:{line}:" in str(info.value)
