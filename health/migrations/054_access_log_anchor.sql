-- The chain's anchors: when the partitions job detaches (or would drop) a month of the access log, the rows of
-- that month leave the live log, and the chain walk (store.verify_chain, `ihanoi health verify-log`) would find a
-- gap. Just before, in the same transaction, the job saves for each patient the last row of every run of rows the
-- month holds (the row whose successor is not in that month): its seq and hash. The walk steps over a gap that
-- ends at an anchor, going on from the anchor's hash; a gap without one is a break, as before. While the detached
-- month's table is still in the database, the walk checks the anchor against it.

CREATE TABLE health_access_log_anchor (
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    seq bigint NOT NULL CHECK (seq > 0),        -- the last row of a run that left the live log
    hash bytea NOT NULL,                        -- its hash: the next row's prev_hash
    partition_name text NOT NULL,               -- the month's table it left with (detached, for the archive)
    saved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, seq)
);

-- As the log itself: nobody rewrites an anchor (a forged one would hide removed rows).
CREATE TRIGGER health_access_log_anchor_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON health_access_log_anchor
    FOR EACH STATEMENT EXECUTE FUNCTION health_access_log_append_only();
