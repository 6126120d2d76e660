-- A report's steps grow with every report of the city: partition report_event by month on `at`, the time of the
-- step (native RANGE partitioning). The kernel's partitions job (app/partitions.py) keeps months ahead and, past a
-- retention (default none), detaches old months (a report's history is a public record: archived, not dropped).
--
-- The primary key must hold the partition key: (id, at). id is still unique: the identity gives each event its
-- own (the sequence is carried over), and nothing writes an id of its own.
--
-- report_photo.event_id named its event by a foreign key to id alone, which a partitioned table cannot back (a
-- unique constraint on it must hold `at`), and a key into the events would stop the job detaching a month a photo
-- names. The rule is kept by the service instead: a photo gets an event_id only from service._attach, in the
-- transaction that inserted that event (answering with photos), and an event goes only with its report, whose
-- deletion takes the report's photos too (report_photo.report_id ON DELETE CASCADE), as the event key's cascade did.

ALTER TABLE report_photo DROP CONSTRAINT report_photo_event_id_fkey;

ALTER TABLE report_event RENAME TO report_event_unpartitioned;
ALTER TABLE report_event_unpartitioned RENAME CONSTRAINT report_event_pkey TO report_event_unpartitioned_pkey;
ALTER INDEX report_event_report_idx RENAME TO report_event_unpartitioned_report_idx;

CREATE TABLE report_event (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    report_id   bigint      NOT NULL REFERENCES report (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('submitted', 'received', 'assigned', 'started', 'answered',
                            'closed', 'rejected', 'transferred', 'reopened', 'rated', 'escalated', 'merged',
                            'note', 'urgency_changed')),
    public      boolean     NOT NULL,
    actor_id    uuid        REFERENCES resident (id),   -- null: the system (a worker job)
    actor_role  text        NOT NULL CHECK (actor_role IN ('reporter', 'staff', 'system')),
    actor_unit  text,
    from_status text,
    to_status   text,
    message     text,
    data        jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX report_event_report_idx ON report_event (report_id, id);

-- Rows outside every month's partition land here, so a step is never refused for want of a partition.
CREATE TABLE report_event_default PARTITION OF report_event DEFAULT;
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date FROM report_event_unpartitioned
        UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF report_event FOR VALUES FROM (%L) TO (%L)',
                       'report_event_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

INSERT INTO report_event (id, report_id, at, kind, public, actor_id, actor_role, actor_unit, from_status, to_status,
                          message, data) OVERRIDING SYSTEM VALUE
SELECT id, report_id, at, kind, public, actor_id, actor_role, actor_unit, from_status, to_status, message, data
  FROM report_event_unpartitioned;
SELECT setval(pg_get_serial_sequence('report_event', 'id'),
              greatest((SELECT max(id) FROM report_event_unpartitioned), 1),
              (SELECT max(id) FROM report_event_unpartitioned) IS NOT NULL);
DROP TABLE report_event_unpartitioned;
