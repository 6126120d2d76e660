-- Every API process reads the sessions revoked in the last minute every few seconds, so that a
-- logout whose Redis notice was lost is still refused everywhere: a range scan on this index.
CREATE INDEX session_revoked_at_idx ON session (revoked_at) WHERE revoked_at IS NOT NULL;
