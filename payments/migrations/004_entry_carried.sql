-- What a month of ledger entries carried for each account when the partitions job detached it (past
-- IHANOI_PAYMENTS_ENTRY_RETENTION_MONTHS): the audit adds it to the entries still attached, so a balance is
-- still checked against all its money once old months are archived. Written in the job's transaction, just
-- before the detach; append-only like the ledger.
CREATE TABLE payment_entry_carried (
    partition_name text NOT NULL,
    account_id bigint NOT NULL REFERENCES payment_account (id),
    amount_vnd bigint NOT NULL,
    entries bigint NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition_name, account_id)
);

CREATE TRIGGER payment_entry_carried_append_only BEFORE UPDATE OR DELETE ON payment_entry_carried
    FOR EACH ROW EXECUTE FUNCTION payment_append_only();
