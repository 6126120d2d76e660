"""The city's own roles (the kernel's); modules declare theirs in `Module(roles=...)`."""

from __future__ import annotations

from modules import Role, Title
from modules.registry import REGISTRY

KERNEL_ROLES = (
    Role("admin", Title("Quản trị hệ thống", "Administrator"), "none",
         "no scope: grants roles, approves city-wide broadcasts"),
    Role("staff", Title("Cán bộ", "Staff"), "unit",
         "a department, district, ward or commune code; covers the units under it"),
    Role("unit_head", Title("Lãnh đạo đơn vị", "Head of unit"), "unit",
         "the unit the person heads; overdue feedback escalates to them"),
)
REGISTRY.add_roles("kernel", KERNEL_ROLES)
