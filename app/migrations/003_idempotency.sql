-- Responses to writes sent with an Idempotency-Key, replayed when the client retries the same request.
CREATE TABLE idempotent_request (
    owner       text        NOT NULL,   -- who sent it (a resident's or client's id): keys are per caller
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,   -- method, path and body: the same key with another request is refused
    status      smallint,
    body        bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotent_request_created_idx ON idempotent_request (created_at);
