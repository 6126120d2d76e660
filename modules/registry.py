"""What the loaded modules declared, gathered once per process: problem types, roles, notification
categories and templates, settings and live channels.

The kernel adds its own declarations (its problem types, the city's organisational roles) under the
owner "kernel"; `catalog.install` adds each module's. Declaring the same name twice with a different
meaning is an error at start-up, not a surprise in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from modules import LiveChannel, Module, NotificationCategory, ProblemType, Role, Settings, Template


class RegistryError(ValueError):
    pass


@dataclass
class Registry:
    problems: dict[str, ProblemType] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    categories: dict[str, NotificationCategory] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    settings: dict[str, Settings] = field(default_factory=dict)
    live: dict[str, LiveChannel] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # a module's environment variable -> the module
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> who declared it

    def _add(self, kind: str, table: dict, name: str, value: object, owner: str) -> None:
        existing = table.get(name)
        if existing is not None and existing != value:
            raise RegistryError(f"{kind} {name!r} declared by {self.owners[(kind, name)]} and again by {owner}")
        table[name] = value
        self.owners.setdefault((kind, name), owner)

    def add_problems(self, owner: str, problems: Iterable[ProblemType]) -> None:
        for problem in problems:
            self._add("problem type", self.problems, problem.slug, problem, owner)

    def add_roles(self, owner: str, roles: Iterable[Role]) -> None:
        for role in roles:
            self._add("role", self.roles, role.name, role, owner)

    def add_categories(self, owner: str, categories: Iterable[NotificationCategory]) -> None:
        for category in categories:
            self._add("notification category", self.categories, category.name, category, owner)
            for template in category.templates:
                self._add("template", self.templates, template.key, template, owner)

    def install(self, module: Module) -> None:
        self.add_problems(module.name, module.problems)
        self.add_roles(module.name, module.roles)
        self.add_categories(module.name, module.notification_categories)
        if module.settings is not None:
            for var in module.settings.env:
                self._add("environment variable", self.env, var, module.name, module.name)
            self._add("settings", self.settings, module.name, module.settings, module.name)
        for channel in module.live:
            self._add("live channel", self.live, f"{module.name}.{channel.name}", channel, module.name)

    def template(self, key: str) -> Template | None:
        return self.templates.get(key)


REGISTRY = Registry()
