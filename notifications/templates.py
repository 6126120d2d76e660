"""Rendering the message templates that modules declare with their notification categories.

A module declares `NotificationCategory(name, title, templates=[Template(...)])` in its `Module(...)`;
`notify` renders both languages into the inbox row, and each device gets the language of its locale.
"""

from __future__ import annotations

from app.errors import InvalidInput
from modules import NotificationCategory, Template, Title
from modules.registry import REGISTRY


def get(key: str) -> Template:
    template = REGISTRY.template(key)
    if template is None:
        raise InvalidInput.field("template", f"unknown template {key!r}")
    return template


def render(key: str, data: dict[str, object]) -> dict[str, str]:
    try:
        return get(key).render(data)
    except ValueError as exc:
        raise InvalidInput.field("data", str(exc)) from None


def category_names() -> list[str]:
    """Every category a loaded module declared: what a resident may mute."""
    return list(REGISTRY.categories)


# The city's own: announcements and emergency alerts written by staff, and the account's messages.
CATEGORIES = (
    NotificationCategory("city", Title("Thông báo của thành phố", "City announcements"), templates=(
        Template("city.announcement", "{title_vi}", "{body_vi}", "{title_en}", "{body_en}"),
        Template("city.emergency", "Cảnh báo khẩn cấp: {title_vi}", "{body_vi}",
                 "Emergency alert: {title_en}", "{body_en}"),
    )),
    NotificationCategory("account", Title("Tài khoản", "Account"), templates=(
        Template("account.welcome", "Chào mừng {name} đến với iHaNoi", "Tài khoản của bạn đã sẵn sàng.",
                 "Welcome to iHaNoi, {name}", "Your account is ready."),
    )),
)
