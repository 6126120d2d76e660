-- A broadcast's deliveries by status, kept up to date by the statements that change them (store.py: fan_out_batch,
-- claim_due, record_results, skip_pending_deliveries), so that `GET /v1/broadcasts/{id}` reads one row instead of
-- counting up to a million delivery rows.
--
-- A table of its own, not columns of `broadcast`: the fan-out holds the broadcast row (FOR UPDATE) for each whole
-- batch transaction, and every claim and record of the same broadcast would wait for it.

CREATE TABLE broadcast_delivery_count (
    broadcast_id bigint PRIMARY KEY REFERENCES broadcast (id) ON DELETE CASCADE,
    pending      bigint NOT NULL DEFAULT 0,
    sending      bigint NOT NULL DEFAULT 0,
    sent         bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    skipped      bigint NOT NULL DEFAULT 0
);

-- Broadcasts sent before this migration: counted once, here.
INSERT INTO broadcast_delivery_count (broadcast_id, pending, sending, sent, failed, skipped)
SELECT n.broadcast_id,
       count(*) FILTER (WHERE d.status = 'pending'),
       count(*) FILTER (WHERE d.status = 'sending'),
       count(*) FILTER (WHERE d.status = 'sent'),
       count(*) FILTER (WHERE d.status = 'failed'),
       count(*) FILTER (WHERE d.status = 'skipped')
FROM notification_delivery d
JOIN notification n ON n.id = d.notification_id
WHERE n.broadcast_id IS NOT NULL
GROUP BY n.broadcast_id;
