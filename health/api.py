"""Health endpoints: HTTP only; every rule is in service.py (FHIR parsing in fhir.py)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from health import fhir
from health.models import FHIR_JSON, FhirResource


def _spec(description: str) -> dict[int, ResponseSpec]:
    return {200: ResponseSpec(data_container=FhirResource, media_type=FHIR_JSON, description=description)}


def fhir_response(body: dict, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(fhir.dumps(body), status_code=status_code, media_type=FHIR_JSON, headers=headers)


class FhirController(Controller):
    path = "/fhir"
    tags = ["Health FHIR"]

    @get("/metadata", operation_id="FhirCapabilityStatement", opt={"identity_level": 1},
         summary="The FHIR R4 CapabilityStatement of this server", responses=_spec("a CapabilityStatement"))
    async def metadata(self) -> Response[bytes]:
        return fhir_response(fhir.capability_statement())


ROUTERS = [FhirController]
