-- Deliveries grow with every push (a city-wide broadcast adds millions): partition them by month on `created_at`,
-- the time of their notification (notification.created_at, copied at insert and never changed; `available_at`
-- and `updated_at` move with every attempt, so neither can be the key). The kernel's partitions job
-- (app/partitions.py) keeps months ahead and, past a retention (default none), drops old months: a delivery is
-- the record of one push, the inbox item (`notification`) and a broadcast's counts stay.
--
-- The primary key must hold the partition key: (notification_id, device_id, created_at). As created_at is the
-- notification's own time, one (notification, device) still has one delivery (ON CONFLICT DO NOTHING).
-- The worker's claim reads the recent months only (store.DELIVERY_WINDOW_DAYS); older pending deliveries are expired.

ALTER TABLE notification_delivery RENAME TO notification_delivery_unpartitioned;
ALTER TABLE notification_delivery_unpartitioned
    RENAME CONSTRAINT notification_delivery_pkey TO notification_delivery_unpartitioned_pkey;
ALTER INDEX notification_delivery_due_idx RENAME TO notification_delivery_unpartitioned_due_idx;

CREATE TABLE notification_delivery (
    notification_id bigint      NOT NULL REFERENCES notification (id) ON DELETE CASCADE,
    device_id       uuid        NOT NULL REFERENCES notification_device (id) ON DELETE CASCADE,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    available_at    timestamptz NOT NULL DEFAULT now(),
    fcm_message_id  text,
    error_code      text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL,               -- the notification's created_at
    PRIMARY KEY (notification_id, device_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX notification_delivery_due_idx ON notification_delivery (available_at)
    WHERE status IN ('pending', 'sending');

-- Rows outside every month's partition land here, so a notification never fails for want of a partition.
CREATE TABLE notification_delivery_default PARTITION OF notification_delivery DEFAULT;
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', n.created_at AT TIME ZONE 'UTC')::date
          FROM notification_delivery_unpartitioned d JOIN notification n ON n.id = d.notification_id
        UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF notification_delivery FOR VALUES FROM (%L) TO (%L)',
                       'notification_delivery_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'), ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

INSERT INTO notification_delivery (notification_id, device_id, status, attempts, available_at, fcm_message_id,
                                   error_code, updated_at, created_at)
SELECT d.notification_id, d.device_id, d.status, d.attempts, d.available_at, d.fcm_message_id, d.error_code,
       d.updated_at, n.created_at
  FROM notification_delivery_unpartitioned d JOIN notification n ON n.id = d.notification_id;
DROP TABLE notification_delivery_unpartitioned;
