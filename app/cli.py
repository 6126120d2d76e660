"""The `ihanoi` command: dev, serve, migrate, worker, seed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TextIO, TypeVar

import asyncpg
import click
import msgspec

from app import migrate as migrations
from app.db import connect as db_connect
from app.logs import configure_logging
from app.settings import Settings, SettingsError, load_settings
from modules import JobContext

T = TypeVar("T")


def _echo(message: str) -> None:
    click.echo(message)
    sys.stdout.flush()


@contextlib.contextmanager
def _stdout_for_the_answer_only() -> Iterator[TextIO]:
    """For a command whose output is data: yields the real stdout, while file descriptor 1 points at stderr.

    Whatever else is printed meanwhile, by this process or a child (progress, the embedded servers), goes
    to stderr, so `$(ihanoi token)` or a JSON parser gets the answer alone.
    """
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    try:
        with open(os.dup(real), "w", encoding="utf-8") as answer:
            yield answer
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)
        os.close(real)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


@contextlib.contextmanager
def _services(settings: Settings) -> Iterator[Settings]:
    """Start the embedded PostgreSQL/Redis for whatever URL is missing, and stop them afterwards."""
    if not settings.embedded:
        yield settings
        return
    if settings.env == "prod":
        raise click.UsageError("IHANOI_ENV=prod needs DATABASE_URL and REDIS_URL; embedded servers are for dev")
    from app.embedded import EmbeddedServices

    started = time.monotonic()
    services = EmbeddedServices(
        settings.data_path, postgres=not settings.database_url, redis=not settings.redis_url
    )
    database_url, redis_url = services.start()
    try:
        what = [n for n, u in (("PostgreSQL", database_url), ("Redis", redis_url)) if u]
        _echo(f"embedded {' and '.join(what)} ready under {settings.data_path} "
              f"in {time.monotonic() - started:.1f}s")
        yield msgspec.structs.replace(
            settings,
            database_url=settings.database_url or database_url,
            redis_url=settings.redis_url or redis_url,
        )
    finally:
        services.stop()
        _echo("embedded services stopped")


async def _migrate(settings: Settings, *, quiet: bool = False) -> int:
    from app.asgi import migration_sources, resolve_modules

    modules = resolve_modules(settings)
    conn = await asyncpg.connect(settings.database_url, timeout=settings.db_timeout)
    try:
        def progress(migration: migrations.Migration, total: int) -> None:
            _echo(f"  applied {migration.label}")

        done = await migrations.migrate(conn, migration_sources(modules), progress=None if quiet else progress)
    finally:
        await conn.close()
    if not quiet:
        _echo(f"migrations: {len(done)} applied, database is up to date")
    return len(done)


async def _seed(settings: Settings) -> dict[str, int]:
    import inspect

    from app.asgi import resolve_modules
    from app.db import create_pool

    modules = [m for m in resolve_modules(settings) if m.seed is not None]
    if not modules:
        _echo("seed: no module has demo data yet")
        return {}
    totals: dict[str, int] = {}
    pool = await create_pool(settings.database_url, min_size=1, max_size=2, timeout=settings.db_timeout)
    try:
        for module in modules:
            extra = {"settings": settings} if "settings" in inspect.signature(module.seed).parameters else {}
            async with pool.acquire() as conn:
                created = await module.seed(conn, lambda line, m=module: _echo(f"  {m.name}: {line}"), **extra)
            for what, count in created.items():
                totals[f"{module.name}.{what}"] = count
                _echo(f"seed: {module.name} {what}: {count}")
    finally:
        await pool.close()
    return totals


def _exit_quietly_after_shutdown() -> threading.Event:
    """Note SIGTERM/SIGINT instead of dying on them.

    uvicorn shuts down gracefully on these signals and then raises them again; with the default
    handlers that would kill the process before the embedded servers are stopped, and exit -15.
    """
    requested = threading.Event()

    def note(signum, frame) -> None:
        requested.set()

    signal.signal(signal.SIGTERM, note)
    signal.signal(signal.SIGINT, note)
    return requested


def _fail(exc: Exception) -> None:
    _echo(f"error: {exc}")
    raise SystemExit(1)


class CommandContext(dict):
    """What `ihanoi` gives every command (`ctx.obj`): the data folder, and `run` for module commands."""

    def run(self, work: Callable[[JobContext], Awaitable[T]]) -> T:
        """Run `await work(ctx)` with the services up, migrations applied, a pool and Redis, like a job."""
        settings = _settings(data_dir=self["data_dir"])
        configure_logging("WARNING")
        with _services(settings) as settings:
            asyncio.run(_migrate(settings, quiet=True))
            return asyncio.run(_with_context(settings, work))


async def _with_context(settings: Settings, work: Callable[[JobContext], Awaitable[T]]) -> T:
    import logging

    from app import redisdb
    from app.db import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=4, timeout=settings.db_timeout)
    redis = redisdb.connect(settings.redis_url, prefix=settings.redis_prefix, cluster=settings.redis_cluster)
    try:
        return await work(JobContext(pool=pool, redis=redis, settings=settings, log=logging.getLogger("ihanoi.cli")))
    finally:
        await redis.close()
        await pool.close()


class IhanoiGroup(click.Group):
    """The kernel's commands, then each module's group under its name (`ihanoi feedback ...`)."""

    def _module_groups(self) -> dict[str, click.Command]:
        from app.asgi import resolve_modules

        try:
            modules = resolve_modules(load_settings())
        except (SettingsError, ValueError) as exc:  # the kernel's commands still work; say why
            click.echo(f"warning: module commands unavailable: {exc}", err=True)
            return {}
        return {m.name: m.cli for m in modules if m.cli is not None}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *sorted(self._module_groups())]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._module_groups().get(name)


@click.group(cls=IhanoiGroup)
@click.option("--data-dir", envvar="IHANOI_DATA_DIR", default=None, help="Folder of the embedded services.")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """iHaNoi backend: the city super-app API."""
    ctx.obj = CommandContext(data_dir=data_dir)


@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--seed/--no-seed", default=True, help="Load demo data before serving.")
@click.option("--worker/--no-worker", "with_worker", default=True,
              help="Run the background jobs (`ihanoi worker`) in the same process.")
@click.pass_context
def dev(ctx: click.Context, host: str | None, port: int | None, seed: bool, with_worker: bool) -> None:
    """Run locally: embedded PostgreSQL and Redis unless URLs are set, migrate, seed, serve and run the jobs."""
    import uvicorn

    from app.asgi import create_app, resolve_modules
    from app.worker import Worker

    settings = _settings(host=host, port=port, data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level)
    stop_requested = _exit_quietly_after_shutdown()
    began = time.monotonic()
    with _services(settings) as settings:
        try:
            asyncio.run(_migrate(settings))
            if seed:
                asyncio.run(_seed(settings))
        except (migrations.MigrationError, OSError, asyncpg.PostgresError) as exc:
            _fail(exc)
        if stop_requested.is_set():
            return
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(
            app, host=settings.host, port=settings.port, log_config=None, access_log=False,
            timeout_graceful_shutdown=int(settings.shutdown_timeout), lifespan="on",
        ))
        # The jobs `ihanoi worker` runs in production (the outbox, pushes, gate boardings, ...), here in the API's
        # event loop: started once the API serves, stopped with it (uvicorn takes SIGTERM and SIGINT, see below).
        job_runner = Worker(settings, resolve_modules(settings)) if with_worker else None
        worker_failed: list[BaseException] = []

        async def serve() -> None:
            worker_task: asyncio.Task | None = None

            async def run_worker() -> None:
                try:
                    await job_runner.run()
                except Exception as exc:  # a dev server whose jobs silently stopped is what this is here to avoid
                    worker_failed.append(exc)
                    _echo(f"worker failed: {exc!r}; stopping")
                    server.should_exit = True

            async def announce() -> None:
                nonlocal worker_task
                while not server.started:
                    if server.should_exit:
                        return
                    await asyncio.sleep(0.05)
                if job_runner is not None:
                    worker_task = asyncio.create_task(run_worker())
                base = f"http://{settings.host}:{settings.port}"
                _echo(f"iHaNoi API ready in {time.monotonic() - began:.1f}s")
                _echo(f"  API        {base}/v1/modules")
                _echo(f"  docs       {base}/schema")
                _echo(f"  readiness  {base}/readyz")
                _echo(f"  metrics    {base}/metrics")
                if job_runner is not None:
                    _echo(f"  worker     {len(job_runner.jobs)} job(s) in this process: "
                          f"{', '.join(j.name for j in job_runner.jobs) or 'none'}")
                else:
                    _echo("  worker     not running (--no-worker): run `ihanoi worker` for the jobs")
                _echo("  stop with Ctrl-C")

            async def stop_worker_with_the_server() -> None:
                # uvicorn's signal handler notes SIGTERM/SIGINT in a flag, should_exit: the worker stops as soon
                # as it is set (finishing and recording what it has in hand), alongside the API's graceful shutdown
                while not server.should_exit:  # noqa: ASYNC110 - a plain attribute, no event to wait on
                    await asyncio.sleep(0.1)
                if job_runner is not None:
                    job_runner.stop()

            announcer = asyncio.create_task(announce())
            watcher = asyncio.create_task(stop_worker_with_the_server())
            try:
                await server.serve()
            finally:
                announcer.cancel()
                watcher.cancel()
                if worker_task is not None:
                    job_runner.stop()
                    try:
                        await asyncio.wait_for(worker_task, timeout=settings.shutdown_timeout)
                    except TimeoutError:
                        _echo("worker did not stop in time; cancelled")
                    _echo(f"worker stopped; runs: {job_runner.runs}")

        asyncio.run(serve())
        if not server.started:
            _fail(RuntimeError(f"could not serve on {settings.host}:{settings.port} (see the log above)"))
        if worker_failed:
            raise SystemExit(1)


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None, help="API processes (default IHANOI_WORKERS or 1).")
@click.option("--migrate/--no-migrate", default=True, help="Apply pending migrations before serving.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None, migrate: bool) -> None:
    """Production: needs DATABASE_URL and REDIS_URL; runs N API processes."""
    import uvicorn

    settings = _settings(host=host, port=port, workers=workers, data_dir=ctx.obj["data_dir"])
    if settings.embedded:
        raise click.UsageError("`ihanoi serve` needs DATABASE_URL and REDIS_URL; `ihanoi dev` runs embedded ones")
    configure_logging(settings.log_level)
    if migrate:
        try:
            asyncio.run(_migrate(settings))
        except (migrations.MigrationError, OSError, asyncpg.PostgresError) as exc:
            _fail(exc)
    # The environment is what worker processes read their settings from.
    os.environ.update({k: str(v) for k, v in {
        "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
        "IHANOI_HOST": settings.host, "IHANOI_PORT": settings.port,
    }.items()})
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics must add up every process, whichever one answers the scrape.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ihanoi-metrics-")
    _echo(f"serving on http://{settings.host}:{settings.port} with {settings.workers} process(es)")
    _exit_quietly_after_shutdown()
    uvicorn.run(
        "app.asgi:create_app_from_env", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level)
    with _services(settings) as settings:
        try:
            asyncio.run(_migrate(settings))
        except (migrations.MigrationError, OSError, asyncpg.PostgresError) as exc:
            _fail(exc)


@main.command()
@click.pass_context
def seed(ctx: click.Context) -> None:
    """Load demo data (idempotent)."""
    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level)
    with _services(settings) as settings:
        asyncio.run(_migrate(settings))
        asyncio.run(_seed(settings))


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the background jobs of all modules until SIGTERM."""
    from app.asgi import resolve_modules
    from app.worker import Worker, install_signal_handlers

    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level)
    with _services(settings) as settings:
        job_runner = Worker(settings, resolve_modules(settings))
        _echo(f"worker: {len(job_runner.jobs)} job(s): {', '.join(j.name for j in job_runner.jobs) or 'none yet'}")

        async def run() -> None:
            install_signal_handlers(job_runner)
            await job_runner.run()

        # uvloop when installed (uvicorn[standard] brings it; `ihanoi serve` runs on it too): the push sender's
        # socket work and the loop's own turns cost about a third less CPU than on asyncio's loop
        _event_loop_runner()(run())
        _echo(f"worker stopped; runs: {job_runner.runs}")


def _event_loop_runner():
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


@main.command("settings")
def settings_table() -> None:
    """Print every environment variable (the kernel's and each module's) as the README's tables."""
    _echo(configuration_markdown())


def configuration_markdown() -> str:
    """The README's configuration tables: the kernel's variables, then each catalog module's."""
    from app.asgi import resolve_modules
    from app.settings import ENV_VARS

    def table(rows) -> list[str]:
        return ["| Variable | Meaning |", "| --- | --- |", *(f"| `{var}` | {doc} |" for var, (_, doc) in rows)]

    lines = ["Kernel:", "", *table(ENV_VARS.items())]
    for module in resolve_modules(load_settings({})):
        if module.settings is not None:
            lines += ["", f"Module `{module.name}`:", "", *table(module.settings.env.items())]
    return "\n".join(lines)

@main.group("partitions")
def partitions_group() -> None:
    """The time-partitioned tables modules declare."""


@partitions_group.command("maintain")
@click.pass_context
def partitions_maintain(ctx: click.Context) -> None:
    """Create the months ahead and detach or drop months past retention; print what was done."""
    from app import partitions
    from app.asgi import resolve_modules

    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging("WARNING")
    with _services(settings) as settings:
        enabled = [m for m in resolve_modules(settings) if m.name not in settings.modules_disabled]

        async def work() -> list[str]:
            await _migrate(settings, quiet=True)
            conn = await asyncpg.connect(settings.database_url)
            try:
                return await partitions.maintain(conn, partitions.declared(enabled), settings)
            finally:
                await conn.close()

        try:
            done = asyncio.run(work())
        except (migrations.MigrationError, OSError, asyncpg.PostgresError) as exc:
            _fail(exc)
        for line in done:
            _echo(line)
        if not done:
            _echo("partitions: nothing to do")


# ---- identity commands ---------------------------------------------------------------------------------


def _vault(settings: Settings):
    from app.identity.crypto import Vault, load_master_key

    return Vault(load_master_key(settings.master_key, env=settings.env, data_dir=settings.data_path))


def _identity_command(ctx: click.Context, work) -> None:
    """Run `work(settings)` with the services up and migrations applied."""
    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging("WARNING")
    with _services(settings) as settings:
        try:
            asyncio.run(_migrate(settings, quiet=True))
            asyncio.run(work(settings))
        except (migrations.MigrationError, OSError, asyncpg.PostgresError) as exc:
            _fail(exc)


def _parse_role(text: str) -> tuple[str, str]:
    role, _, scope = text.partition(":")
    return role, scope


@main.command()
@click.option("--personal-id", required=True, help="12-digit personal ID number of the resident.")
@click.option("--level", type=click.IntRange(1, 2), default=2, show_default=True, help="VNeID identity level.")
@click.option("--role", "roles", multiple=True, help="Grant ROLE[:SCOPE] first, e.g. staff:phuong-hoan-kiem.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole token answer as JSON.")
@click.pass_context
def token(ctx: click.Context, personal_id: str, level: int, roles: tuple[str, ...], as_json: bool) -> None:
    """Dev and test only: sign in through the local VNeID stand-in and print an access token."""
    if _settings(data_dir=ctx.obj["data_dir"]).env not in ("dev", "test"):
        raise click.UsageError("`ihanoi token` exists only when IHANOI_ENV is dev or test")

    async def work(settings: Settings) -> None:
        import httpx

        from app.asgi import create_app
        from app.identity import service
        from app.identity.devlogin import sign_in
        from app.identity.models import GrantRequest

        transport = httpx.ASGITransport(app=None)
        app = create_app(settings, idp_transport=transport)
        transport.app = app
        async with app.lifespan():
            rt = app.state.identity
            async with app.state.pool.acquire() as conn:
                for text in roles:
                    role, scope = _parse_role(text)
                    resident = await service.resident_for_personal_id(rt, conn, personal_id, create=True)
                    await service.grant_role(rt, conn, actor="cli", resident_id=resident["id"],
                                             request=GrantRequest(resident_id=str(resident["id"]), role=role,
                                                                  scope=scope), request_id=None)
            async with httpx.AsyncClient(transport=transport, base_url=settings.base_url()) as client:
                answer = await sign_in(client, personal_id, level=level)
        if answer.status_code != 200:
            _fail(RuntimeError(f"sign-in refused: {answer.text}"))
        click.echo(answer.text if as_json else answer.json()["access_token"], file=out)
        out.flush()

    with _stdout_for_the_answer_only() as out:
        _identity_command(ctx, work)


@main.group()
def keys() -> None:
    """The backend's token-signing keys."""


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Add a signing key; the old ones keep verifying for the longest token lifetime, then retire."""

    async def work(settings: Settings) -> None:
        from app.identity.tokens import rotate_keys

        keep = max(settings.access_token_ttl, settings.client_token_ttl) + 60
        conn = await db_connect(settings.database_url)
        try:
            kid, retiring = await rotate_keys(conn, _vault(settings), keep_old_for=keep)
        finally:
            await conn.close()
        _echo(f"signing key {kid} now signs; retiring in {keep} s: {', '.join(retiring) or 'none'}")

    _identity_command(ctx, work)


@main.group()
def clients() -> None:
    """Machine clients: validators, parking gates, facility systems."""


@clients.command("add")
@click.option("--id", "client_id", required=True, help="Client id, e.g. validator-bus-0042.")
@click.option("--name", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="ROLE[:SCOPE], e.g. validator:hanoibus.")
@click.option("--scope", default="", help="Space-separated OAuth scope given to its tokens.")
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False),
              help="PEM public key of the device. Without it a key pair is made and the private key printed.")
@click.pass_context
def clients_add(ctx: click.Context, client_id: str, name: str, roles: tuple[str, ...], scope: str,
                public_key: str | None) -> None:
    """Register a machine client that signs in with private_key_jwt (client credentials)."""
    import json as jsonlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    private_pem = None
    if public_key:
        key = serialization.load_pem_public_key(open(public_key, "rb").read())
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        key = private.public_key()
        private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
    for algorithm in (ECAlgorithm, OKPAlgorithm, RSAAlgorithm):
        try:
            jwk = jsonlib.loads(algorithm.to_jwk(key))
            break
        except Exception:  # noqa: S112 - try the next key type
            continue
    else:
        raise click.UsageError("unsupported public key type")

    async def work(settings: Settings) -> None:
        from app.errors import DomainError
        from app.identity import service

        conn = await db_connect(settings.database_url)
        try:
            await service.add_client(conn, client_id=client_id, name=name, roles=list(roles), scope=scope,
                                     public_jwk=jwk)
        except DomainError as exc:
            _fail(RuntimeError(exc.detail or exc.slug))
        finally:
            await conn.close()
        _echo(f"client {client_id} added with roles {', '.join(roles)}; token endpoint {settings.base_url()}"
              "/oauth/token (private_key_jwt, assertions of at most 120 s)")
        if private_pem:
            _echo("its private key (install it on the device; it is not stored here):")
            _echo(private_pem.rstrip())

    _identity_command(ctx, work)


@main.group()
def admin() -> None:
    """Administration from the command line."""


@admin.command("grant")
@click.option("--personal-id", required=True, help="12-digit personal ID number (the resident may not exist yet).")
@click.option("--role", required=True, help="ROLE[:SCOPE], e.g. admin or staff:phuong-hoan-kiem.")
@click.pass_context
def admin_grant(ctx: click.Context, personal_id: str, role: str) -> None:
    """Grant a role, e.g. bootstrap the first admin (audited as granted by `cli`)."""

    async def work(settings: Settings) -> None:
        import getpass

        from app.errors import DomainError
        from app.identity import service
        from app.identity.models import GrantRequest
        from app.identity.personal_id import mask_personal_id
        from app.identity.service import IdentityRuntime
        from app.identity.units import load_units

        name, scope = _parse_role(role)
        rt = IdentityRuntime(settings=settings, vault=_vault(settings), keys=None, revoked=None, provider=None,
                             units=load_units(), provider_issuer="", settings_client_id="", settings_client_secret="")
        conn = await db_connect(settings.database_url)
        try:
            resident = await service.resident_for_personal_id(rt, conn, personal_id, create=True)
            grant, created = await service.grant_role(
                rt, conn, actor=f"cli:{getpass.getuser()}", resident_id=resident["id"],
                request=GrantRequest(resident_id=str(resident["id"]), role=name, scope=scope), request_id=None)
        except DomainError as exc:
            _fail(RuntimeError(exc.detail or exc.slug))
        finally:
            await conn.close()
        what = "granted" if created else "already held"
        _echo(f"{grant.role}{':' + grant.scope if grant.scope else ''} {what} for resident "
              f"{grant.resident_id} ({mask_personal_id(personal_id)}), grant #{grant.id}")

    _identity_command(ctx, work)


if __name__ == "__main__":
    main()
