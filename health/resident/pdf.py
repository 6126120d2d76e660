"""A visit's summary as a PDF the resident downloads (as the e-health book in VNeID offers for each visit).

fpdf2 writes it with DejaVu Sans embedded (subset to Latin and Vietnamese, shipped in `data/` with its licence),
so the diacritics survive on a machine without system fonts and a reader's text extraction gives them back.
Labels are Vietnamese, or English for `Accept-Language: en`; the clinical text is printed as the facility wrote it.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF

from app.web import local

FONTS = Path(__file__).parent / "data"

LABELS = {
    "vi": {
        "title": "TÓM TẮT LẦN KHÁM BỆNH", "facility": "Cơ sở khám chữa bệnh", "patient": "Người bệnh",
        "period": "Thời gian", "class": "Hình thức", "reason": "Lý do khám", "diagnoses": "Chẩn đoán",
        "medications": "Thuốc được kê", "results": "Kết quả xét nghiệm, chỉ số", "immunizations": "Tiêm chủng",
        "allergies": "Dị ứng ghi nhận", "none": "Không có", "issued": "Tạo lúc",
        "footer": "Bản tóm tắt từ hồ sơ sức khỏe điện tử Hà Nội. Giờ Việt Nam (UTC+7).",
        "status": "Trạng thái",
    },
    "en": {
        "title": "VISIT SUMMARY", "facility": "Facility", "patient": "Patient", "period": "When", "class": "Kind",
        "reason": "Reason for visit", "diagnoses": "Diagnoses", "medications": "Prescribed medicines",
        "results": "Results and measurements", "immunizations": "Immunizations", "allergies": "Recorded allergies",
        "none": "None", "issued": "Issued", "footer": "Summary from the Hanoi electronic health record. "
        "Times in Vietnam (UTC+7).", "status": "Status",
    },
}


@dataclass
class VisitDocument:
    """What the PDF prints; every text already in the resident's language where we have a choice."""

    facility: str
    patient: str
    start: dt.datetime | None
    end: dt.datetime | None
    visit_class: str = ""
    status: str = ""
    reasons: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    medications: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    immunizations: list[str] = field(default_factory=list)
    allergies: list[str] = field(default_factory=list)


def _when(moment: dt.datetime | None) -> str:
    return local(moment).strftime("%H:%M %d/%m/%Y") if moment else "—"


def _nfc(text: str) -> str:
    # one code point per letter with its marks, as the font's Vietnamese glyphs are composed ones
    return unicodedata.normalize("NFC", text)


def render(doc: VisitDocument, language: str, *, issued: dt.datetime) -> bytes:
    labels = LABELS["en" if language == "en" else "vi"]
    pdf = FPDF(format="A4")
    pdf.set_title(_nfc(labels["title"]))
    pdf.set_creator("iHaNoi")
    pdf.set_creation_date(issued)
    pdf.add_font("dejavu", "", str(FONTS / "DejaVuSans-subset.ttf"))
    pdf.add_font("dejavu", "B", str(FONTS / "DejaVuSans-Bold-subset.ttf"))
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()

    def line(text: str, size: float = 10.5, style: str = "", height: float = 6) -> None:
        pdf.set_font("dejavu", style, size)
        pdf.multi_cell(0, height, _nfc(text), new_x="LMARGIN", new_y="NEXT")

    def pair(label: str, value: str) -> None:
        line(f"{label}: {value or '—'}")

    def section(label: str, items: list[str]) -> None:
        pdf.ln(3)
        line(label, 12, "B", 7)
        for item in items or [labels["none"]]:
            line(f"• {item}")

    line(labels["title"], 16, "B", 9)
    pdf.ln(2)
    pair(labels["facility"], doc.facility)
    pair(labels["patient"], doc.patient)
    pair(labels["period"], f"{_when(doc.start)} – {_when(doc.end)}")
    if doc.visit_class:
        pair(labels["class"], doc.visit_class)
    if doc.status:
        pair(labels["status"], doc.status)
    section(labels["reason"], doc.reasons)
    section(labels["diagnoses"], doc.diagnoses)
    section(labels["medications"], doc.medications)
    section(labels["results"], doc.results)
    if doc.immunizations:
        section(labels["immunizations"], doc.immunizations)
    section(labels["allergies"], doc.allergies)
    pdf.ln(6)
    line(f"{labels['issued']}: {_when(issued)}. {labels['footer']}", 8.5, "", 5)
    return bytes(pdf.output())
