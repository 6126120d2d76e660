"""Migrations: ordered, one transaction each, under an advisory lock, with tamper detection."""

from __future__ import annotations

import subprocess

import asyncpg
import pytest

from app import migrate
from app.asgi import migration_sources
from tests.conftest import EXTRA_MODULES, IHANOI, ROOT, TEST_MODULES, process_env


def run_migrate(database_url: str, redis_url: str) -> subprocess.Popen:
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_EXTRA_MODULES=EXTRA_MODULES)
    return subprocess.Popen([*IHANOI, "migrate"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def recorded(url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT module, version FROM schema_migration ORDER BY module, version")
        return [(r["module"], r["version"]) for r in rows]
    finally:
        await conn.close()


async def test_two_migrate_processes_at_once(databases, redis_url):
    url = await databases.create("race")
    first, second = run_migrate(url, redis_url), run_migrate(url, redis_url)
    outputs = [proc.communicate(timeout=60) for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    stdout = [out for out, _ in outputs]
    # one process applied every file while the other waited on the lock and found nothing to do
    # every file of the kernel, the catalog's modules and the two fixture modules, numbered from 1
    files = sorted((name, int(f.name[:3])) for name, folder in migration_sources(TEST_MODULES) if folder
                   for f in folder.glob("*.sql"))
    assert len(files) >= 8 and ("app", 1) in files and ("fixture", 2) in files
    assert sorted(s.splitlines()[-1] for s in stdout) == [
        "migrations: 0 applied, database is up to date",
        f"migrations: {len(files)} applied, database is up to date",
    ]
    assert await recorded(url) == files
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'fixture_item' ORDER BY 1")
        assert [c["column_name"] for c in columns] == ["created_at", "id", "name", "quantity"]
    finally:
        await conn.close()


async def test_lock_makes_a_second_runner_wait(databases):
    url = await databases.create("lock")
    holder = await asyncpg.connect(url)
    runner = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", migrate.ADVISORY_LOCK_KEY)
        import asyncio

        task = asyncio.create_task(migrate.migrate(runner, migration_sources(TEST_MODULES)))
        await asyncio.sleep(0.5)
        assert not task.done()  # waiting for the lock, nothing applied
        assert await holder.fetchval("SELECT to_regclass('fixture_item')") is None
        await holder.execute("SELECT pg_advisory_unlock($1)", migrate.ADVISORY_LOCK_KEY)
        done = await asyncio.wait_for(task, 30)
        # the kernel's files first, then each module's in catalog order, each folder's in number order
        expected = [f"{name}/{f.name}" for name, folder in migration_sources(TEST_MODULES) if folder
                    for f in sorted(folder.glob("*.sql"))]
        assert [m.label for m in done] == expected
        assert expected[0] == "app/001_identity.sql" and expected[-1] == "fixture/002_fixture_item_created_at.sql"
    finally:
        await holder.close()
        await runner.close()


async def test_tampered_applied_migration_stops_the_cli(databases, redis_url):
    url = await databases.create("tamper")
    proc = run_migrate(url, redis_url)
    assert proc.wait(60) == 0
    conn = await asyncpg.connect(url)
    try:  # as if 001 had been edited after it ran
        await conn.execute(
            "UPDATE schema_migration SET checksum = repeat('0', 64) WHERE module = 'fixture' AND version = 1")
    finally:
        await conn.close()
    proc = run_migrate(url, redis_url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "migration fixture/001_create_fixture_item.sql was changed after it was applied" in out
    assert "new numbered migration" in out


async def test_edited_file_is_refused_and_new_file_applied(databases, tmp_path):
    url = await databases.create("edit")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_create_lot.sql").write_text("CREATE TABLE lot (id int PRIMARY KEY);\n")
    sources = [("lots", folder)]
    conn = await asyncpg.connect(url)
    try:
        assert [m.label for m in await migrate.migrate(conn, sources)] == ["lots/001_create_lot.sql"]
        assert await migrate.migrate(conn, sources) == []  # idempotent
        (folder / "002_lot_name.sql").write_text("ALTER TABLE lot ADD COLUMN name text;\n")
        assert [m.label for m in await migrate.pending(conn, sources)] == ["lots/002_lot_name.sql"]
        assert [m.label for m in await migrate.migrate(conn, sources)] == ["lots/002_lot_name.sql"]
        (folder / "001_create_lot.sql").write_text("CREATE TABLE lot (id bigint PRIMARY KEY);\n")
        with pytest.raises(migrate.MigrationError, match="lots/001_create_lot.sql was changed"):
            await migrate.migrate(conn, sources)
        with pytest.raises(migrate.MigrationError, match="was changed"):
            await migrate.pending(conn, sources)
    finally:
        await conn.close()


async def test_failing_file_rolls_back_alone(databases, tmp_path):
    url = await databases.create("fail")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_create_lot.sql").write_text("CREATE TABLE lot (id int PRIMARY KEY);")
    (folder / "002_broken.sql").write_text("CREATE TABLE lot_note (id int);\nALTER TABLE nope ADD COLUMN x int;")
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(migrate.MigrationError, match="lots/002_broken.sql failed"):
            await migrate.migrate(conn, [("lots", folder)])
        rows = await conn.fetch("SELECT version FROM schema_migration")
        assert [r["version"] for r in rows] == [1]
        assert await conn.fetchval("SELECT to_regclass('lot_note')") is None  # 002 left nothing behind
        # and the lock was released: another session can take it at once
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", migrate.ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


def test_badly_named_and_duplicate_files_are_refused(tmp_path):
    (tmp_path / "1_lot.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="must be named NNN_lower_snake.sql"):
        migrate.discover([("lots", tmp_path)])
    (tmp_path / "1_lot.sql").unlink()
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="share number 001"):
        migrate.discover([("lots", tmp_path)])


def test_sources_put_the_kernel_first():
    assert [name for name, _ in migration_sources(TEST_MODULES)] == ["app", *(m.name for m in TEST_MODULES)]

