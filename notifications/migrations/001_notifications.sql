-- Notifications: devices, preferences, the inbox, the outbox and one delivery row per (notification, device).

CREATE TABLE notification_device (
    id                 uuid        PRIMARY KEY,
    resident_id        uuid        NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    session_id         uuid,
    fcm_token          text        NOT NULL UNIQUE,
    installation_id    text,
    platform           text        NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
    locale             text        NOT NULL CHECK (locale IN ('vi', 'en')),
    app_version        text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deactivated_at     timestamptz,
    deactivated_reason text
);
CREATE INDEX notification_device_resident_idx ON notification_device (resident_id) WHERE deactivated_at IS NULL;
CREATE INDEX notification_device_session_idx ON notification_device (session_id) WHERE deactivated_at IS NULL;

-- Push on or off per category; no row means on. Emergency alerts ignore it.
CREATE TABLE notification_preference (
    resident_id uuid    NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    category    text    NOT NULL,
    push        boolean NOT NULL,
    PRIMARY KEY (resident_id, category)
);

-- Quiet hours in Asia/Ho_Chi_Minh local time, and the ward the resident wants city news for.
CREATE TABLE notification_setting (
    resident_id uuid PRIMARY KEY REFERENCES resident (id) ON DELETE CASCADE,
    quiet_start time,
    quiet_end   time,
    home_unit   text,
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);
CREATE INDEX notification_setting_unit_idx ON notification_setting (home_unit);

-- The inbox: one row per resident and notification, with both languages rendered.
CREATE TABLE notification (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id     uuid        NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    category        text        NOT NULL,
    urgency         text        NOT NULL CHECK (urgency IN ('normal', 'emergency')),
    template        text        NOT NULL,
    title_vi        text        NOT NULL,
    body_vi         text        NOT NULL,
    title_en        text        NOT NULL,
    body_en         text        NOT NULL,
    deep_link       text,
    data            jsonb       NOT NULL DEFAULT '{}',
    idempotency_key text        NOT NULL,
    broadcast_id    bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    archived_at     timestamptz,
    UNIQUE (resident_id, idempotency_key)
);
CREATE INDEX notification_inbox_idx ON notification (resident_id, id DESC) WHERE archived_at IS NULL;
CREATE INDEX notification_unread_idx ON notification (resident_id) WHERE read_at IS NULL AND archived_at IS NULL;

-- Written in the caller's transaction; the worker expands each row into deliveries.
CREATE TABLE notification_outbox (
    notification_id bigint      PRIMARY KEY REFERENCES notification (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

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
    PRIMARY KEY (notification_id, device_id)
);
CREATE INDEX notification_delivery_due_idx ON notification_delivery (available_at)
    WHERE status IN ('pending', 'sending');
