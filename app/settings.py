"""Settings read once from the environment into a msgspec Struct.

These are the kernel's variables; each module declares its own (`Module(settings=...)`, read with
`settings.of(name)`). `ENV_VARS` and the modules' declarations are the single source of the README's
configuration tables (`ihanoi settings --markdown` prints them; a test checks they agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

Environment = Literal["dev", "test", "prod"]

# name of the variable -> (field, description)
ENV_VARS: dict[str, tuple[str, str]] = {
    "IHANOI_ENV": ("env", "`dev`, `test` or `prod`; `prod` refuses to start embedded services"),
    "DATABASE_URL": ("database_url", "PostgreSQL URL; unset = embedded PostgreSQL under the data folder"),
    "DATABASE_REPLICA_URL": ("database_replica_url", "PostgreSQL streaming replica URL for reads that may lag (README, Read replica); unset = all reads from `DATABASE_URL`"),
    "REDIS_URL": ("redis_url", "Redis URL; unset = embedded Redis under the data folder"),
    "IHANOI_REDIS_CLUSTER": ("redis_cluster", "`true` when `REDIS_URL` points at a Redis Cluster"),
    "IHANOI_REDIS_PREFIX": ("redis_prefix", "prefix of every Redis key this deployment writes"),
    "IHANOI_DATA_DIR": ("data_dir", "folder of the embedded PostgreSQL and Redis (default `./.ihanoi`)"),
    "IHANOI_HOST": ("host", "address the HTTP server binds (default `127.0.0.1`)"),
    "IHANOI_PORT": ("port", "port the HTTP server binds (default `8000`)"),
    "IHANOI_WORKERS": ("workers", "API processes started by `ihanoi serve` (default 1)"),
    "IHANOI_DB_POOL_MIN": ("db_pool_min", "smallest asyncpg pool per process"),
    "IHANOI_DB_POOL_MAX": ("db_pool_max", "largest asyncpg pool per process"),
    "IHANOI_DB_TIMEOUT": ("db_timeout", "seconds to wait for a pooled connection or a health query"),
    "IHANOI_LOG_LEVEL": ("log_level", "`DEBUG`, `INFO`, `WARNING` or `ERROR`"),
    "IHANOI_MODULES": ("modules", "comma-separated module names in home-screen order (default: catalog order)"),
    "IHANOI_EXTRA_MODULES": ("extra_modules", "comma-separated `package:attribute` modules loaded after the catalog"),
    "IHANOI_MODULES_DISABLED": ("modules_disabled", "comma-separated modules shown as disabled, routes off"),
    "IHANOI_SHUTDOWN_TIMEOUT": ("shutdown_timeout", "seconds to finish in-flight requests after SIGTERM"),
    "IHANOI_PUBLIC_URL": ("public_url", "external base URL printed by `ihanoi dev` and used in links"),
    "IHANOI_MASTER_KEY": ("master_key", "32 random bytes, base64: encrypts personal IDs, signing keys (prod: required)"),
    "IHANOI_OIDC_ISSUER": ("oidc_issuer", "VNeID issuer URL (dev/test default: the local stand-in, `/stand-in/vneid`)"),
    "IHANOI_OIDC_CLIENT_ID": ("oidc_client_id", "this backend's client id at the identity provider"),
    "IHANOI_OIDC_CLIENT_SECRET": ("oidc_client_secret", "this backend's client secret at the identity provider"),
    "IHANOI_OIDC_REDIRECT_URI": ("oidc_redirect_uri", "redirect URI registered at the provider (default: our callback)"),
    "IHANOI_ACCESS_TOKEN_TTL": ("access_token_ttl", "seconds an access token lives (default 600)"),
    "IHANOI_REFRESH_TOKEN_TTL": ("refresh_token_ttl", "seconds a refresh token lives unused (default 30 days)"),
    "IHANOI_REFRESH_GRACE": ("refresh_grace", "seconds a just-spent refresh token may be retried (default 10)"),
    "IHANOI_CLIENT_TOKEN_TTL": ("client_token_ttl", "seconds a machine client's access token lives (default 300)"),
    "IHANOI_RATE_LOGIN": ("rate_login", "login attempts per client address, `COUNT/SECONDS` (default 30/60)"),
    "IHANOI_RATE_REFRESH": ("rate_refresh", "refreshes per client address, `COUNT/SECONDS` (default 60/60)"),
    "IHANOI_RATE_CLIENT_TOKEN": ("rate_client_token", "verified client-token requests per client, failed ones per address, `COUNT/SECONDS` (default 30/60)"),
    "IHANOI_UNITS_FILE": ("units_file", "CSV of organisational units replacing the shipped directory"),
    "PROMETHEUS_MULTIPROC_DIR": ("metrics_dir", "set with several workers so /metrics adds up all processes"),
    "IHANOI_METRICS_TOKEN": ("metrics_token", "outside dev/test, /metrics answers only loopback callers or `Authorization: Bearer <this token>`"),
}


_OF_CACHE: dict[tuple[int, str], tuple[Any, Any]] = {}


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    env: Environment = "dev"
    database_url: str | None = None
    database_replica_url: str | None = None
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_prefix: str = "ihanoi:"
    data_dir: str = ".ihanoi"
    host: str = "127.0.0.1"
    port: int = msgspec.field(default=8000)
    workers: int = 1
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout: float = 5.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    modules: tuple[str, ...] = ()
    modules_disabled: tuple[str, ...] = ()
    extra_modules: tuple[str, ...] = ()
    shutdown_timeout: float = 10.0
    public_url: str | None = None
    metrics_dir: str | None = None
    metrics_token: str | None = None
    master_key: str | None = None
    oidc_issuer: str | None = None
    oidc_client_id: str = "ihanoi-backend"
    oidc_client_secret: str = "dev-only-secret"
    oidc_redirect_uri: str | None = None
    access_token_ttl: int = 600
    refresh_token_ttl: int = 30 * 24 * 3600
    refresh_grace: int = 10
    client_token_ttl: int = 300
    rate_login: str = "30/60"
    rate_refresh: str = "60/60"
    rate_client_token: str = "30/60"
    units_file: str | None = None
    # The environment as it was read, for the modules' own settings (`of`); not shown by repr.
    environ: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__struct_fields__ if f != "environ")
        return f"Settings({shown})"

    def of(self, module: str) -> Any:
        """The settings a module declared (`Module(settings=...)`), read from the same environment.

        Read once per settings object and module (handlers ask on every request): settings are frozen, and
        `environ` is the environment as it was read."""
        key = (id(self), module)
        known = _OF_CACHE.get(key)
        if known is not None and known[0] is self:
            return known[1]
        value = self._read_module(module)
        if len(_OF_CACHE) >= 256:  # tests build many settings; a serving process has one
            _OF_CACHE.clear()
        _OF_CACHE[key] = (self, value)
        return value

    def _read_module(self, module: str) -> Any:
        from modules.registry import REGISTRY

        spec = REGISTRY.settings.get(module)
        if spec is None:
            raise SettingsError(f"module {module} declares no settings")
        raw = {name: self.environ[var] for var, (name, _) in spec.env.items() if self.environ.get(var)}
        try:
            return msgspec.convert(raw, spec.type, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"invalid configuration {_variable(exc, spec.env)}: {exc}") from None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def embedded(self) -> bool:
        """True when at least one of PostgreSQL and Redis must be started by us."""
        return not (self.database_url and self.redis_url)

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def stand_in_enabled(self) -> bool:
        """The local VNeID stand-in exists only in dev and test."""
        return self.env in ("dev", "test")

    def identity_issuer(self) -> str:
        return (self.oidc_issuer or self.base_url() + "/stand-in/vneid").rstrip("/")


_LIST_FIELDS = {"modules", "modules_disabled", "extra_modules"}


class SettingsError(ValueError):
    pass


def load_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment; a bad value stops start-up with the variable's name."""
    environ = dict(os.environ if environ is None else environ)
    raw: dict[str, object] = {}
    for var, (field, _) in ENV_VARS.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        if field in _LIST_FIELDS:
            raw[field] = tuple(part.strip() for part in value.split(",") if part.strip())
        else:
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid configuration {_variable(exc, ENV_VARS)}: {exc}") from None
    return msgspec.structs.replace(settings, environ=environ)


def _variable(exc: msgspec.ValidationError, env: Mapping[str, tuple[str, str]]) -> str:
    field = str(exc).rsplit("`$.", 1)[-1].rstrip("`")
    return next((v for v, (f, _) in env.items() if f == field), field)
