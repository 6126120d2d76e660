"""The International Patient Summary of a resident's record, from the FHIR resources the facilities sent.

Pure functions over resources (dicts as stored): which section a resource belongs to, the line a resident reads
for it, its clinical date, and the FHIR `document` Bundle whose Composition is LOINC 60591-5. An empty section
carries an `emptyReason` (list-empty-reason `unavailable`: the record holds nothing, which is not the same as
"none known").
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from app.web import CITY_TZ
from health import display

LOINC = "http://loinc.org"
EMPTY_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
IPS_PROFILE = "http://hl7.org/fhir/uv/ips/StructureDefinition/Composition-uv-ips"


@dataclass(frozen=True)
class SectionSpec:
    key: str
    loinc: str
    loinc_display: str
    vi: str
    en: str
    types: tuple[str, ...]
    limit: int  # the newest so many; the timeline and $everything have the rest
    # Which rows are current, by the `status` the core indexes (a resource's status, else its clinicalStatus):
    # exactly these, or all but these. A problem resolved, a medicine stopped or finished, anything entered in
    # error: not in the summary (the timeline and $everything still show them).
    only: tuple[str, ...] = ()
    never: tuple[str, ...] = ("entered-in-error",)


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("allergies", "48765-2", "Allergies and adverse reactions Document", "Dị ứng",
                "Allergies and intolerances", ("AllergyIntolerance",), 100,
                never=("resolved", "inactive", "entered-in-error")),
    SectionSpec("problems", "11450-4", "Problem list - Reported", "Bệnh, vấn đề sức khỏe", "Problems",
                ("Condition",), 100, never=("resolved", "inactive", "remission", "entered-in-error")),
    SectionSpec("medications", "10160-0", "History of Medication use Narrative", "Thuốc đang dùng", "Medications",
                ("MedicationRequest",), 50, only=("active", "on-hold")),
    SectionSpec("immunizations", "11369-6", "History of Immunization Narrative", "Tiêm chủng", "Immunizations",
                ("Immunization",), 100, never=("not-done", "entered-in-error")),
    SectionSpec("results", "30954-2", "Relevant diagnostic tests/laboratory data Narrative",
                "Kết quả xét nghiệm, cận lâm sàng", "Results", ("Observation", "DiagnosticReport"), 50,
                never=("registered", "cancelled", "entered-in-error")),
    SectionSpec("visits", "46240-8", "History of Hospitalizations+Outpatient visits Narrative", "Lần khám gần đây",
                "Recent visits", ("Encounter",), 10, never=("planned", "cancelled", "entered-in-error")),
)
BY_KEY = {spec.key: spec for spec in SECTIONS}
EMPTY = {"vi": "Chưa có thông tin trong hồ sơ", "en": "No information available"}


def is_current(spec: SectionSpec, status: str | None) -> bool:
    if spec.only:
        return status in spec.only
    return status not in spec.never


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 4:
            return dt.datetime(int(value), 1, 1, tzinfo=dt.UTC)
        if len(value) == 7:
            return dt.datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=dt.UTC)
        if len(value) == 10:  # a date alone: midnight in Hanoi, as the facility meant it
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(), tzinfo=CITY_TZ).astimezone(dt.UTC)
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except ValueError:
        return None


# the line of a resource: moved to the core (`health.display`) so the store keeps it beside the content
concept_text = display.concept_text
first_code = display.first_code
_quantity = display.quantity
_status = display.status_text
describe = display.describe


def document_bundle(patient: dict, grouped: dict[str, list[dict]], *, language: str, base_url: str,
                    now: dt.datetime) -> dict:
    """A FHIR `document` Bundle: the IPS Composition first, then the Patient, then every resource a section lists."""
    def full_url(resource: dict) -> str:
        return f"{base_url}/fhir/{resource['resourceType']}/{resource['id']}"

    def reference(resource: dict) -> dict:
        return {"reference": f"{resource['resourceType']}/{resource['id']}"}

    timestamp = now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    sections = []
    included: dict[str, dict] = {}
    for spec in SECTIONS:
        entries = grouped.get(spec.key, [])
        title = spec.en if language == "en" else spec.vi
        section: dict[str, Any] = {
            "title": title,
            "code": {"coding": [{"system": LOINC, "code": spec.loinc, "display": spec.loinc_display}]},
        }
        if entries:
            lines = "".join(f"<li>{_escape(describe(r)[0])}</li>" for r in entries)
            section["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><ul>{lines}</ul></div>'}
            section["entry"] = [reference(r) for r in entries]
            for r in entries:
                included[full_url(r)] = _about(r, patient)
        else:
            text = EMPTY["en" if language == "en" else "vi"]
            section["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{_escape(text)}</div>'}
            section["emptyReason"] = {"coding": [{"system": EMPTY_REASON_SYSTEM, "code": "unavailable",
                                                  "display": "Unavailable"}], "text": text}
        sections.append(section)
    composition_id = str(uuid.uuid4())
    composition = {
        "resourceType": "Composition", "id": composition_id, "meta": {"profile": [IPS_PROFILE]},
        "language": "en" if language == "en" else "vi", "status": "final",
        "type": {"coding": [{"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}]},
        "subject": reference(patient), "date": timestamp,
        "author": [{"display": "iHaNoi – Hồ sơ sức khỏe điện tử Hà Nội"}],
        "title": "Patient Summary" if language == "en" else "Tóm tắt hồ sơ sức khỏe", "section": sections,
    }
    entries = [{"fullUrl": f"urn:uuid:{composition_id}", "resource": composition},
               {"fullUrl": full_url(patient), "resource": patient}]
    entries += [{"fullUrl": url, "resource": resource} for url, resource in included.items()]
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "document", "timestamp": timestamp,
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}, "entry": entries}


# where each type names its patient; the document points them all at the record's Patient (a facility may have
# sent its own local reference, which means nothing outside its bundle)
_PATIENT_FIELD = {"AllergyIntolerance": "patient", "Immunization": "patient"}


def _about(resource: dict, patient: dict) -> dict:
    field = _PATIENT_FIELD.get(resource.get("resourceType", ""), "subject")
    return resource | {field: {"reference": f"Patient/{patient['id']}"}}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
