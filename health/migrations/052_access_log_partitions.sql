-- The access log grows with every read of every record: partition it by month on `at` (native RANGE
-- partitioning). The kernel's partitions job (app/partitions.py) keeps months ahead and, when a retention
-- is set, detaches old months (the law keeps access logs: they are detached and archived, never dropped).
-- The primary key must hold the partition key: (patient_id, seq, at). seq stays unique per patient because
-- the patient row's lock orders appends (store.append_access).

ALTER TABLE health_access_log RENAME TO health_access_log_unpartitioned;
ALTER TABLE health_access_log_unpartitioned RENAME CONSTRAINT health_access_log_pkey TO health_access_log_unpartitioned_pkey;
DROP TRIGGER health_access_log_append_only ON health_access_log_unpartitioned;

CREATE TABLE health_access_log (
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    seq bigint NOT NULL CHECK (seq > 0),
    at timestamptz NOT NULL,
    actor text NOT NULL,                                    -- client:<id> or resident:<uuid>
    actor_kind text NOT NULL CHECK (actor_kind IN ('facility', 'clinician', 'resident', 'app', 'system')),
    facility_id integer REFERENCES health_facility (id),
    action text NOT NULL,                                   -- read, search, everything, write, ...
    purpose text NOT NULL,                                  -- own, consent, emergency, visit, ...
    what text NOT NULL,                                     -- "Observation/<id>", "search Observation"
    reason_enc bytea,                                       -- an emergency's reason, sealed
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (patient_id, seq, at)
) PARTITION BY RANGE (at);

-- Rows outside every month's partition (a clock far off, rows older than the first month) land here, so an
-- append never fails for want of a partition; the job creates this month and the next ones.
CREATE TABLE health_access_log_default PARTITION OF health_access_log DEFAULT;
-- The months the existing rows fall in, and this month (the job adds the months ahead).
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date FROM health_access_log_unpartitioned
        UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF health_access_log FOR VALUES FROM (%L) TO (%L)',
                       'health_access_log_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

INSERT INTO health_access_log SELECT * FROM health_access_log_unpartitioned;
DROP TABLE health_access_log_unpartitioned;

-- A patient's log, newest first, and the chain walk read by (patient_id, seq): the primary key serves both.

-- Append-only, on every partition: a row trigger on the partitioned table is cloned onto each partition,
-- present and future, so an UPDATE or DELETE aimed at one month's table is refused too; the statement
-- trigger refuses TRUNCATE of the whole log.
CREATE TRIGGER health_access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON health_access_log
    FOR EACH STATEMENT EXECUTE FUNCTION health_access_log_append_only();
CREATE TRIGGER health_access_log_append_only_row BEFORE UPDATE OR DELETE ON health_access_log
    FOR EACH ROW EXECUTE FUNCTION health_access_log_append_only();
