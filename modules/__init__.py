"""The module contract: what a domain package gives the kernel, and nothing more.

A domain exports `module = Module(...)` and is listed by one line in `modules/catalog.py`; `app/`
only ever reads these fields. Everything a module brings is declared here, so adding one needs no
edit anywhere else:

- routers are mounted under the API (each route of a level-2 module refuses a level-1 resident with
  `step-up-required` unless the route says `identity_level=1` in its opt);
- migrations are applied in catalog order after the kernel's;
- problems are the module's problem types (slug, HTTP status, vi/en titles) for `DomainError`s;
- roles are the roles the module's staff or machine clients hold, and what their scope names;
- notification categories are what a resident may mute, each with its message templates;
- settings are the module's environment variables (a msgspec Struct and the variables' docs), read by
  `settings.of(name)`; the README's configuration table lists them (a test checks);
- cli is a click group mounted as `ihanoi <name> ...`;
- live channels are the Redis pub/sub channels it streams on (`app.live`);
- jobs run in `ihanoi worker`, readiness checks join `/readyz`, and `seed` fills demo data;
- partitions are the module's tables that grow without end, partitioned by time (`TimePartitions`): the
  module's migration converts the table (native RANGE partitioning on the time column, a DEFAULT partition),
  and the kernel's `kernel.partitions` job (`ihanoi partitions maintain`) keeps `ahead` months of partitions
  ready and detaches (or drops) months older than the table's retention setting;
- console pages are the module's operator pages in the staff console (`/console`, the `console` package):
  `console=[ConsolePage("items", Title(...), render, roles=("fixture_keeper",), act=act, templates=folder)]`.
  The console signs the person in (VNeID, session cookie), checks they hold one of `roles` (any scope;
  the page checks the scope itself, as every service does), lists the page in its menu and serves it at
  `/console/m/<module>/<slug>` inside its layout, with its headers (CSP without inline scripts, no-store).
  `render(view)` gets a `ConsoleView` (the connection, the caller, the language, the query string, a CSRF
  token and `view.render(template, **values)`, Jinja2 with autoescaping over `templates`) and returns the
  page's HTML. A form on the page posts back to the same URL with `view.csrf_field`; the console refuses
  it without the session's token, then calls `act(view, form)` inside a transaction (an error rolls it
  back and is shown on the page) and shows what `act` returns as the outcome.
"""

from __future__ import annotations

import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_ENV = re.compile(r"^[A-Z][A-Z0-9_]+$")


@dataclass(frozen=True)
class Title:
    vi: str
    en: str


@dataclass(frozen=True)
class JobContext:
    """What a background job or a module's command gets: the pool, the Redis client, the settings, a
    logger, and an event set when the worker is asked to stop (a long job checks it between batches)."""

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


@dataclass(frozen=True)
class ProblemType:
    """A problem type the module's errors answer with: `urn:ihanoi:problem:<slug>`."""

    slug: str
    status: int
    title: Title

    def __post_init__(self) -> None:
        if not _SLUG.match(self.slug):
            raise ValueError(f"problem slug {self.slug!r} must be lower-kebab")
        if not 400 <= self.status <= 599:
            raise ValueError(f"problem {self.slug}: status {self.status} is not an error status")


# What a role's scope names: nothing (admin), one of the city's units (a ward, a department; the role
# then covers the unit's children too), or one of the module's own records named by a slug (an operator,
# a facility).
ScopeKind = Literal["none", "unit", "record"]


@dataclass(frozen=True)
class Role:
    name: str
    title: Title
    scope: ScopeKind
    scope_doc: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"role name {self.name!r} must be lower_snake")
        if self.scope not in ("none", "unit", "record"):
            raise ValueError(f"role {self.name}: scope must be none, unit or record")


@dataclass(frozen=True)
class Template:
    """A message in Vietnamese and English with named `{variables}`."""

    key: str
    title_vi: str
    body_vi: str
    title_en: str
    body_en: str

    def variables(self) -> set[str]:
        names: set[str] = set()
        for text in (self.title_vi, self.body_vi, self.title_en, self.body_en):
            names |= {name for _, name, _, _ in string.Formatter().parse(text) if name}
        return names

    def render(self, data: Mapping[str, object]) -> dict[str, str]:
        """Both languages; a missing variable is the caller's bug (ValueError naming it)."""
        missing = self.variables() - set(data)
        if missing:
            raise ValueError(f"template {self.key} needs {', '.join(sorted(missing))}")
        values = {k: str(v) for k, v in data.items()}
        return {
            "title_vi": self.title_vi.format(**values), "body_vi": self.body_vi.format(**values),
            "title_en": self.title_en.format(**values), "body_en": self.body_en.format(**values),
        }


@dataclass(frozen=True)
class NotificationCategory:
    """A kind of message a resident may mute (push per category), with the templates sent under it."""

    name: str
    title: Title
    templates: Sequence[Template] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"notification category {self.name!r} must be lower_snake")
        for template in self.templates:
            if not template.key.startswith(self.name + "."):
                raise ValueError(f"template {template.key!r} must start with its category {self.name}.")


@dataclass(frozen=True)
class Settings:
    """A module's environment variables: `type` is a frozen msgspec Struct whose fields all have defaults,
    `env` maps each variable to (field, what it means) for the README's table."""

    type: type
    env: Mapping[str, tuple[str, str]]

    def __post_init__(self) -> None:
        import msgspec

        fields = {f.name for f in msgspec.structs.fields(self.type)}
        for var, (name, doc) in self.env.items():
            if not _ENV.match(var):
                raise ValueError(f"setting {var} must be an upper-case environment variable name")
            if name not in fields:
                raise ValueError(f"setting {var} names {name!r}, not a field of {self.type.__name__}")
            if not doc:
                raise ValueError(f"setting {var} needs its documentation")


@dataclass(frozen=True)
class LiveChannel:
    """A stream the module publishes on (`app.live`); `keyed` channels have one instance per key
    (one resident's inbox), others are shared by every listener (city broadcasts, a lot's free spaces)."""

    name: str
    doc: str
    keyed: bool = False


@dataclass
class ConsoleView:
    """What a console page's `render` and `act` get (built by the console for each request)."""

    conn: Any
    principal: Any  # app.identity.Principal: who is signed in to the console
    language: Literal["vi", "en"]
    query: Mapping[str, str]
    state: Any  # the app's state (identity, redis, settings)
    csrf_token: str
    render: Callable[..., str]  # render(template_name, **values) -> HTML, autoescaped

    @property
    def csrf_field(self) -> str:
        """The hidden input every form of the page carries (already HTML)."""
        from markupsafe import Markup

        return Markup('<input type="hidden" name="csrf" value="{}">').format(self.csrf_token)

    def pick(self, vi: str, en: str) -> str:
        return en if self.language == "en" else vi


@dataclass(frozen=True)
class ConsolePage:
    """An operator page of the module in the staff console: `/console/m/<module>/<slug>`."""

    slug: str
    title: Title
    render: Callable[[ConsoleView], Awaitable[str]]
    # the person needs one of these roles (any scope) to see the page and its menu entry
    roles: Sequence[str] = ()
    act: Callable[[ConsoleView, Mapping[str, str]], Awaitable[str | None]] | None = None
    templates: Path | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.slug.replace("-", "_")):
            raise ValueError(f"console page {self.slug!r} must be lower-kebab or lower_snake")
        if not self.roles:
            raise ValueError(f"console page {self.slug}: name the roles that may open it")
        if self.templates is not None and not self.templates.is_dir():
            raise ValueError(f"console page {self.slug}: templates folder {self.templates} does not exist")


@dataclass(frozen=True)
class TimePartitions:
    """A table partitioned by RANGE on a time column, one partition per month named `<table>_pYYYYMM`.

    `retention_setting` names a field of the module's settings holding the months to keep (0 or unset: keep
    every month). Past the retention a month is detached (`expire="detach"`: the table stays, out of the
    partitioned table, for archiving; what the law wants kept) or dropped (`expire="drop"`). `before_expire`, when
    given, is awaited with (connection, the month's partition name) in the job's transaction just before: to save
    what must outlive the month (the health access log keeps its hash chain's anchors)."""

    table: str
    column: str
    interval: Literal["month"] = "month"
    ahead: int = 3
    retention_setting: str | None = None
    expire: Literal["detach", "drop"] = "detach"
    before_expire: Callable[[Any, str], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        for name in (self.table, self.column):
            if not re.match(r"^[a-z][a-z0-9_]{1,50}$", name):
                raise ValueError(f"partitioned table or column {name!r} must be lower_snake, at most 51 characters")
        if self.interval != "month":
            raise ValueError(f"{self.table}: only monthly partitions are supported")
        if not 0 <= self.ahead <= 36:
            raise ValueError(f"{self.table}: ahead must be 0..36 months")
        if self.expire not in ("detach", "drop"):
            raise ValueError(f"{self.table}: expire must be detach or drop")


# A readiness check gets the app's state; it raises (or returns False) when the module cannot serve.
ReadinessCheck = Callable[[Any], Awaitable[bool | None]]
# A seed gets a connection and a progress callback; it returns what it created, e.g. {"reports": 120}. A seed
# that declares a keyword `settings` gets the app's settings too (a module sealing demo data with its own key).
Seed = Callable[[Any, Callable[[str], None]], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True)
class Module:
    name: str
    title: Title
    icon: str
    routers: Sequence[Any] = ()
    migrations: Path | None = None
    # The identity level a resident needs for this module's routes (VNeID level 2 for health records).
    min_identity_level: Literal[1, 2] = 1
    jobs: Sequence[Job] = ()
    readiness_checks: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    seed: Seed | None = None
    # Mounted only when IHANOI_ENV is dev or test: local stand-ins of outside services.
    dev_routers: Sequence[Any] = ()
    # Called in the same transaction when a resident's session ends (logout, revocation).
    on_session_end: Callable[[Any, Any], Awaitable[None]] | None = None
    problems: Sequence[ProblemType] = ()
    roles: Sequence[Role] = ()
    notification_categories: Sequence[NotificationCategory] = ()
    settings: Settings | None = None
    cli: Any = None  # a click.Group, mounted as `ihanoi <its name>`
    live: Sequence[LiveChannel] = ()
    console: Sequence[ConsolePage] = ()
    partitions: Sequence[TimePartitions] = ()
    # False for a module residents never open (the staff console): it is left off the home screen's list.
    home_screen: bool = True

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
        if self.cli is not None and not hasattr(self.cli, "add_command"):
            raise ValueError(f"module {self.name}: cli must be a click group")
        for spec in self.partitions:
            if spec.retention_setting is not None:
                import msgspec

                fields = () if self.settings is None else {f.name for f in msgspec.structs.fields(self.settings.type)}
                if spec.retention_setting not in fields:
                    raise ValueError(f"module {self.name}: partitions of {spec.table} name retention setting "
                                     f"{spec.retention_setting!r}, not one of the module's settings")
        slugs = [page.slug for page in self.console]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"module {self.name}: console page slugs must be unique: {slugs}")
