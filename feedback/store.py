"""Every feedback query: plain SQL through asyncpg.

"Open" and "overdue" are the SQL functions feedback_report_is_open and feedback_report_is_overdue
(migrations/003_open_and_overdue.sql); no query here spells them out.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

# Rows of a list tested one by one for a text search before the GIN index is asked (list_reports):
# the most a search reads either way is about this window plus the matches of a search with fewer than a page in
# it, i.e. about SEARCH_WINDOW + limit * rows / SEARCH_WINDOW; 15,000 keeps both near 15,000 up to about 5 million
# reports (measured at 1 million: benchmarks/feedback.py).
SEARCH_WINDOW = 15_000

# The map cells of migrations/004_search_cells.sql: squares of these sizes in metres, and the last digit of their
# numbers (feedback_tags).
CELL_SIZES = ((2_000, 2), (16_000, 6))
MAX_BOX_CELLS = 64  # a box with more cells than this at every size is searched without them

# ---- categories and templates -----------------------------------------------------------------------------

_CATEGORY = """
    SELECT c.code, c.name_vi, c.name_en, c.description_vi, c.description_en, c.keywords, c.default_unit,
           c.urgency, c.active, d.receive_hours, d.answer_hours
      FROM feedback_category c JOIN feedback_deadline d USING (urgency)
"""


async def categories(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(_CATEGORY + " WHERE c.active ORDER BY c.sort_order, c.code")


async def category(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_CATEGORY + " WHERE c.code = $1", code)


async def deadline_hours(conn: asyncpg.Connection, urgency: str) -> asyncpg.Record:
    return await conn.fetchrow("SELECT receive_hours, answer_hours FROM feedback_deadline WHERE urgency = $1",
                               urgency)


async def answer_templates(conn: asyncpg.Connection, unit_codes: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT code, kind, title, body FROM answer_template WHERE unit_code IS NULL OR unit_code = ANY($1::text[]) "
        "ORDER BY kind, code", unit_codes)


async def answer_template(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT code, kind, title, body, unit_code FROM answer_template WHERE code = $1", code)


# ---- photos ----------------------------------------------------------------------------------------------------

PHOTO_COLUMNS = "id, owner_id, report_id, event_id, position, public, content_type, width, height, byte_size"


async def insert_photo(conn: asyncpg.Connection, *, photo_id: uuid.UUID, owner_id: uuid.UUID, content_type: str,
                       width: int, height: int, sha256: str, data: bytes, thumbnail: bytes) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO report_photo (id, owner_id, content_type, width, height, byte_size, sha256, data, thumbnail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {PHOTO_COLUMNS}""",
        photo_id, owner_id, content_type, width, height, len(data), sha256, data, thumbnail)


async def attach_photos(conn: asyncpg.Connection, *, owner_id: uuid.UUID, photos: list[tuple[uuid.UUID, bool]],
                        report_id: int, event_id: int | None) -> int:
    """Attach the owner's unattached photos, in order; answers how many were attached."""
    result = await conn.execute(
        """UPDATE report_photo p SET report_id = $2, event_id = $3, position = x.position, public = x.public
             FROM unnest($4::uuid[], $5::bool[]) WITH ORDINALITY AS x(id, public, position)
            WHERE p.id = x.id AND p.owner_id = $1 AND p.report_id IS NULL""",
        owner_id, report_id, event_id, [p for p, _ in photos], [public for _, public in photos])
    return int(result.split()[-1])


async def photos_of(conn: asyncpg.Connection, report_ids: list[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {PHOTO_COLUMNS} FROM report_photo WHERE report_id = ANY($1::bigint[]) ORDER BY report_id, "
        "event_id NULLS FIRST, position", report_ids)


async def photo_content(conn: asyncpg.Connection, photo_id: uuid.UUID, *, thumbnail: bool) -> asyncpg.Record | None:
    column = "thumbnail" if thumbnail else "data"
    return await conn.fetchrow(
        f"""SELECT p.owner_id, p.report_id, p.public, p.content_type, p.sha256, p.{column} AS content,
                   r.visibility, r.unit_code, r.reporter_id
              FROM report_photo p LEFT JOIN report r ON r.id = p.report_id WHERE p.id = $1""", photo_id)


async def purge_unattached_photos(conn: asyncpg.Connection, older_than: dt.timedelta) -> int:
    result = await conn.execute(
        "DELETE FROM report_photo WHERE report_id IS NULL AND created_at < now() - $1::interval", older_than)
    return int(result.split()[-1])


# ---- reports -----------------------------------------------------------------------------------------------

def _overdue(as_of: str) -> str:
    """The overdue flag of a report row `r` at the moment held by parameter `as_of` ('$2')."""
    return f"feedback_report_is_overdue(r.status, r.receive_due_at, r.answer_due_at, {as_of})"


REPORT_COLUMNS = """
    r.id, r.reporter_id, r.reporter_name, r.hide_name, r.visibility, r.source, r.category_code, r.urgency,
    r.description, r.latitude, r.longitude, r.address, r.ward_code, r.unit_code, r.status, r.assignee_id,
    r.duplicate_of, r.submitted_at, r.routed_at, r.received_at, r.receive_due_at, r.answer_due_at, r.answered_at,
    r.answered_on_time, r.answer_text, r.closed_at, r.close_reason, r.updated_at, r.escalation_level,
    r.reopen_count, r.rating, r.rating_comment, r.rated_at, r.follower_count,
    c.name_vi AS category_vi, c.name_en AS category_en
"""


async def insert_report(conn: asyncpg.Connection, **values: Any) -> int:
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await conn.fetchval(
        f"INSERT INTO report ({', '.join(columns)}) VALUES ({placeholders}) "
        "ON CONFLICT (reporter_id, idempotency_key) DO NOTHING RETURNING id", *values.values())


async def report_by_key(conn: asyncpg.Connection, reporter_id: uuid.UUID, key: str) -> int | None:
    return await conn.fetchval("SELECT id FROM report WHERE reporter_id = $1 AND idempotency_key = $2",
                               reporter_id, key)


async def get_report(conn: asyncpg.Connection, report_id: int, now: dt.datetime, *,
                     for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF r" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {REPORT_COLUMNS}, {_overdue('$2')} AS overdue "
        "FROM report r JOIN feedback_category c ON c.code = r.category_code "
        f"WHERE r.id = $1{lock}", report_id, now)


_UPDATABLE = {
    "status", "unit_code", "urgency", "assignee_id", "duplicate_of", "routed_at", "received_at", "receive_due_at",
    "answer_due_at", "answered_at", "answered_on_time", "answer_text", "closed_at", "close_reason",
    "escalation_level", "reopen_count", "rating", "rating_comment", "rated_at",
}


async def update_report(conn: asyncpg.Connection, report_id: int, at: dt.datetime, **values: Any) -> None:
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {unknown}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=3))
    await conn.execute(f"UPDATE report SET updated_at = $2, {sets} WHERE id = $1", report_id, at, *values.values())


async def insert_event(conn: asyncpg.Connection, *, report_id: int, at: dt.datetime, kind: str, public: bool,
                       actor_id: uuid.UUID | None, actor_role: str, actor_unit: str | None = None,
                       from_status: str | None = None, to_status: str | None = None, message: str | None = None,
                       data: dict[str, Any] | None = None) -> int:
    return await conn.fetchval(
        """INSERT INTO report_event (report_id, at, kind, public, actor_id, actor_role, actor_unit, from_status,
                                     to_status, message, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
        report_id, at, kind, public, actor_id, actor_role, actor_unit, from_status, to_status, message, data or {})


async def events(conn: asyncpg.Connection, report_id: int, submitted_at: dt.datetime, *,
                 public_only: bool) -> list[asyncpg.Record]:
    """A report's steps. None is older than the report (a day's margin for the API processes' clocks): the months
    of report_event before it are not read."""
    where = " AND public" if public_only else ""
    return await conn.fetch(
        "SELECT id, at, kind, public, actor_id, actor_role, actor_unit, from_status, to_status, message, data "
        f"FROM report_event WHERE report_id = $1 AND at >= $2::timestamptz - interval '1 day'{where} ORDER BY id",
        report_id, submitted_at)


async def nearby_open(conn: asyncpg.Connection, *, category: str, latitude: float, longitude: float,
                      radius_m: float, since: dt.datetime, limit: int, now: dt.datetime) -> list[asyncpg.Record]:
    """Open public reports of a category within radius_m metres sent since `since`, nearest first."""
    return await conn.fetch(
        f"""SELECT {SUMMARY_COLUMNS}, {_overdue('$7')} AS overdue
              FROM report r JOIN feedback_category c ON c.code = r.category_code
             WHERE feedback_report_is_open(r.status)
               AND r.location <@ circle(feedback_metres($2, $3), $4)
               AND r.category_code = $1 AND r.submitted_at >= $5 AND r.visibility = 'public'
             ORDER BY r.location <-> feedback_metres($2, $3) LIMIT $6""",
        category, latitude, longitude, radius_m, since, limit, now)


# ---- followers ---------------------------------------------------------------------------------------------


async def follow(conn: asyncpg.Connection, report_id: int, resident_id: uuid.UUID) -> int:
    added = await conn.fetchval(
        "INSERT INTO report_follower (report_id, resident_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        report_id, resident_id)
    delta = 1 if added else 0
    return await conn.fetchval(
        "UPDATE report SET follower_count = follower_count + $2 WHERE id = $1 RETURNING follower_count",
        report_id, delta)


async def unfollow(conn: asyncpg.Connection, report_id: int, resident_id: uuid.UUID) -> int:
    removed = await conn.fetchval(
        "DELETE FROM report_follower WHERE report_id = $1 AND resident_id = $2 RETURNING 1", report_id, resident_id)
    return await conn.fetchval(
        "UPDATE report SET follower_count = follower_count - $2 WHERE id = $1 RETURNING follower_count",
        report_id, 1 if removed else 0)


async def is_following(conn: asyncpg.Connection, report_id: int, resident_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM report_follower WHERE report_id = $1 AND resident_id = $2", report_id, resident_id))


async def followers(conn: asyncpg.Connection, report_id: int) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT resident_id FROM report_follower WHERE report_id = $1", report_id)
    return [r["resident_id"] for r in rows]


async def move_followers(conn: asyncpg.Connection, from_report: int, to_report: int,
                         also: list[uuid.UUID]) -> int:
    """Followers of a duplicate (and its reporter) follow the original; answers the original's new count."""
    await conn.execute(
        """INSERT INTO report_follower (report_id, resident_id)
           SELECT $2::bigint, resident_id FROM report_follower WHERE report_id = $1
           UNION SELECT $2::bigint, x FROM unnest($3::uuid[]) AS x
           ON CONFLICT DO NOTHING""", from_report, to_report, also)
    return await conn.fetchval(
        """UPDATE report SET follower_count = (SELECT count(*) FROM report_follower WHERE report_id = $1)
            WHERE id = $1 RETURNING follower_count""", to_report)


# ---- lists -------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = """
    r.id, r.category_code, c.name_vi AS category_vi, c.name_en AS category_en, r.status, r.urgency,
    left(r.description, 280) AS description, r.latitude, r.longitude, r.address, r.ward_code, r.unit_code,
    r.submitted_at, r.receive_due_at, r.answer_due_at, r.follower_count,
    (SELECT p.id FROM report_photo p WHERE p.report_id = r.id AND p.public AND p.event_id IS NULL
      ORDER BY p.position LIMIT 1) AS thumbnail_id
"""


def box_cells(box: tuple[float, float, float, float]) -> list[int] | None:
    """The cells (feedback_tags' numbers) that cover a box (min_lat, min_lng, max_lat, max_lng), at the smallest
    size that needs no more than MAX_BOX_CELLS; None if none does. A metre of margin on each side: a point of the
    box is never in a cell left out, whatever the rounding of its metres."""
    min_lat, min_lng, max_lat, max_lng = box
    # feedback_metres, the same operations in the same order (IEEE doubles both)
    x0, x1 = (min_lng - 105.8542) * 103873.0 - 1, (max_lng - 105.8542) * 103873.0 + 1
    y0, y1 = (min_lat - 21.0285) * 110748.0 - 1, (max_lat - 21.0285) * 110748.0 + 1
    for size, digit in CELL_SIZES:
        xs = range(math.floor(x0 / size), math.floor(x1 / size) + 1)
        ys = range(math.floor(y0 / size), math.floor(y1 / size) + 1)
        if len(xs) * len(ys) <= MAX_BOX_CELLS:
            return [(x * 100_000 + y) * 10 + digit for x in xs for y in ys]
    return None


class Filters:
    """Builds a parameterised WHERE clause from optional filters, in one place for every list."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []
        self.search: int | None = None  # the position in clauses of the full-text condition, if there is one
        self.ranges: int | None = None  # that of a map box given as latitude and longitude ranges
        self.cells: list[int] | None = None  # the map cells that cover that box (box_cells)
        self.category: int | None = None  # the position of the category's condition
        self.category_arg: int | None = None  # and of its argument
        self.words: str | None = None  # the text search's tsquery

    def add(self, clause: str, *values: Any) -> None:
        for value in values:
            self.args.append(value)
            clause = clause.replace("?", f"${len(self.args)}", 1)
        self.clauses.append(clause)

    def where(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "true"


@dataclass(frozen=True)
class ReportQuery:
    """Which reports a list holds; a field left at its default does not filter."""

    public: bool = False  # public reports only
    box: tuple[float, float, float, float] | None = None  # min_lat, min_lng, max_lat, max_lng
    box_as_ranges: bool = False  # the box as latitude and longitude ranges, not through its spatial index
    unit: str | None = None
    assignee: uuid.UUID | None = None
    unassigned: bool = False
    reporter: uuid.UUID | None = None
    followed_by: uuid.UUID | None = None  # public reports this resident follows
    category: str | None = None
    statuses: list[str] | None = None
    open: bool = False  # open reports only (when no statuses are given)
    ward: str | None = None
    text: str | None = None
    overdue: bool | None = None


def _filters(query: ReportQuery, now: dt.datetime) -> Filters:
    filters = Filters()
    if query.public:
        filters.add("r.visibility = 'public'")
    if query.box is not None:
        min_lat, min_lng, max_lat, max_lng = query.box
        if query.box_as_ranges:
            filters.add("r.latitude BETWEEN ? AND ? AND r.longitude BETWEEN ? AND ?", min_lat, max_lat, min_lng,
                        max_lng)
            filters.ranges = len(filters.clauses) - 1
            filters.cells = box_cells(query.box)
        else:
            filters.add("r.location <@ box(feedback_metres(?, ?), feedback_metres(?, ?))", *query.box)
    if query.unit is not None:
        filters.add("r.unit_code = ?", query.unit)
    if query.assignee is not None:
        filters.add("r.assignee_id = ?", query.assignee)
    elif query.unassigned:
        filters.add("r.assignee_id IS NULL")
    if query.followed_by is not None:
        filters.add("r.id IN (SELECT report_id FROM report_follower WHERE resident_id = ?) "
                    "AND r.visibility = 'public'", query.followed_by)
    elif query.reporter is not None:
        filters.add("r.reporter_id = ?", query.reporter)
    if query.category:
        filters.add("r.category_code = ?", query.category)
        filters.category, filters.category_arg = len(filters.clauses) - 1, len(filters.args)
    if query.statuses:
        filters.add("r.status = ANY(?::text[])", query.statuses)
    elif query.open:
        filters.add("feedback_report_is_open(r.status)")
    if query.ward:
        filters.add("r.ward_code = ?", query.ward)
    if query.text:
        # websearch_to_tsquery accepts anything a person types; both sides are folded the same way
        filters.add("r.search @@ websearch_to_tsquery('simple', feedback_fold(?))", query.text)
        filters.search = len(filters.clauses) - 1
        filters.words = f"websearch_to_tsquery('simple', feedback_fold(${len(filters.args)}))"
    if query.overdue is not None:
        filters.add(("" if query.overdue else "NOT ") + _overdue("?"), now)
    return filters


async def box_holds_at_least(conn: asyncpg.Connection, corners: tuple[float, float, float, float], count: int) -> bool:
    """Whether a map box holds `count` public reports or more; reads at most that many index entries."""
    return await conn.fetchval(
        """SELECT count(*) >= $5 FROM (SELECT 1 FROM report r WHERE r.visibility = 'public'
              AND r.location <@ box(feedback_metres($1, $2), feedback_metres($3, $4)) LIMIT $5) s""",
        *corners, count)


async def list_reports(conn: asyncpg.Connection, query: ReportQuery, *, order: str, after: tuple[Any, int] | None,
                       limit: int, now: dt.datetime) -> list[asyncpg.Record]:
    """One page, newest first (`order` = 'newest') or by answer deadline ('deadline'), keyset-paginated; `now`
    is the moment a report's overdue flag (and the overdue filter) is judged at."""
    filters = _filters(query, now)
    if order == "newest":
        key, beyond, order_by = "r.submitted_at, r.id", "<", "r.submitted_at DESC, r.id DESC"
    else:
        key, beyond, order_by = "r.answer_due_at, r.id", ">", "r.answer_due_at, r.id"
    if after is not None:
        filters.add(f"({key}) {beyond} (?, ?)", *after)
    filters.args.append(limit)
    n = f"${len(filters.args)}"
    filters.args.append(now)
    as_of = f"${len(filters.args)}"

    def page(ids: str) -> str:
        # The page's ids first, from the report table alone: where an index holds every column the filters and
        # the order read (the map box's GiST index), they come from the index without visiting the table. Then
        # the rows of those ids only, with their category and thumbnail.
        return f"""SELECT {SUMMARY_COLUMNS}, {_overdue(as_of)} AS overdue
                     FROM report r JOIN feedback_category c ON c.code = r.category_code
                    WHERE r.id IN ({ids}) ORDER BY {order_by} LIMIT {n}"""

    if filters.search is None:
        return await conn.fetch(
            page(f"SELECT r.id FROM report r WHERE {filters.where()} ORDER BY {order_by} LIMIT {n}"), *filters.args)
    # With a text search, PostgreSQL takes the words of a query as independent: "lan chiem via he" (the four
    # syllables of "lấn chiếm vỉa hè", always found together) comes out hundreds of times rarer than it is, and it
    # then fetches and sorts every match the GIN index gives (tens of thousands) for one page. So: the first
    # SEARCH_WINDOW rows in the list's order that pass the other filters are tested one by one, which stops as
    # soon as the page is full (a common search). If the window holds less than a page, it held every match that
    # comes before the rows beyond it, so the page is the first matches of the whole list: asked of the GIN index
    # (a rare search: few matches to fetch), without finding again where the window ended (that was a second walk
    # as long as the first). Same rows, same order as one query.
    # The window reads each row's words with the row where the walk visits the table anyway (a map box given as
    # latitude and longitude ranges) or where nothing but the public list's index can order it; otherwise it walks
    # an index alone and reads the words of each row it keeps by id: asking the walk for them would make the
    # planner prefer a walk with the table (e.g. the whole public list filtered by category, not the category's
    # own index). Measured in benchmarks/feedback.py.
    others = " AND ".join(c for i, c in enumerate(filters.clauses) if i != filters.search) or "true"
    # A box in ranges and a category of the public list are tested with the words: the window is then SEARCH_WINDOW
    # rows of the public list read, newest first, in the order the table holds them (its pages one after the
    # other), not SEARCH_WINDOW rows found in the box (a box holding 2 % of the reports would read the whole list
    # for a rare word) or read by id through the category's index.
    tested = {i for i in (filters.search, filters.ranges, filters.category) if i is not None}
    walked = " AND ".join(c for i, c in enumerate(filters.clauses) if i not in tested) or "true"
    if query.public and walked.startswith("r.visibility = 'public'") and (
            walked == "r.visibility = 'public'" or filters.ranges is not None or filters.category is not None):
        walk = f"""SELECT w.id FROM (SELECT {key}, r.search, r.latitude, r.longitude, r.category_code FROM report r
                                     WHERE {walked} ORDER BY {order_by} LIMIT {SEARCH_WINDOW}) w"""
        text = " AND ".join([filters.clauses[i].replace("r.", "w.") for i in sorted(tested - {filters.search})]
                            + [f"w.search @@ (SELECT {filters.words})"])
    else:
        walk = f"""SELECT w.id FROM (SELECT {key} FROM report r WHERE {others} ORDER BY {order_by}
                                      LIMIT {SEARCH_WINDOW}) w
                    CROSS JOIN LATERAL (SELECT r.search FROM report r WHERE r.id = w.id OFFSET 0) r"""
        text = f"r.search @@ (SELECT {filters.words})"
        walked = None
    # (The window takes the words as a query once, in a sub-select: a generic plan of the cached statement, the
    # same SQL for every search, would otherwise parse them again for each row it tests.)
    # Whether the list goes on beyond the window (if not, the window held every match): asked of the index the
    # walk used, without the table.
    beyond = f"""EXISTS (SELECT FROM report r WHERE {walked or others}
        ORDER BY {order_by} OFFSET {SEARCH_WINDOW - 1} LIMIT 1)"""
    # The GIN index of words and tags (004_search_cells.sql): the words in the box's cells, in the category, in one
    # index scan; the box and the category themselves are still tested on each row.
    tags = ""
    if filters.cells is not None:
        filters.args.append(filters.cells)
        tags += f" AND feedback_tags(r.location, r.category_code) && ${len(filters.args)}::bigint[]"
    if filters.category is not None:
        tags += (" AND feedback_tags(r.location, r.category_code) && ARRAY[feedback_category_tag("
                 f"${filters.category_arg})]")
    ids = f"""
        WITH window_hits AS MATERIALIZED (
            {walk}
             WHERE {text} ORDER BY {order_by.replace("r.", "w.")} LIMIT {n}
        ), index_hits AS MATERIALIZED (
            SELECT r.id FROM report r
             WHERE (SELECT count(*) FROM window_hits) < {n} AND {beyond} AND {filters.where()}{tags}
             ORDER BY {order_by} LIMIT {n}
        )
        SELECT id FROM window_hits UNION ALL SELECT id FROM index_hits"""
    return await conn.fetch(page(ids), *filters.args)


# ---- the worker's scans ------------------------------------------------------------------------------------


async def overdue_unescalated(conn: asyncpg.Connection, now: dt.datetime, limit: int) -> list[asyncpg.Record]:
    """Overdue reports not yet escalated for the deadline they passed, locked for this worker (others skip them).

    Escalation level 1 is the receipt deadline's, 2 the answer's: a report overdue on its receipt deadline is due
    once (level 0), one overdue on its answer deadline once more (below level 2)."""
    return await conn.fetch(
        f"""SELECT r.id, r.unit_code, r.status, r.escalation_level, r.receive_due_at, r.answer_due_at,
                   c.name_vi AS category_vi, c.name_en AS category_en
              FROM report r JOIN feedback_category c ON c.code = r.category_code
             WHERE {_overdue('$1')} AND r.escalation_level < 2
               AND (r.escalation_level = 0 OR r.answer_due_at < $1)
             ORDER BY r.answer_due_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED""", now, limit)


async def answered_before(conn: asyncpg.Connection, before: dt.datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, status, unit_code, reporter_id FROM report WHERE status = 'answered' AND answered_at < $1 "
        "ORDER BY answered_at LIMIT $2 "
        "FOR UPDATE SKIP LOCKED", before, limit)


# ---- transparency ------------------------------------------------------------------------------------------


async def unit_stats(conn: asyncpg.Connection, *, since: dt.datetime, now: dt.datetime,
                     unit: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT unit_code,
                  count(*) AS received,
                  count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered,
                  count(*) FILTER (WHERE answered_on_time) AS answered_on_time,
                  count(*) FILTER (WHERE feedback_report_is_open(status)) AS open,
                  count(*) FILTER (WHERE feedback_report_is_overdue(status, receive_due_at, answer_due_at, $2))
                      AS overdue,
                  count(rating) AS ratings,
                  avg(rating)::float8 AS average_rating
             FROM report
            WHERE submitted_at >= $1 AND duplicate_of IS NULL AND ($3::text IS NULL OR unit_code = $3)
            GROUP BY unit_code ORDER BY unit_code""", since, now, unit)


async def weekly_unit_figures(conn: asyncpg.Connection, *, unit: str, since: dt.datetime) -> list[asyncpg.Record]:
    """Per week (Monday, city time) of sending: received, answered and answered on time, for the unit's chart."""
    return await conn.fetch(
        """SELECT date_trunc('week', submitted_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS week,
                  count(*) AS received,
                  count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered,
                  count(*) FILTER (WHERE answered_on_time) AS answered_on_time
             FROM report
            WHERE unit_code = $1 AND submitted_at >= $2 AND duplicate_of IS NULL
            GROUP BY 1 ORDER BY 1""", unit, since)
