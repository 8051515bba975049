-- Schema version 4: extended attributes in the user.* namespace.

CREATE TABLE xattrs (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (entry_id, name)
) WITHOUT ROWID;
