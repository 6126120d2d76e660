"""SQL migrations: numbered files per module, applied in order under a PostgreSQL advisory lock.

Each file runs in its own transaction and is recorded with its SHA-256. Several processes may start
together: the advisory lock makes the others wait, and they then find nothing left to do. A file that
was changed after it was applied stops start-up: history is never rewritten, a new file is added.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("ihanoi.migrate")

# One constant key for the whole product: "iHaNoi" in ASCII.
ADVISORY_LOCK_KEY = 0x6948614E6F69
FILE_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    module      text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL,
    PRIMARY KEY (module, version)
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    module: str
    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.module}/{self.path.name}"


def discover(sources: Sequence[tuple[str, Path | None]]) -> list[Migration]:
    """Read every module's migrations folder, in module order and then by number."""
    found: list[Migration] = []
    for module, folder in sources:
        if folder is None or not folder.is_dir():
            continue
        seen: dict[int, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix != ".sql":
                continue
            match = FILE_NAME.match(path.name)
            if not match:
                raise MigrationError(f"{module}: migration file {path.name!r} must be named NNN_lower_snake.sql")
            version = int(match["version"])
            if version in seen:
                raise MigrationError(f"{module}: {path.name} and {seen[version].name} share number {version:03d}")
            seen[version] = path
            sql = path.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            found.append(Migration(module, version, match["name"], path, sql, checksum))
    return found


async def _applied(conn: asyncpg.Connection) -> dict[tuple[str, int], str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migration') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT module, version, checksum FROM schema_migration")
    return {(r["module"], r["version"]): r["checksum"] for r in rows}


def _check_history(migrations: list[Migration], applied: dict[tuple[str, int], str]) -> list[Migration]:
    """Refuse a changed or vanished applied file; give back what is left to apply."""
    on_disk = {(m.module, m.version): m for m in migrations}
    for key, checksum in applied.items():
        migration = on_disk.get(key)
        if migration is None:
            # A module that is no longer installed keeps its tables; only a gap inside a module is an error.
            if any(m.module == key[0] and m.version > key[1] for m in migrations):
                raise MigrationError(f"applied migration {key[0]}/{key[1]:03d} is missing from disk")
            continue
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.label} was changed after it was applied "
                f"(recorded sha256 {checksum[:12]}…, file now {migration.checksum[:12]}…). "
                "Restore the applied file and put the change in a new numbered migration."
            )
    return [m for m in migrations if (m.module, m.version) not in applied]


async def pending(conn: asyncpg.Connection, sources: Sequence[tuple[str, Path | None]]) -> list[Migration]:
    """Migrations not yet applied (raises MigrationError on a tampered history)."""
    return _check_history(discover(sources), await _applied(conn))


async def migrate(
    conn: asyncpg.Connection,
    sources: Sequence[tuple[str, Path | None]],
    *,
    progress: Callable[[Migration, int], None] | None = None,
) -> list[Migration]:
    """Apply what is pending, each file in its own transaction, holding the advisory lock throughout."""
    migrations = discover(sources)
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(CREATE_TABLE)
        todo = _check_history(migrations, await _applied(conn))
        done: list[Migration] = []
        for migration in todo:
            started = await conn.fetchval("SELECT clock_timestamp()")
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migration (module, version, name, checksum, duration_ms) "
                        "VALUES ($1, $2, $3, $4, "
                        "(extract(epoch FROM clock_timestamp() - $5::timestamptz) * 1000)::int)",
                        migration.module, migration.version, migration.name, migration.checksum, started,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
            log.info("migration applied", extra={"migration": migration.label})
            done.append(migration)
            if progress:
                progress(migration, len(todo))
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
