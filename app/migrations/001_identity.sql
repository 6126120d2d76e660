-- Identity: residents, sessions and their refresh tokens, roles, machine clients, signing keys.
-- Organisational units are a data file (app/identity/data/units.csv), read at start-up.

CREATE TABLE resident (
    id               uuid        PRIMARY KEY,
    -- the personal ID number: a keyed hash for look-up, AES-GCM ciphertext for display; never plain
    personal_id_hash bytea       NOT NULL UNIQUE,
    personal_id_enc  bytea       NOT NULL,
    idp_subject      text        UNIQUE,
    full_name        text,
    birth_date       date,
    sex              text        CHECK (sex IN ('male', 'female')),
    identity_level   smallint    CHECK (identity_level IN (1, 2)),
    auth_time        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE session (
    id             uuid        PRIMARY KEY,
    resident_id    uuid        NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    device_name    text        NOT NULL,
    platform       text        NOT NULL,
    identity_level smallint    NOT NULL,
    auth_time      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX session_resident_idx ON session (resident_id) WHERE revoked_at IS NULL;

-- One row per refresh token ever issued; a session is the token family.
CREATE TABLE refresh_token (
    token_hash  bytea       PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES session (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    spent_at    timestamptz,
    replaced_by bytea
);
CREATE INDEX refresh_token_session_idx ON refresh_token (session_id);

CREATE TABLE role_grant (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id uuid        NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    role        text        NOT NULL CHECK (role IN ('staff', 'transit_operator', 'health_facility',
                                                     'parking_operator', 'admin')),
    scope       text        NOT NULL DEFAULT '',
    granted_by  text        NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_by  text
);
CREATE UNIQUE INDEX role_grant_active_idx ON role_grant (resident_id, role, scope) WHERE revoked_at IS NULL;

-- Every grant and revocation, kept even when the grant row goes.
CREATE TABLE role_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('grant', 'revoke')),
    resident_id uuid        NOT NULL,
    role        text        NOT NULL,
    scope       text        NOT NULL,
    grant_id    bigint      NOT NULL,
    request_id  text
);

CREATE TABLE machine_client (
    id          text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{2,63}$'),
    name        text        NOT NULL,
    roles       text[]      NOT NULL,
    scope       text        NOT NULL DEFAULT '',
    public_jwk  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- The backend's own token-signing keys. The newest active key signs; every unretired key verifies.
CREATE TABLE signing_key (
    kid          text        PRIMARY KEY,
    alg          text        NOT NULL CHECK (alg IN ('ES256', 'EdDSA')),
    private_enc  bytea       NOT NULL,
    public_jwk   jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retire_after timestamptz
);
