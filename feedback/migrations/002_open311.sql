-- Open311 GeoReport v2 clients: third-party apps that send reports for residents through /open311/v2.
-- Each key is an opaque random string shown once, when an admin creates it; only its SHA-256 is kept.
-- A client may hold several keys (to rotate one); reports it sends carry source 'open311:<name>'.
CREATE TABLE open311_client (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{1,62}$'),
    key_sha256  text        NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    created_by  uuid        REFERENCES resident (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_by  uuid        REFERENCES resident (id),
    revoked_at  timestamptz
);
CREATE INDEX open311_client_name_idx ON open311_client (name) WHERE revoked_at IS NULL;
