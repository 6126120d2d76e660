"""FHIR R4 plumbing: JSON in and out, the CapabilityStatement, OperationOutcome."""

from __future__ import annotations

import datetime as dt

import msgspec

FHIR_VERSION = "4.0.1"
RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Immunization",
                  "AllergyIntolerance", "DiagnosticReport", "DocumentReference")
SEARCH_PARAMS = ("patient", "date", "category", "code", "_lastUpdated", "_count")


def dumps(body: dict) -> bytes:
    return msgspec.json.encode(body)


def capability_statement() -> dict:
    def resource(kind: str) -> dict:
        interactions = [{"code": "read"}, {"code": "search-type"}]
        params = [{"name": name, "type": {"_count": "number", "_lastUpdated": "date", "date": "date",
                                          "patient": "reference"}.get(name, "token")} for name in SEARCH_PARAMS]
        entry = {"type": kind, "interaction": interactions, "searchParam": params,
                 "conditionalUpdate": True, "versioning": "versioned"}
        if kind == "Patient":
            entry["operation"] = [{"name": "everything",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
        return entry

    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": dt.date.today().isoformat(),
        "kind": "instance",
        "software": {"name": "iHaNoi health"},
        "implementation": {"description": "Hồ sơ sức khỏe điện tử Hà Nội / Hanoi electronic health record"},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "OAuth2 client credentials (private_key_jwt) for facility systems; "
                                        "residents' consent decides what a facility reads"},
            "resource": [resource(kind) for kind in RESOURCE_TYPES] + [
                {"type": "AuditEvent", "interaction": [{"code": "search-type"}]}],
            "interaction": [{"code": "transaction"}],
        }],
    }
