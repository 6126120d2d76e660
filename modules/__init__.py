"""The module contract: what a domain package gives the kernel, and nothing more.

A domain exports `module = Module(...)`; `app/` only ever reads these fields. Routers are mounted
under the API, migrations are applied in catalog order after the kernel's, jobs run in
`ihanoi worker`, readiness checks join `/readyz`, and `seed` fills demo data for `ihanoi dev`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


@dataclass(frozen=True)
class Title:
    vi: str
    en: str


@dataclass(frozen=True)
class JobContext:
    """What a background job gets: the pool, the Redis client, the settings, a logger, and an event
    set when the worker is asked to stop (a long job checks it between batches and returns)."""

    pool: Any
    redis: Any
    settings: Any
    log: Any
    stopping: Any = None


@dataclass(frozen=True)
class Job:
    """A background job run by `ihanoi worker` every `every_seconds`, by one worker at a time."""

    name: str
    run: Callable[[JobContext], Awaitable[None]]
    every_seconds: float


# A readiness check gets the app's state; it raises (or returns False) when the module cannot serve.
ReadinessCheck = Callable[[Any], Awaitable[bool | None]]
# A seed gets a connection and a progress callback; it returns what it created, e.g. {"reports": 120}.
Seed = Callable[[Any, Callable[[str], None]], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True)
class Module:
    name: str
    title: Title
    icon: str
    routers: Sequence[Any] = ()
    migrations: Path | None = None
    min_identity_level: Literal[1, 2] = 1
    jobs: Sequence[Job] = ()
    readiness_checks: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    seed: Seed | None = None
    # Mounted only when IHANOI_ENV is dev or test: local stand-ins of outside services.
    dev_routers: Sequence[Any] = ()
    # Called in the same transaction when a resident's session ends (logout, revocation).
    on_session_end: Callable[[Any, Any], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"module name {self.name!r} must be lower_snake, 2-31 characters")
        if self.min_identity_level not in (1, 2):
            raise ValueError(f"module {self.name}: min_identity_level must be 1 or 2")
        if not self.routers:
            # The home screen shows only modules a resident can use: no placeholders.
            raise ValueError(f"module {self.name} has no routers; register it once it has endpoints")
        if self.migrations is not None and not self.migrations.is_dir():
            raise ValueError(f"module {self.name}: migrations folder {self.migrations} does not exist")
