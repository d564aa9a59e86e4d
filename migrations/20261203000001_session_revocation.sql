-- Sessions signed out before they expire. A session token is a signed
-- JWT that every control-plane replica can check alone; signing out
-- records its id here until it would have expired anyway, and every
-- request checks it in the same query that loads the user.
CREATE TABLE revoked_sessions (
    jti text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
