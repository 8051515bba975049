-- Cubby metadata, schema version 1. docs/STORAGE.md describes every table.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ns    INTEGER NOT NULL
);

-- The tree. Ids are never reused (AUTOINCREMENT), so a stale id never names a new entry.
CREATE TABLE entries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    parent_id  INTEGER REFERENCES entries(id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL
               CHECK (kind IN ('dir', 'file', 'symlink', 'fifo', 'char', 'block', 'socket')),
    mode       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    version    INTEGER NOT NULL DEFAULT 0,
    hash       BLOB,
    target     TEXT,
    deleted_ns INTEGER,
    -- Owner labels as the mount shows them (NULL: the user's own); rdev for devices.
    uid        INTEGER,
    gid        INTEGER,
    rdev       INTEGER NOT NULL DEFAULT 0,
    -- Access and change times (NULL: the modification time).
    atime_ns   INTEGER,
    ctime_ns   INTEGER
);
CREATE UNIQUE INDEX entries_live_name ON entries(parent_id, name) WHERE deleted_ns IS NULL;
CREATE UNIQUE INDEX entries_root ON entries(user_id) WHERE parent_id IS NULL;
CREATE INDEX entries_user ON entries(user_id);

CREATE TABLE versions (
    file_id    INTEGER NOT NULL REFERENCES entries(id),
    number     INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (file_id, number)
) WITHOUT ROWID;

CREATE TABLE version_chunks (
    file_id INTEGER NOT NULL,
    number  INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    hash    BLOB NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (file_id, number, seq),
    FOREIGN KEY (file_id, number) REFERENCES versions(file_id, number)
) WITHOUT ROWID;
CREATE INDEX version_chunks_hash ON version_chunks(hash);

-- Which chunks each user references: dedup is scoped to this set.
CREATE TABLE user_chunks (
    user_id INTEGER NOT NULL REFERENCES users(id),
    hash    BLOB NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;
