-- Schema version 7: answers to requests that carried an idempotency key, so a client
-- that sends one again (its answer was lost, or its record of having sent it was)
-- gets the first answer instead of a second application.

-- `request_hash` is the BLAKE3 hash of the key with the request's method, path and
-- body: one key covers every request of one journaled change, each kept apart.
CREATE TABLE replies (
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_ns   INTEGER NOT NULL,
    PRIMARY KEY (user_id, request_hash)
);
CREATE INDEX replies_created ON replies(created_ns);
