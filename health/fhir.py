"""FHIR R4 plumbing: validation (fhir.resources R4B plus our checks of coded values), what search indexes of
each resource, references, dates, OperationOutcome and the CapabilityStatement.

The API is FHIR R4 (4.0.1), and says so (`CapabilityStatement.fhirVersion`). Structure is checked with the R4B
models of fhir.resources (the issue asks for them; the package has no R4 models any more). For the nine types
served here, and for Bundle, OperationOutcome, CapabilityStatement and AuditEvent, R4B's elements are the same as
R4's (compared element by element, five levels deep, with the R4 models of fhir.resources 6.1.0). What R4B adds
that those models would let through is refused by `r4_only`: the two R4B data types as an extension's value
(`valueCodeableReference`, `valueRatioRange`) and contained resources of the types R4B added or changed.

No database here: `service.py` decides and stores.

Identifiers a facility sends on Patient: the personal ID number (số định danh cá nhân, 12 digits) under
`PERSONAL_ID_SYSTEM` and the BHYT card number (15 characters) under `BHYT_SYSTEM`.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pydantic
from fhir.resources.R4B import get_fhir_model_class

from app.identity.personal_id import PersonalIdError, parse_personal_id

FHIR_VERSION = "4.0.1"  # R4: what clients get (the R4B models check structure; `r4_only` keeps R4B out)
CITY_TZ = dt.timezone(dt.timedelta(hours=7))  # Asia/Ho_Chi_Minh has no daylight saving
PERSONAL_ID_SYSTEM = "https://ihanoi.hanoi.gov.vn/fhir/sid/personal-id"
BHYT_SYSTEM = "https://ihanoi.hanoi.gov.vn/fhir/sid/bhyt"
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-vn")
BHYT = re.compile(r"^[A-Z]{2}[1-5][0-9]{2}[0-9]{10}$")
ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?$")

RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Immunization",
                  "AllergyIntolerance", "DiagnosticReport", "DocumentReference")
# where each resource names its patient
PATIENT_FIELD = {"Encounter": "subject", "Condition": "subject", "Observation": "subject",
                 "MedicationRequest": "subject", "Immunization": "patient", "AllergyIntolerance": "patient",
                 "DiagnosticReport": "subject", "DocumentReference": "subject"}
SEARCH_PARAMS = ("patient", "date", "category", "code", "_lastUpdated", "_count", "_sort")
# A search names its patient: a record is searched one patient at a time, and only with that patient's consent
# (a search across patients would answer "who has a record here", which no consent covers). Without it: 400.
PATIENT_REQUIRED = ("patient (or subject) is required: a record is searched one patient at a time, and only with "
                    "that patient's consent; find the patient first with Patient?identifier=system|value")
# Whose Patient is served when several facilities send one (service.merged_patient)
PATIENT_RULE = ("identifiers are those of every facility (one BHYT card: the newest); name, gender and birthDate "
                "as VNeID verified them win over what any facility sends; every other element is the one the "
                "facility that sent it most recently sent (a facility leaving an element out erases nobody's); "
                "each facility's own Patient is kept as it sent it")
# R4B's own data types, as the value of an extension, and the resource types R4B added or changed (R4 readers
# cannot parse them): refused anywhere in a resource
R4B_EXTENSION_VALUES = frozenset({"valueCodeableReference", "valueRatioRange"})
R4B_RESOURCE_TYPES = frozenset({
    "AdministrableProductDefinition", "Citation", "ClinicalUseDefinition", "EvidenceReport", "Ingredient",
    "ManufacturedItemDefinition", "MedicinalProductDefinition", "NutritionProduct", "PackagedProductDefinition",
    "RegulatedAuthorization", "SubscriptionStatus", "SubscriptionTopic", "SubstanceDefinition",
    # in R4 too, but shaped differently in R4B
    "ActivityDefinition", "Evidence", "EvidenceVariable", "PlanDefinition", "StructureDefinition"})

# Value sets fhir.resources does not check (it accepts `gender: "mail"`): the required bindings of R4.
_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Encounter", "status"): frozenset({"planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                                        "cancelled", "entered-in-error", "unknown"}),
    ("Condition", "clinicalStatus"): frozenset({"active", "recurrence", "relapse", "inactive", "remission",
                                                "resolved"}),
    ("Condition", "verificationStatus"): frozenset({"unconfirmed", "provisional", "differential", "confirmed",
                                                    "refuted", "entered-in-error"}),
    ("Observation", "status"): frozenset({"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                                          "entered-in-error", "unknown"}),
    ("MedicationRequest", "status"): frozenset({"active", "on-hold", "cancelled", "completed", "entered-in-error",
                                                "stopped", "draft", "unknown"}),
    ("MedicationRequest", "intent"): frozenset({"proposal", "plan", "order", "original-order", "reflex-order",
                                                "filler-order", "instance-order", "option"}),
    ("Immunization", "status"): frozenset({"completed", "entered-in-error", "not-done"}),
    ("AllergyIntolerance", "clinicalStatus"): frozenset({"active", "inactive", "resolved"}),
    ("AllergyIntolerance", "verificationStatus"): frozenset({"unconfirmed", "confirmed", "refuted",
                                                             "entered-in-error"}),
    ("AllergyIntolerance", "type"): frozenset({"allergy", "intolerance"}),
    ("AllergyIntolerance", "category"): frozenset({"food", "medication", "environment", "biologic"}),
    ("AllergyIntolerance", "criticality"): frozenset({"low", "high", "unable-to-assess"}),
    ("DiagnosticReport", "status"): frozenset({"registered", "partial", "preliminary", "final", "amended",
                                               "corrected", "appended", "cancelled", "entered-in-error", "unknown"}),
    ("DocumentReference", "status"): frozenset({"current", "superseded", "entered-in-error"}),
    ("DocumentReference", "docStatus"): frozenset({"preliminary", "final", "amended", "entered-in-error"}),
}
# CodeableConcepts bound to a code system: their coding in that system must hold one of the codes above
_CONCEPT_SYSTEMS = {
    ("Condition", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/condition-clinical",
    ("Condition", "verificationStatus"): "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    ("AllergyIntolerance", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    ("AllergyIntolerance", "verificationStatus"):
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
}
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
OBSERVATION_CATEGORIES = frozenset({"social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
                                    "exam", "therapy", "activity"})


class Issue(msgspec.Struct):
    """One OperationOutcome issue: what is wrong and where (a FHIRPath expression)."""

    diagnostics: str
    expression: list[str] = msgspec.field(default_factory=list)
    code: str = "invalid"
    severity: str = "error"


class FhirError(Exception):
    """Answered as an OperationOutcome naming every issue."""

    def __init__(self, status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.status = status
        self.issues = issues
        self.headers = headers or {}

    @classmethod
    def one(cls, status: int, diagnostics: str, expression: str | None = None, code: str = "invalid") -> FhirError:
        return cls(status, [Issue(diagnostics=diagnostics, expression=[expression] if expression else [],
                                  code=code)])


def outcome(issues: list[Issue]) -> dict:
    def issue(i: Issue) -> dict:
        body = {"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics}
        if i.expression:
            body["expression"] = i.expression
        return body

    return {"resourceType": "OperationOutcome", "issue": [issue(i) for i in issues]}


def dumps(body: dict) -> bytes:
    return msgspec.json.encode(body)


# ---- validation ----------------------------------------------------------------------------------------------


def _loc(path: str, loc: tuple) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(resource: Any, path: str) -> list[Issue]:
    """Every problem of one resource: its structure (fhir.resources), then the coded values R4 binds."""
    if not isinstance(resource, dict):
        return [Issue(diagnostics="a resource must be a JSON object", expression=[path], code="structure")]
    kind = resource.get("resourceType")
    if kind not in RESOURCE_TYPES:
        return [Issue(diagnostics=f"resourceType {kind!r} is not accepted here; accepted: {', '.join(RESOURCE_TYPES)}",
                      expression=[f"{path}.resourceType"], code="not-supported")]
    issues: list[Issue] = []
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            issues.append(Issue(diagnostics=message, expression=[_loc(path, tuple(error.get("loc", ())))],
                                code="required" if "missing" in str(error.get("type")) else "value"))
        return issues
    except (ValueError, TypeError) as exc:  # a model's own check outside pydantic's error list
        return [Issue(diagnostics=str(exc)[:300], expression=[path], code="value")]
    issues.extend(r4_only(resource, path))
    issues.extend(_coded(kind, resource, path))
    if kind == "Patient":
        issues.extend(_patient_identifiers(resource, path))
    elif not identifier_key(resource):
        issues.append(Issue(
            diagnostics="an identifier with system and value is required: the facility's own id of this record, so "
                        "that sending it again updates it", expression=[f"{path}.identifier"], code="required"))
    if kind in PATIENT_FIELD and not reference_of(resource.get(PATIENT_FIELD[kind])):
        issues.append(Issue(diagnostics="the patient is required (a reference to a Patient)",
                            expression=[f"{path}.{PATIENT_FIELD[kind]}"], code="required"))
    return issues


def r4_only(value: Any, path: str) -> Iterator[Issue]:
    """What R4B models accept but R4 does not have: R4B data types as extension values, R4B resource types
    contained."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in R4B_EXTENSION_VALUES:
                yield Issue(diagnostics=f"{key} is FHIR R4B; this server speaks R4 (4.0.1)", expression=[where],
                            code="structure")
            elif key == "contained" and isinstance(item, list):
                for i, inner in enumerate(item):
                    kind = inner.get("resourceType") if isinstance(inner, dict) else None
                    if kind in R4B_RESOURCE_TYPES:
                        yield Issue(diagnostics=f"a contained {kind} is FHIR R4B; this server speaks R4 (4.0.1)",
                                    expression=[f"{where}[{i}]"], code="structure")
                    else:
                        yield from r4_only(inner, f"{where}[{i}]")
            elif isinstance(item, (dict, list)):
                yield from r4_only(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from r4_only(item, f"{path}[{i}]")


def _coded(kind: str, resource: dict, path: str) -> Iterator[Issue]:
    for (rtype, name), allowed in _CODES.items():
        if rtype != kind or name not in resource:
            continue
        value = resource[name]
        system = _CONCEPT_SYSTEMS.get((rtype, name))
        if system is not None:
            for i, coding in enumerate((value or {}).get("coding") or []):
                if coding.get("system") == system and coding.get("code") not in allowed:
                    yield Issue(diagnostics=f"{coding.get('code')!r} is not a code of {system}",
                                expression=[f"{path}.{name}.coding[{i}].code"], code="code-invalid")
            continue
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if item not in allowed:
                where = f"{path}.{name}[{i}]" if isinstance(value, list) else f"{path}.{name}"
                yield Issue(diagnostics=f"{item!r} is not one of {', '.join(sorted(allowed))}", expression=[where],
                            code="code-invalid")
    if kind == "Observation":
        for i, concept in enumerate(resource.get("category") or []):
            for j, coding in enumerate(concept.get("coding") or []):
                system, code = coding.get("system"), coding.get("code")
                if system == OBSERVATION_CATEGORY_SYSTEM and code not in OBSERVATION_CATEGORIES:
                    yield Issue(diagnostics=f"{coding.get('code')!r} is not an observation category",
                                expression=[f"{path}.category[{i}].coding[{j}].code"], code="code-invalid")
    for where, coding in _codings(resource, path):
        if coding.get("system") in ICD10_SYSTEMS and not ICD10.match(str(coding.get("code", ""))):
            yield Issue(diagnostics=f"{coding.get('code')!r} is not an ICD-10 code", expression=[f"{where}.code"],
                        code="code-invalid")


def _codings(value: Any, path: str) -> Iterator[tuple[str, dict]]:
    """Every Coding in a resource (a dict holding `system` and `code`), with its path."""
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            yield path, value
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                yield from _codings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _codings(item, f"{path}[{i}]")


def _patient_identifiers(resource: dict, path: str) -> Iterator[Issue]:
    found = False
    for i, identifier in enumerate(resource.get("identifier") or []):
        system, value = identifier.get("system"), identifier.get("value")
        where = f"{path}.identifier[{i}].value"
        if system == PERSONAL_ID_SYSTEM:
            found = True
            sex = resource.get("gender") if resource.get("gender") in ("male", "female") else None
            birth = _birth_date(resource.get("birthDate"))
            try:
                parse_personal_id(str(value or ""), birth_date=birth, sex=sex)
            except PersonalIdError as exc:  # the reason never holds the number
                yield Issue(diagnostics=f"personal ID number: {exc.reason}", expression=[where], code="value")
        elif system == BHYT_SYSTEM:
            found = True
            if not BHYT.match(str(value or "")):
                yield Issue(diagnostics="BHYT card number: 15 characters, 2 letters, a benefit level 1-5, "
                                        "2 digits of province and 10 digits", expression=[where], code="value")
    if not found:
        yield Issue(diagnostics=f"a Patient needs the personal ID number ({PERSONAL_ID_SYSTEM}) or the BHYT card "
                                f"number ({BHYT_SYSTEM}) as an identifier", expression=[f"{path}.identifier"],
                    code="required")


def _birth_date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


def patient_identifiers(resource: dict) -> tuple[str | None, str | None]:
    """(personal ID number, BHYT number) of a validated Patient."""
    personal = bhyt = None
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == PERSONAL_ID_SYSTEM:
            personal = str(identifier.get("value")).strip()
        elif identifier.get("system") == BHYT_SYSTEM:
            bhyt = str(identifier.get("value"))
    return personal, bhyt


def identifier_key(resource: dict) -> str | None:
    """The facility's own id of a record, "system|value" (DocumentReference: masterIdentifier first)."""
    candidates = [resource.get("masterIdentifier")] if resource.get("masterIdentifier") else []
    candidates += list(resource.get("identifier") or [])
    for identifier in candidates:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            return f"{identifier['system']}|{identifier['value']}"
    return None


# ---- references ----------------------------------------------------------------------------------------------


def reference_of(value: Any) -> str | None:
    """The `reference` string of a Reference, or None."""
    return value.get("reference") if isinstance(value, dict) and isinstance(value.get("reference"), str) else None


def references(value: Any, path: str) -> Iterator[tuple[str, dict]]:
    """Every Reference in a resource (a dict with a `reference` string), with its path."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield path, value
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                yield from references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from references(item, f"{path}[{i}]")


LOCAL_REFERENCE = re.compile(r"^(?P<type>[A-Za-z]+)/(?P<id>[A-Za-z0-9.-]{1,64})(/_history/[A-Za-z0-9.-]+)?$")


def parse_reference(text: str) -> tuple[str, uuid.UUID | None] | None:
    """("Type", id) of a relative reference to a type we hold (id None when it cannot be ours); None otherwise."""
    match = LOCAL_REFERENCE.match(text)
    if match is None or match["type"] not in RESOURCE_TYPES:
        return None
    try:
        return match["type"], uuid.UUID(match["id"])
    except ValueError:
        return match["type"], None


def merge_patient(sources: list[dict], *, verified_name: str | None = None, gender: str | None = None,
                  birth_date: dt.date | None = None, bhyt: str | None = None) -> dict:
    """The Patient served from what each facility sent (`sources`, newest first), by PATIENT_RULE."""
    merged: dict[str, Any] = {"resourceType": "Patient"}
    for source in sources:  # newest first: an element is taken from the newest source that has it
        for name, value in source.items():
            if name in ("resourceType", "id", "meta", "text", "identifier") or name in merged:
                continue
            merged[name] = copy.deepcopy(value)
    identifiers: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for source in sources:
        for identifier in source.get("identifier") or []:
            system, value = identifier.get("system"), identifier.get("value")
            if system == BHYT_SYSTEM and bhyt is not None and value != bhyt:
                continue  # an older card
            key = (str(system), str(value))
            if key not in seen:
                seen.add(key)
                identifiers.append(copy.deepcopy(identifier))
    if bhyt is not None and (BHYT_SYSTEM, bhyt) not in seen:
        identifiers.append({"system": BHYT_SYSTEM, "value": bhyt})
    if identifiers:
        merged["identifier"] = identifiers
    if verified_name:
        merged["name"] = [{"use": "official", "text": verified_name}]
    if gender in ("male", "female"):
        merged["gender"] = gender
    if birth_date is not None:
        merged["birthDate"] = birth_date.isoformat()
    return merged


def deep_copy(resource: dict) -> dict:
    return copy.deepcopy(resource)


# ---- what search indexes -------------------------------------------------------------------------------------


def parse_instant(text: str) -> tuple[dt.datetime, dt.datetime]:
    """A FHIR date, dateTime or instant as the [start, end) it covers; a date without zone is Hanoi's."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}", text):
            start = dt.datetime(int(text), 1, 1, tzinfo=CITY_TZ)
            return start, start.replace(year=start.year + 1)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            start = dt.datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=CITY_TZ)
            end = (start.replace(year=start.year + 1, month=1) if start.month == 12
                   else start.replace(month=start.month + 1))
            return start, end
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            start = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=CITY_TZ)
            return start, start + dt.timedelta(days=1)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a FHIR date or dateTime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CITY_TZ)
    return moment, moment + dt.timedelta(seconds=1)


def _first_date(resource: dict, *names: str) -> dt.datetime | None:
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start")
        if isinstance(value, str):
            try:
                return parse_instant(value)[0].astimezone(dt.UTC)
            except ValueError:
                continue
    return None


_DATES = {
    "Encounter": ("period",),
    "Condition": ("onsetDateTime", "recordedDate", "onsetPeriod"),
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "MedicationRequest": ("authoredOn",),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime", "onsetPeriod"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "DocumentReference": ("date",),
    "Patient": (),
}
_CODE_FIELDS = {
    "Encounter": ("type",), "Condition": ("code",), "Observation": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",), "Immunization": ("vaccineCode",),
    "AllergyIntolerance": ("code",), "DiagnosticReport": ("code",), "DocumentReference": ("type",), "Patient": (),
}


def _concept_codes(value: Any) -> list[tuple[str | None, str]]:
    concepts = value if isinstance(value, list) else [value]
    return [(c.get("system"), str(c["code"])) for concept in concepts if isinstance(concept, dict)
            for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]


def index_terms(kind: str, resource: dict, now: dt.datetime) -> dict:
    """What `store.Index` needs: clinical date (else now), category codes, codes, status, encounter reference."""
    category: list[str] = []
    if kind == "Encounter":
        klass = resource.get("class") or {}
        if klass.get("code"):
            category.append(str(klass["code"]))
    elif kind == "AllergyIntolerance":
        category.extend(str(c) for c in resource.get("category") or [])
    else:
        raw = resource.get("category")
        category.extend(code for _, code in _concept_codes(raw if isinstance(raw, list) else [raw] if raw else []))
    codes: list[tuple[str | None, str]] = []
    for name in _CODE_FIELDS[kind]:
        codes.extend(_concept_codes(resource.get(name)))
    status = resource.get("status")
    if status is None and isinstance(resource.get("clinicalStatus"), dict):
        found = _concept_codes(resource["clinicalStatus"])
        status = found[0][1] if found else None
    encounter = resource.get("encounter")
    if kind == "DocumentReference":
        encounter = ((resource.get("context") or {}).get("encounter") or [None])[0]
    return {
        "effective_at": _first_date(resource, *_DATES[kind]) or now,
        "category": tuple(dict.fromkeys(category)),
        "codes": tuple(dict.fromkeys(codes)),
        "status": status if isinstance(status, str) else None,
        "encounter": reference_of(encounter),
    }


# ---- the CapabilityStatement ---------------------------------------------------------------------------------


def capability_statement() -> dict:
    def resource(kind: str) -> dict:
        params = [{"name": name, "type": {"_count": "number", "_lastUpdated": "date", "date": "date",
                                          "patient": "reference", "_sort": "string"}.get(name, "token")}
                  for name in SEARCH_PARAMS]
        params[0]["documentation"] = "Required. " + PATIENT_REQUIRED
        entry = {"type": kind, "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "versioning": "versioned", "conditionalUpdate": True, "searchParam": params}
        if kind == "Patient":
            entry["searchParam"] = [{"name": "identifier", "type": "token"}, {"name": "_id", "type": "token"}]
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
            "documentation": f"FHIR R4 (4.0.1). Patients are identified by {PERSONAL_ID_SYSTEM} and {BHYT_SYSTEM}. "
                             "Every resource but Patient carries the facility's own identifier: sent again, it "
                             "updates. Searches of every type but Patient need the patient parameter (without it: "
                             "400 OperationOutcome): " + PATIENT_REQUIRED + ". The Patient resource is merged: "
                             + PATIENT_RULE,
            "security": {"description": "OAuth2 client credentials (private_key_jwt) for facility systems holding "
                                        "health_facility:<code>; what a facility reads is what the resident "
                                        "shared with it, every read is in the resident's access log"},
            "resource": [resource(kind) for kind in RESOURCE_TYPES] + [
                {"type": "AuditEvent", "interaction": [{"code": "search-type"}],
                 "searchParam": [{"name": "patient", "type": "reference"}, {"name": "_count", "type": "number"}]}],
            "interaction": [{"code": "transaction"}],
        }],
    }
