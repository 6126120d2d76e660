"""Bodies of the health endpoints (msgspec Structs) and the FHIR answer's schema for the OpenAPI document."""

from __future__ import annotations

import msgspec

FHIR_JSON = "application/fhir+json"


class FhirResource(msgspec.Struct, kw_only=True):
    """A FHIR R4 resource (application/fhir+json); its fields are FHIR's, named by `resourceType`."""

    resourceType: str  # noqa: N815 - FHIR's own name
