"""Every payments query: plain SQL through asyncpg."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import asyncpg

# ---- accounts ------------------------------------------------------------------------------------------------


async def resident_exists(conn: asyncpg.Connection, resident_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM resident WHERE id = $1", resident_id))


async def wallet(conn: asyncpg.Connection, resident_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, balance_vnd, created_at FROM payment_account WHERE resident_id = $1", resident_id)


async def lock_wallet(conn: asyncpg.Connection, resident_id: uuid.UUID) -> asyncpg.Record | None:
    """The payer's wallet, locked until the caller's transaction ends: concurrent charges queue here."""
    return await conn.fetchrow(
        "SELECT id, balance_vnd FROM payment_account WHERE resident_id = $1 FOR UPDATE", resident_id)


async def charge_context(conn: asyncpg.Connection, resident_id: uuid.UUID, operator: str,
                         key: str) -> asyncpg.Record:
    """In one round trip: the payer's wallet locked (concurrent charges queue here), the payee's account and
    fee, and whether the key has charged already."""
    return await conn.fetchrow(
        """WITH w AS (SELECT id, balance_vnd FROM payment_account WHERE resident_id = $1 FOR UPDATE)
           SELECT (SELECT id FROM w) AS wallet_id, (SELECT balance_vnd FROM w) AS balance_vnd,
                  (SELECT a.id FROM payment_account a WHERE a.operator_slug = $2) AS operator_account,
                  (SELECT o.fee_bps FROM payment_operator o WHERE o.slug = $2) AS fee_bps,
                  EXISTS (SELECT 1 FROM payment_transaction t WHERE t.kind = 'charge' AND t.idempotency_key = $3)
                    AS used""", resident_id, operator, key)


async def open_wallet(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    return await conn.fetchval(
        """WITH made AS (INSERT INTO payment_account (kind, resident_id) VALUES ('wallet', $1)
                         ON CONFLICT (resident_id) DO NOTHING RETURNING id)
           SELECT id FROM made UNION ALL SELECT id FROM payment_account WHERE resident_id = $1 LIMIT 1""",
        resident_id)


async def operator_account(conn: asyncpg.Connection, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT a.id, a.balance_vnd, o.slug, o.name, o.kind, o.fee_bps
             FROM payment_operator o JOIN payment_account a ON a.operator_slug = o.slug WHERE o.slug = $1""", slug)


async def upsert_operator(conn: asyncpg.Connection, *, slug: str, name: str, kind: str, fee_bps: int) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO payment_operator (slug, name, kind, fee_bps) VALUES ($1, $2, $3, $4)
           ON CONFLICT (slug) DO UPDATE
              SET name = EXCLUDED.name, kind = EXCLUDED.kind, fee_bps = EXCLUDED.fee_bps
           RETURNING slug, name, kind, fee_bps, created_at""", slug, name, kind, fee_bps)
    await conn.execute(
        "INSERT INTO payment_account (kind, operator_slug) VALUES ('operator', $1) "
        "ON CONFLICT (operator_slug) DO NOTHING", slug)
    return row


async def operators(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT o.slug, o.name, o.kind, o.fee_bps, a.balance_vnd
             FROM payment_operator o JOIN payment_account a ON a.operator_slug = o.slug ORDER BY o.slug""")


# ---- posting -------------------------------------------------------------------------------------------------

# One statement writes the transaction, its entries and the balances they change, so a balance can only
# move together with its entries. Entries come sorted by account id: concurrent postings then lock the
# house accounts they share in the same order.
_POST = """
WITH t AS (
    INSERT INTO payment_transaction (kind, idempotency_key, amount_vnd, fee_vnd, resident_id, operator_slug, reason,
                                     refund_of)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (kind, idempotency_key) DO NOTHING
    RETURNING id, created_at
), e AS (
    INSERT INTO payment_entry (transaction_id, account_id, amount_vnd, booked_at)
    SELECT t.id, x.account_id, x.amount_vnd, t.created_at
      FROM t, unnest($9::bigint[], $10::bigint[]) AS x(account_id, amount_vnd)
    RETURNING account_id, amount_vnd
), b AS (
    UPDATE payment_account a SET balance_vnd = a.balance_vnd + e.amount_vnd FROM e WHERE a.id = e.account_id
    RETURNING a.id
)
SELECT t.id, t.created_at, (SELECT count(*) FROM b) AS updated FROM t
"""


async def post(conn: asyncpg.Connection, *, kind: str, key: str, amount: int, fee: int = 0,
               resident_id: uuid.UUID | None, operator: str | None, reason: str, refund_of: int | None,
               entries: dict[int, int]) -> asyncpg.Record | None:
    """Write one balanced transaction; None when its key was used already (nothing written)."""
    accounts = sorted(a for a, v in entries.items() if v != 0)
    # Lock the accounts in id order first: the posting's UPDATE visits them in whatever order its join plan
    # reads the table, so two postings sharing a hot operator and the fees account (two gates of one busy
    # lot) could lock them in opposite orders and deadlock.
    await conn.execute("SELECT 1 FROM payment_account WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", accounts)
    return await conn.fetchrow(_POST, kind, key, amount, fee, resident_id, operator, reason, refund_of,
                               accounts, [entries[a] for a in accounts])


_TRANSACTION = """
SELECT t.id, t.kind, t.idempotency_key, t.amount_vnd, t.fee_vnd, t.resident_id, t.operator_slug, t.reason,
       t.refund_of, t.created_at, o.name AS operator_name
  FROM payment_transaction t LEFT JOIN payment_operator o ON o.slug = t.operator_slug
"""


async def transaction_by_key(conn: asyncpg.Connection, kind: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_TRANSACTION + " WHERE t.kind = $1 AND t.idempotency_key = $2", kind, key)


async def transaction_by_id(conn: asyncpg.Connection, transaction_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_TRANSACTION + " WHERE t.id = $1", transaction_id)


async def lock_charge(conn: asyncpg.Connection, transaction_id: int) -> None:
    """Serialises refunds of one charge (the ledger rows themselves are never updated)."""
    await conn.execute("SELECT id FROM payment_transaction WHERE id = $1 FOR UPDATE", transaction_id)


async def refunded(conn: asyncpg.Connection, charge_id: int) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT coalesce(sum(amount_vnd), 0)::bigint AS amount, coalesce(sum(fee_vnd), 0)::bigint AS fee "
        "FROM payment_transaction "
        "WHERE refund_of = $1", charge_id)
    return row["amount"], row["fee"]


# ---- the resident's view ------------------------------------------------------------------------------------

_LINE = """
SELECT t.id, t.kind, t.amount_vnd AS gross_vnd, e.amount_vnd, t.operator_slug, o.name AS operator_name, t.reason,
       t.refund_of, t.created_at
  FROM payment_entry e JOIN payment_transaction t ON t.id = e.transaction_id
  LEFT JOIN payment_operator o ON o.slug = t.operator_slug
"""


async def history(conn: asyncpg.Connection, account_id: int, *, before: int | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        _LINE + " WHERE e.account_id = $1 AND ($2::bigint IS NULL OR e.transaction_id < $2) "
        "ORDER BY e.transaction_id DESC LIMIT $3", account_id, before, limit)


async def statement_lines(conn: asyncpg.Connection, account_id: int, start: dt.datetime,
                          end: dt.datetime) -> list[asyncpg.Record]:
    # by booked_at (= its transaction's created_at), the entries' partition key: only the month's partitions are read
    return await conn.fetch(
        _LINE + " WHERE e.account_id = $1 AND e.booked_at >= $2 AND e.booked_at < $3 ORDER BY t.created_at, t.id",
        account_id, start, end)


async def balance_before(conn: asyncpg.Connection, account_id: int, moment: dt.datetime) -> int:
    """The account's balance just before `moment`: its balance now less what was booked since, in one snapshot.
    Reads the months from `moment` on, not the whole history before it, and stays right once old months are
    detached from the ledger (past the entry retention)."""
    return await conn.fetchval(
        """SELECT (a.balance_vnd - coalesce((SELECT sum(e.amount_vnd) FROM payment_entry e
                                              WHERE e.account_id = a.id AND e.booked_at >= $2), 0))::bigint
             FROM payment_account a WHERE a.id = $1""", account_id, moment)


async def wallet_line(conn: asyncpg.Connection, account_id: int, transaction_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_LINE + " WHERE e.account_id = $1 AND e.transaction_id = $2", account_id,
                               transaction_id)


# ---- top-ups ------------------------------------------------------------------------------------------------

TOPUP_COLUMNS = ("id, txn_ref, resident_id, amount_vnd, status, created_at, expires_at, settled_at, settled_by, "
                 "response_code, bank_code, gateway_txn_no, transaction_id")


async def insert_topup(conn: asyncpg.Connection, *, txn_ref: str, resident_id: uuid.UUID, amount: int,
                       created_at: dt.datetime, expires_at: dt.datetime) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO payment_topup (txn_ref, resident_id, amount_vnd, created_at, expires_at)
            VALUES ($1, $2, $3, $4, $5) RETURNING {TOPUP_COLUMNS}""",
        txn_ref, resident_id, amount, created_at, expires_at)


async def pending_topups_total(conn: asyncpg.Connection, resident_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(amount_vnd), 0)::bigint FROM payment_topup WHERE resident_id = $1 AND status = 'pending' "
        "AND expires_at > now()", resident_id)


async def topup(conn: asyncpg.Connection, txn_ref: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {TOPUP_COLUMNS} FROM payment_topup WHERE txn_ref = $1" + (" FOR UPDATE" if lock else ""), txn_ref)


async def settle_topup(conn: asyncpg.Connection, topup_id: int, *, status: str, settled_by: str,
                       response_code: str | None, bank_code: str | None, gateway_txn_no: str | None,
                       transaction_id: int | None) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""UPDATE payment_topup SET status = $2, settled_at = now(), settled_by = $3, response_code = $4,
                   bank_code = $5, gateway_txn_no = $6, transaction_id = $7
             WHERE id = $1 RETURNING {TOPUP_COLUMNS}""",
        topup_id, status, settled_by, response_code, bank_code, gateway_txn_no, transaction_id)


async def topups_to_check(conn: asyncpg.Connection, *, older_than: dt.datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {TOPUP_COLUMNS} FROM payment_topup
             WHERE status = 'pending' AND created_at < $1
               AND (checked_at IS NULL OR checked_at < now() - interval '1 minute')
             ORDER BY created_at LIMIT $2""", older_than, limit)


async def mark_checked(conn: asyncpg.Connection, topup_id: int) -> None:
    await conn.execute("UPDATE payment_topup SET checked_at = now(), checks = checks + 1 WHERE id = $1", topup_id)


# ---- settlement ------------------------------------------------------------------------------------------------


async def settlement(conn: asyncpg.Connection, slug: str, start: dt.datetime, end: dt.datetime) -> list[asyncpg.Record]:
    """Per local day and product/lot: what the operator collected, refunded, paid in fees, and its net."""
    return await conn.fetch(
        """SELECT (t.created_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day, t.reason,
                  count(*) FILTER (WHERE t.kind = 'charge') AS charges,
                  coalesce(sum(t.amount_vnd) FILTER (WHERE t.kind = 'charge'), 0)::bigint AS collected,
                  count(*) FILTER (WHERE t.kind = 'refund') AS refunds,
                  coalesce(sum(t.amount_vnd) FILTER (WHERE t.kind = 'refund'), 0)::bigint AS refunded,
                  (coalesce(sum(t.fee_vnd) FILTER (WHERE t.kind = 'charge'), 0)
                    - coalesce(sum(t.fee_vnd) FILTER (WHERE t.kind = 'refund'), 0))::bigint AS fees
             FROM payment_transaction t
            WHERE t.operator_slug = $1 AND t.kind IN ('charge', 'refund') AND t.created_at >= $2 AND t.created_at < $3
            GROUP BY 1, 2 ORDER BY 1, 2""", slug, start, end)


async def remittances(conn: asyncpg.Connection, slug: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        _TRANSACTION + " WHERE t.kind = 'remittance' AND ($1::text IS NULL OR t.operator_slug = $1) "
        "ORDER BY t.id DESC LIMIT $2", slug, limit)


async def outstanding(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Each operator's collected-but-not-remitted (its account balance), with its last remittance."""
    return await conn.fetch(
        """SELECT o.slug, o.name, o.kind, a.balance_vnd,
                  (SELECT max(t.created_at) FROM payment_transaction t
                    WHERE t.operator_slug = o.slug AND t.kind = 'remittance') AS last_remitted_at,
                  (SELECT min(t.created_at) FROM payment_transaction t
                    WHERE t.operator_slug = o.slug AND t.kind = 'charge'
                      AND t.id > coalesce((SELECT max(r.id) FROM payment_transaction r
                                            WHERE r.operator_slug = o.slug AND r.kind = 'remittance'), 0))
                    AS oldest_unremitted_at
             FROM payment_operator o JOIN payment_account a ON a.operator_slug = o.slug
            ORDER BY a.balance_vnd DESC, o.slug""")


async def house_balances(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT kind, balance_vnd FROM payment_account WHERE kind IN ('clearing', 'fees', 'treasury')")
    return {r["kind"]: r["balance_vnd"] for r in rows}


# ---- audit ---------------------------------------------------------------------------------------------------


async def audit(conn: asyncpg.Connection) -> asyncpg.Record:
    """Accounts whose balance is not the sum of their entries (those attached plus what detached months carried),
    unbalanced transactions, detached months that did not sum to zero, and the ledger's total."""
    return await conn.fetchrow(
        """WITH totals AS (
             SELECT account_id, sum(amount_vnd) AS total FROM (
               SELECT account_id, amount_vnd FROM payment_entry
               UNION ALL SELECT account_id, amount_vnd FROM payment_entry_carried) e GROUP BY account_id)
           SELECT
             (SELECT coalesce(array_agg(a.id ORDER BY a.id), '{}') FROM payment_account a
                LEFT JOIN totals s ON s.account_id = a.id
               WHERE a.balance_vnd <> coalesce(s.total, 0)) AS mismatched_accounts,
             (SELECT coalesce(array_agg(transaction_id ORDER BY transaction_id), '{}') FROM
                (SELECT transaction_id FROM payment_entry GROUP BY transaction_id HAVING sum(amount_vnd) <> 0) u)
               AS unbalanced_transactions,
             (SELECT coalesce(array_agg(partition_name ORDER BY partition_name), '{}') FROM
                (SELECT partition_name FROM payment_entry_carried GROUP BY partition_name
                  HAVING sum(amount_vnd) <> 0) m) AS unbalanced_detached_months,
             (SELECT coalesce(sum(total), 0)::bigint FROM totals) AS entries_total,
             (SELECT coalesce(sum(balance_vnd), 0)::bigint FROM payment_account) AS balances_total,
             (SELECT count(*) FROM payment_account) AS accounts,
             (SELECT count(*) FROM payment_transaction) AS transactions""")


async def save_carried(conn: asyncpg.Connection, partition: str) -> None:
    """Before the partitions job detaches a month of entries: what that month carried for each account."""
    if not re.fullmatch(r"payment_entry_p\d{6}", partition):  # a name the kernel made; never a client's
        raise ValueError(f"not a month of payment_entry: {partition!r}")
    await conn.execute(
        f'INSERT INTO payment_entry_carried (partition_name, account_id, amount_vnd, entries) '
        f'SELECT $1, account_id, sum(amount_vnd), count(*) FROM "{partition}" GROUP BY account_id', partition)
