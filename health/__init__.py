"""Health: the resident's electronic health record, FHIR R4 for facilities, consent and a visible access log.

Other parts of the module use `health.store` (documented at its top) and `health.service`; the tables are
this module's own.
"""

from health.module import module

__all__ = ["module"]
