-- Schema version 6: the long-lived credentials a client renews its login token with.

-- One row per login. Only the BLAKE3 hash of the secret is kept, so a copy of the
-- database renews nobody's session. Each renewal moves the expiry on; a session
-- unused for its whole lifetime expires, and deleting the row revokes it.
CREATE TABLE sessions (
    secret_hash BLOB PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_ns  INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
