-- City broadcasts: announcements and emergency alerts to a ward, a unit's area or the whole city.

CREATE TABLE broadcast (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_by      uuid        NOT NULL REFERENCES resident (id),
    idempotency_key text        NOT NULL,
    target_unit     text        NOT NULL,
    urgency         text        NOT NULL CHECK (urgency IN ('normal', 'emergency')),
    title_vi        text        NOT NULL,
    body_vi         text        NOT NULL,
    title_en        text        NOT NULL,
    body_en         text        NOT NULL,
    deep_link       text,
    status          text        NOT NULL CHECK (status IN ('awaiting_approval', 'scheduled', 'running', 'done',
                                                           'cancelled')),
    scheduled_at    timestamptz NOT NULL,
    approved_by     uuid        REFERENCES resident (id),
    approved_at     timestamptz,
    recipients      integer     NOT NULL DEFAULT 0,
    -- fan-out progress, committed with each batch: a restarted worker goes on from here
    resume_after    uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    cancelled_at    timestamptz,
    UNIQUE (created_by, idempotency_key),
    CHECK (approved_by IS NULL OR approved_by <> created_by)
);
CREATE INDEX broadcast_due_idx ON broadcast (scheduled_at) WHERE status IN ('scheduled', 'running');

ALTER TABLE notification ADD CONSTRAINT notification_broadcast_fk FOREIGN KEY (broadcast_id) REFERENCES broadcast (id);
CREATE INDEX notification_broadcast_idx ON notification (broadcast_id) WHERE broadcast_id IS NOT NULL;
