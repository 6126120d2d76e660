"""Time partitions of the tables that grow without end (`Module(partitions=[TimePartitions(...)])`).

Each declared table is a native PostgreSQL RANGE-partitioned table (its module's migration converted it) with
one partition per month, `<table>_pYYYYMM`, and a DEFAULT partition for rows outside them. `maintain` keeps
`ahead` months ready past the current one and, when the table's retention setting is above 0, detaches (or
drops) the months wholly older than it. It runs in one transaction under an advisory lock, so several workers
(or a worker and `ihanoi partitions maintain`) may run it at once: the second waits and finds nothing to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from app.migrate import ADVISORY_LOCK_KEY
from modules import JobContext, Module, TimePartitions

log = logging.getLogger("ihanoi.partitions")

# Its own key, apart from the migrations' lock: a long migration need not wait for this job, nor it for one.
LOCK_KEY = ADVISORY_LOCK_KEY + 1
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: the DEFAULT partition
    end: dt.datetime | None


def month_start(when: dt.datetime) -> dt.datetime:
    when = when.astimezone(dt.UTC)
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.UTC)


def add_months(month: dt.datetime, count: int) -> dt.datetime:
    index = month.year * 12 + month.month - 1 + count
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def partition_name(table: str, month: dt.datetime) -> str:
    return f"{table}_p{month:%Y%m}"


def retention_months(module: Module, spec: TimePartitions, settings) -> int:
    """Months to keep: the module's setting, 0 (keep every month) when none is declared or set."""
    if spec.retention_setting is None:
        return 0
    value = getattr(settings.of(module.name), spec.retention_setting)
    return max(int(value or 0), 0)


async def partitions_of(conn: asyncpg.Connection, table: str) -> list[Partition] | None:
    """The table's partitions with their bounds (read in UTC); None when the table is not partitioned."""
    kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", table)
    if kind != "p":
        return None
    rows = await conn.fetch(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass($1) ORDER BY c.relname""", table)
    found = []
    for row in rows:
        match = _BOUND.search(row["bound"])
        if match is None:
            found.append(Partition(row["relname"], None, None))
        else:
            start, end = (dt.datetime.fromisoformat(v).astimezone(dt.UTC) for v in match.groups())
            found.append(Partition(row["relname"], start, end))
    return found


async def _maintain_table(conn: asyncpg.Connection, module: Module, spec: TimePartitions, keep: int,
                          now: dt.datetime) -> list[str]:
    done: list[str] = []
    existing = await partitions_of(conn, spec.table)
    if existing is None:
        return [f"{spec.table}: not partitioned (its migration has not run), skipped"]
    table, column = spec.table, spec.column
    default = next((p.name for p in existing if p.start is None), None)
    current = month_start(now)
    # from the month after the newest partition (no month left to DEFAULT when the job did not run for a
    # while) or this month, whichever is earlier, to `ahead` months past this one
    newest = max((p.end for p in existing if p.end is not None), default=current)
    first = min(newest, current)
    if keep > 0:  # a month that would expire at once is not made
        first = max(first, add_months(current, -(keep - 1)))
    last = add_months(current, spec.ahead)
    month = first
    while month <= last:
        following = add_months(month, 1)
        if any(p.start is not None and p.start < following and month < p.end for p in existing):
            month = following
            continue
        name = partition_name(table, month)
        if default is not None:
            # A row of that month already in DEFAULT would make the new partition's bound a lie: PostgreSQL
            # refuses it. Such rows come from a clock far ahead; leave them and say so (an operator moves them).
            stray = await conn.fetchval(
                f'SELECT count(*) FROM "{default}" WHERE "{column}" >= $1 AND "{column}" < $2', month, following)
            if stray:
                done.append(f"{table}: {name} not created: {stray} row(s) of that month are in {default}")
                log.warning("partition not created", extra={"table": table, "partition": name, "rows": stray})
                month = following
                continue
        await conn.execute(
            f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES FROM (\'{month.isoformat()}\') '
            f"TO ('{following.isoformat()}')")
        done.append(f"{table}: created {name} [{month:%Y-%m-%d}, {following:%Y-%m-%d})")
        month = following
    if keep > 0:
        cutoff = add_months(current, -(keep - 1))  # keep this month and the keep-1 before it
        for partition in existing:
            if partition.end is None or partition.end > cutoff:
                continue
            if spec.before_expire is not None:  # in this transaction: what it saves commits with the detach
                await spec.before_expire(conn, partition.name)
            if spec.expire == "drop":
                await conn.execute(f'DROP TABLE "{partition.name}"')
                done.append(f"{table}: dropped {partition.name} (older than {keep} month(s))")
            else:
                await conn.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{partition.name}"')
                done.append(f"{table}: detached {partition.name} (older than {keep} month(s); the table is kept)")
    return done


async def maintain(conn: asyncpg.Connection, modules: Sequence[Module], settings,
                   now: dt.datetime | None = None) -> list[str]:
    """Create the months ahead and expire the months past retention, for every declared table: what it did."""
    now = now or dt.datetime.now(dt.UTC)
    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")  # partition bounds are read and written in UTC
        # another worker's run: wait for it to end, then find its months made
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        # creating or detaching a month locks the parent table briefly; a long reader in the way must not leave
        # the city's writes queued behind this job: give up and try again at the next run
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        for module in modules:
            for spec in module.partitions:
                done += await _maintain_table(conn, module, spec, retention_months(module, spec, settings), now)
    for line in done:
        log.info("partitions", extra={"did": line})
    return done


def declared(modules: Sequence[Module]) -> list[Module]:
    return [m for m in modules if m.partitions]


def job_for(modules: Sequence[Module]):
    """The kernel's job over the enabled modules that declare partitions."""

    async def run(ctx: JobContext) -> None:
        async with ctx.pool.acquire() as conn:
            await maintain(conn, modules, ctx.settings)

    return run
