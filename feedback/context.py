"""What every feedback call needs besides the connection: the caller's language and the unit directory (Ctx),
who the caller is to a report, and the clock (the city's time zone is the kernel's: app.web.local)."""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from dataclasses import dataclass

from app.errors import InvalidInput
from app.identity import Principal, UnitDirectory
from feedback.models import Named


@dataclass(frozen=True)
class Ctx:
    """The unit directory and the caller's language."""

    units: UnitDirectory
    language: str = "vi"

    def pick(self, pair: tuple[str, str]) -> str:
        return pair[1] if self.language == "en" else pair[0]

    def unit(self, code: str) -> Named:
        unit = self.units.get(code)
        if unit is None:
            return Named(code=code, name=code)
        return Named(code=code, name=unit.name_en if self.language == "en" else unit.name_vi)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def resident_id(principal: Principal | None) -> uuid.UUID | None:
    if principal is None or principal.kind != "resident":
        return None
    return uuid.UUID(principal.sub)


def is_staff_for(ctx: Ctx, principal: Principal | None, unit_code: str) -> bool:
    """Staff or the head of the unit, or of a unit above it."""
    if principal is None:
        return False
    return any(ctx.units.contains(scope, unit_code)
               for role in ("staff", "unit_head") for scope in principal.scopes_of(role))


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError):
        raise InvalidInput.field(field, "must be a UUID") from None
