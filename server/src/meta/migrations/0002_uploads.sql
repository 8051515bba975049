-- Schema version 2: chunked upload sessions.

CREATE TABLE uploads (
    id                TEXT PRIMARY KEY,
    user_id           INTEGER NOT NULL REFERENCES users(id),
    path              TEXT,
    file_id           INTEGER,
    parent_id         INTEGER,
    name              TEXT,
    base_version      INTEGER,
    size              INTEGER NOT NULL,
    hash              BLOB NOT NULL,
    created_ns        INTEGER NOT NULL,
    expires_ns        INTEGER NOT NULL,
    committed_file_id INTEGER,
    committed_version INTEGER,
    CHECK ((path IS NOT NULL) + (file_id IS NOT NULL) + (parent_id IS NOT NULL) = 1)
);
CREATE INDEX uploads_expiry ON uploads(expires_ns);

-- The chunk list of each session. A live session protects its chunks from collection.
CREATE TABLE upload_chunks (
    upload_id TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    size      INTEGER NOT NULL,
    received  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (upload_id, seq)
) WITHOUT ROWID;
CREATE INDEX upload_chunks_hash ON upload_chunks(hash);
