"""The console's settings."""

from __future__ import annotations

import msgspec

from modules import Settings


class ConsoleSettings(msgspec.Struct, frozen=True, kw_only=True):
    idle_minutes: int = 30
    tiles_url: str = ""


SETTINGS = Settings(ConsoleSettings, {
    "IHANOI_CONSOLE_IDLE_MINUTES": ("idle_minutes", "minutes without a request after which a console session ends (default 30)"),
    "IHANOI_CONSOLE_TILES_URL": ("tiles_url", "map tiles for the console's report pages, e.g. `https://tile.example/{z}/{x}/{y}.png`; unset = no map picture (the place is still shown)"),
})


def console_settings(settings) -> ConsoleSettings:
    return settings.of("console")
