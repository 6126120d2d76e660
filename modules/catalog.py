"""The catalog: every module the app can load, in default home-screen order.

Entries are "package:attribute" paths to a `Module`. A module is listed here only once it has
real endpoints; transit, health and parking join with their issues.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from modules import Module

CATALOG: tuple[str, ...] = ("notifications:module", "feedback:module", "payments:module", "parking:module",
                            "transit:module", "console:module", "health:module")


class CatalogError(ValueError):
    pass


def load(entries: Sequence[str] = CATALOG) -> list[Module]:
    loaded: list[Module] = []
    for entry in entries:
        package, _, attribute = entry.partition(":")
        module = getattr(importlib.import_module(package), attribute or "module")
        if not isinstance(module, Module):
            raise CatalogError(f"{entry} is not a modules.Module")
        loaded.append(module)
    names = [m.name for m in loaded]
    if len(set(names)) != len(names):
        raise CatalogError(f"duplicate module names in the catalog: {names}")
    return loaded


def arrange(modules: Sequence[Module], order: Sequence[str]) -> list[Module]:
    """Configured names first, in that order; the rest after, in catalog order."""
    by_name = {m.name: m for m in modules}
    unknown = [name for name in order if name not in by_name]
    if unknown:
        raise CatalogError(f"IHANOI_MODULES names unknown modules: {', '.join(unknown)}; known: {', '.join(by_name)}")
    chosen = [by_name[name] for name in dict.fromkeys(order)]
    return chosen + [m for m in modules if m.name not in order]


def install(modules: Sequence[Module]) -> None:
    """Gather what the modules declared (problem types, roles, categories, settings, channels)."""
    from modules.registry import REGISTRY

    for module in modules:
        REGISTRY.install(module)
