-- The successor of a spent refresh token, encrypted by the vault, kept for the grace after the
-- rotation: parallel refreshes with one token (a phone's) all get this same successor. Cleared
-- at the session's next rotation once the grace has passed (the partial index finds those rows).
ALTER TABLE refresh_token ADD COLUMN successor_enc bytea;
CREATE INDEX refresh_token_successor_idx ON refresh_token (session_id) WHERE successor_enc IS NOT NULL;
