"""The staff console: the web pages city staff, unit heads and admins work in (`/console`).

Server-rendered (Jinja2 through Litestar's template engine) with htmx for partial updates, Vietnamese first.
It signs people in through the same VNeID flow as the app and keeps their tokens server-side, behind a session
cookie (session.py); every form carries the session's CSRF token. It calls the domains' service functions
(feedback, notifications' broadcasts, identity's administration), never their tables, and serves the operator
pages other modules declare (`Module(console=[ConsolePage(...)])`, see modules/__init__.py).
"""

from console.module import module

__all__ = ["module"]
