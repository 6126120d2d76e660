"""Notifications: push through FCM, an in-app inbox, preferences and city broadcasts."""

from __future__ import annotations

from notifications.module import module
from notifications.service import notify

__all__ = ["module", "notify"]
