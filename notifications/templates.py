"""Message templates in Vietnamese and English, with named variables.

Every module registers its templates here (by key); `notify` renders both languages into the inbox
row, and each device gets the language of its locale.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from app.errors import InvalidInput


@dataclass(frozen=True)
class Template:
    key: str
    title_vi: str
    body_vi: str
    title_en: str
    body_en: str

    def variables(self) -> set[str]:
        names: set[str] = set()
        for text in (self.title_vi, self.body_vi, self.title_en, self.body_en):
            names |= {field for _, field, _, _ in string.Formatter().parse(text) if field}
        return names

    def render(self, data: dict[str, object]) -> dict[str, str]:
        missing = self.variables() - set(data)
        if missing:
            raise InvalidInput.field("data", f"template {self.key} needs {', '.join(sorted(missing))}")
        values = {k: str(v) for k, v in data.items()}
        return {
            "title_vi": self.title_vi.format(**values), "body_vi": self.body_vi.format(**values),
            "title_en": self.title_en.format(**values), "body_en": self.body_en.format(**values),
        }


TEMPLATES: dict[str, Template] = {}


def register(*templates: Template) -> None:
    for template in templates:
        TEMPLATES[template.key] = template


def get(key: str) -> Template:
    try:
        return TEMPLATES[key]
    except KeyError:
        raise InvalidInput.field("template", f"unknown template {key!r}") from None


# The city's own: announcements and emergency alerts written by staff, and a welcome.
register(
    Template("city.announcement", "{title_vi}", "{body_vi}", "{title_en}", "{body_en}"),
    Template("city.emergency", "Cảnh báo khẩn cấp: {title_vi}", "{body_vi}",
             "Emergency alert: {title_en}", "{body_en}"),
    Template("account.welcome", "Chào mừng {name} đến với iHaNoi", "Tài khoản của bạn đã sẵn sàng.",
             "Welcome to iHaNoi, {name}", "Your account is ready."),
)
