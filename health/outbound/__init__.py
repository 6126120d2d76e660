"""Health outbound: finished visits to the social-insurance endpoint through an outbox (retried with backoff by a
worker job, idempotent at the receiver by a visit key), and its local stand-in receiver for dev and tests."""
