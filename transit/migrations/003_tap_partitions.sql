-- Taps grow with every boarding of the city: partition them by month on `at`, the time of the tap (native RANGE
-- partitioning). The kernel's partitions job (app/partitions.py) keeps months ahead and, past a retention (default
-- none), drops old months: taps are where a rider went, kept no longer than the operator needs them.
--
-- The primary key must hold the partition key: (tap_id, at). A tap is sent again with its own time (a validator
-- repeating a batch, the gate's flush repeated after a crash), so "a tap id counts once" still holds through
-- ON CONFLICT (tap_id, at).
--
-- transit_flag named its two taps by a foreign key to tap_id alone, which a partitioned table cannot back (a
-- unique constraint on it must hold `at`), and a key into the taps would stop the job dropping an old month that
-- a flag names. The rule is kept by the service instead: flags are written only by store.flag_new_taps, from
-- rows of transit_tap read in the same statement; a flag outliving its taps' month still names them (the flag is
-- the operator's record, the taps were the evidence).

ALTER TABLE transit_flag DROP CONSTRAINT transit_flag_first_tap_fkey;
ALTER TABLE transit_flag DROP CONSTRAINT transit_flag_second_tap_fkey;

ALTER TABLE transit_tap RENAME TO transit_tap_unpartitioned;
ALTER TABLE transit_tap_unpartitioned RENAME CONSTRAINT transit_tap_pkey TO transit_tap_unpartitioned_pkey;
ALTER INDEX transit_tap_ticket RENAME TO transit_tap_unpartitioned_ticket;
ALTER INDEX transit_tap_fingerprint RENAME TO transit_tap_unpartitioned_fingerprint;
ALTER INDEX transit_tap_operator RENAME TO transit_tap_unpartitioned_operator;

CREATE TABLE transit_tap (
    tap_id uuid NOT NULL,                            -- with `at`: a batch sent twice counts once
    validator text NOT NULL,
    operator_slug text NOT NULL,
    ticket_id bigint NOT NULL,
    route_id integer NOT NULL,
    vehicle text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('on', 'off')),
    at timestamptz NOT NULL,
    accepted boolean NOT NULL,
    reason text,
    fingerprint bytea NOT NULL,                      -- the code's bytes, hashed: a screenshot has the same
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tap_id, at)
) PARTITION BY RANGE (at);
CREATE INDEX transit_tap_ticket ON transit_tap (ticket_id, at);
CREATE INDEX transit_tap_fingerprint ON transit_tap (fingerprint);
CREATE INDEX transit_tap_operator ON transit_tap (operator_slug, at);

-- Rows outside every month's partition (a validator's clock far off) land here, so an upload never fails for
-- want of a partition; the job creates this month and the next ones.
CREATE TABLE transit_tap_default PARTITION OF transit_tap DEFAULT;
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date FROM transit_tap_unpartitioned
        UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF transit_tap FOR VALUES FROM (%L) TO (%L)',
                       'transit_tap_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

INSERT INTO transit_tap SELECT * FROM transit_tap_unpartitioned;
DROP TABLE transit_tap_unpartitioned;
