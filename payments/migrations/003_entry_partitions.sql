-- Ledger entries grow with every ride and parking charge: partition them by month on `booked_at`, the time
-- of their transaction (payment_transaction.created_at, the same now() of the posting's transaction). The
-- kernel's partitions job (app/partitions.py) keeps months ahead; money records are kept: past a retention
-- (default none) a month is detached, never dropped. The primary key must hold the partition key:
-- (transaction_id, account_id, booked_at); one transaction's entries all share its booked_at.

ALTER TABLE payment_entry RENAME TO payment_entry_unpartitioned;
ALTER TABLE payment_entry_unpartitioned RENAME CONSTRAINT payment_entry_pkey TO payment_entry_unpartitioned_pkey;
ALTER INDEX payment_entry_account_idx RENAME TO payment_entry_unpartitioned_account_idx;
DROP TRIGGER payment_entry_balanced ON payment_entry_unpartitioned;
DROP TRIGGER payment_entry_append_only ON payment_entry_unpartitioned;

CREATE TABLE payment_entry (
    transaction_id bigint      NOT NULL REFERENCES payment_transaction (id),
    account_id     bigint      NOT NULL REFERENCES payment_account (id),
    amount_vnd     bigint      NOT NULL CHECK (amount_vnd <> 0),
    -- last, with a default: an entry written by column position (transaction, account, amount) still lands
    booked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, account_id, booked_at)
) PARTITION BY RANGE (booked_at);
CREATE INDEX payment_entry_account_idx ON payment_entry (account_id, transaction_id);

-- Rows outside every month's partition land here, so a posting never fails for want of a partition.
CREATE TABLE payment_entry_default PARTITION OF payment_entry DEFAULT;
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', t.created_at AT TIME ZONE 'UTC')::date
          FROM payment_entry_unpartitioned e JOIN payment_transaction t ON t.id = e.transaction_id
        UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF payment_entry FOR VALUES FROM (%L) TO (%L)',
                       'payment_entry_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

INSERT INTO payment_entry (transaction_id, account_id, amount_vnd, booked_at)
SELECT e.transaction_id, e.account_id, e.amount_vnd, t.created_at
  FROM payment_entry_unpartitioned e JOIN payment_transaction t ON t.id = e.transaction_id;
DROP TABLE payment_entry_unpartitioned;

-- The same rules as before, on every month: balanced at commit, append-only (row triggers on a partitioned
-- table are cloned onto each partition, present and future).
CREATE CONSTRAINT TRIGGER payment_entry_balanced AFTER INSERT ON payment_entry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION payment_check_balanced();
CREATE TRIGGER payment_entry_append_only BEFORE UPDATE OR DELETE ON payment_entry
    FOR EACH ROW EXECUTE FUNCTION payment_append_only();
-- the row trigger cannot see TRUNCATE: refuse it on the whole ledger too
CREATE TRIGGER payment_entry_no_truncate BEFORE TRUNCATE ON payment_entry
    FOR EACH STATEMENT EXECUTE FUNCTION payment_append_only();
