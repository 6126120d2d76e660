"""Identity: VNeID-style OpenID Connect login, the backend's own tokens, sessions, roles and clients.

This is identity's public face: what other modules may use. Everything else in `app/identity/` is
its own business (its tables included).
"""

from app.identity import guards
from app.identity.models import Principal, Profile
from app.identity.service import (
    IdentityRuntime,
    covers_unit,
    current_scopes,
    demo_resident,
    holders_of,
    holds_role_for,
    machine_client,
    names_of,
    profile_of,
    require_level,
)
from app.identity.units import Unit, UnitDirectory, units_file_directory

__all__ = [
    "IdentityRuntime", "Principal", "Profile", "Unit", "UnitDirectory", "covers_unit", "current_scopes",
    "demo_resident", "guards",
    "holders_of", "holds_role_for", "machine_client", "names_of", "profile_of", "require_level", "units_file_directory",
]
