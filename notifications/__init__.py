"""Notifications: push through FCM, an in-app inbox, preferences and city broadcasts.

Other modules tell residents things with `notifications.notify(conn, ...)` inside their own transaction.
"""

from __future__ import annotations

from notifications.module import module
from notifications.service import notify

__all__ = ["module", "notify"]
