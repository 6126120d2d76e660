-- Apps a resident lets read their health summary (the VNeID display): a machine client holding the
-- health_display role reads it only while the resident's grant to that client is in force.
-- (Consents of health_consent name a facility; an app is not one, so it has its own small table.)
CREATE TABLE health_app_grant (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    client_id text NOT NULL,                       -- identity's machine client id
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CHECK (expires_at > granted_at)
);
-- one grant in force per app: granting again replaces it (the old one is revoked in the same transaction)
CREATE UNIQUE INDEX health_app_grant_live ON health_app_grant (patient_id, client_id) WHERE revoked_at IS NULL;
