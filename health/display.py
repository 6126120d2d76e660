"""The line a person reads for a FHIR resource: what it is, a detail, its status and first code.

Pure functions over resources (dicts as stored). The store keeps each resource's line beside its content, sealed
under the same key (`health.store`, column `display`), written in the same statement as the content: lists that
show lines (the resident's summary and timeline) open a few dozen bytes per row instead of the whole resource.
`health.resident.ips` re-exports these (its callers use them as `ips.describe`, ...).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Line(msgspec.Struct, array_like=True, frozen=True):
    """A resource as a list shows it (stored as a compact JSON array)."""

    text: str
    detail: str | None = None
    status: str | None = None
    code: str | None = None  # system|code of its first coding


def concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if coding.get("display"):
            return str(coding["display"])
    for coding in concept.get("coding") or ():
        if coding.get("code"):
            return str(coding["code"])
    return None


def first_code(concept: Any) -> str | None:
    """`system|code` of a concept's first coding, as FHIR search writes it."""
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return None


def quantity(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("value") is None:
        return None
    number = value["value"]
    shown = f"{number:g}" if isinstance(number, float) else str(number)
    return f"{shown} {value.get('unit') or value.get('code') or ''}".strip()


def status_text(resource: dict) -> str | None:
    for key in ("clinicalStatus", "verificationStatus"):
        text = concept_text(resource.get(key))
        if text:
            return text
    status = resource.get("status")
    return str(status) if status else None


def describe(resource: dict) -> tuple[str, str | None]:
    """(what it is, detail) for one resource, in the facility's words."""
    kind = resource.get("resourceType")
    if kind == "MedicationRequest" or kind == "MedicationStatement":
        name = concept_text(resource.get("medicationCodeableConcept")) or "Thuốc"
        dosage = resource.get("dosageInstruction") or resource.get("dosage") or []
        detail = dosage[0].get("text") if dosage and isinstance(dosage[0], dict) else None
        return name, detail
    if kind == "Immunization":
        return concept_text(resource.get("vaccineCode")) or "Vắc xin", resource.get("lotNumber")
    if kind == "Observation":
        value = (quantity(resource.get("valueQuantity")) or concept_text(resource.get("valueCodeableConcept"))
                 or resource.get("valueString"))
        return concept_text(resource.get("code")) or "Chỉ số", str(value) if value is not None else None
    if kind == "DiagnosticReport":
        return concept_text(resource.get("code")) or "Kết quả", resource.get("conclusion")
    if kind == "Encounter":
        kinds = [concept_text(t) for t in resource.get("type") or []]
        reasons = [concept_text(r) for r in resource.get("reasonCode") or []]
        what = next((k for k in kinds if k), None) or (resource.get("class") or {}).get("display") or "Lần khám"
        return what, ", ".join(r for r in reasons if r) or None
    if kind == "DocumentReference":
        return concept_text(resource.get("type")) or resource.get("description") or "Tài liệu", resource.get(
            "description")
    return concept_text(resource.get("code")) or kind or "", None


def line_of(resource: dict) -> Line:
    text, detail = describe(resource)
    code = first_code(resource.get("code") or resource.get("vaccineCode") or resource.get("medicationCodeableConcept"))
    return Line(text=text, detail=None if detail is None else str(detail), status=status_text(resource), code=code)
