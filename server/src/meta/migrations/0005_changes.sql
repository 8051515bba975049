-- Schema version 5: the change feed behind GET /changes.

-- One row per change to an entry, numbered in commit order. Triggers fill it, so no
-- code path that writes entries can forget to. Rows older than the retention of the
-- feed are pruned.
CREATE TABLE changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL,
    entry_id      INTEGER NOT NULL,
    parent_id     INTEGER,
    name          TEXT NOT NULL,
    old_parent_id INTEGER,
    old_name      TEXT,
    created_ns    INTEGER NOT NULL
);
CREATE INDEX changes_user ON changes(user_id, seq);

-- Per user, the newest change pruning removed: a cursor older than it missed changes.
CREATE TABLE changes_pruned (
    user_id INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL
);

CREATE TRIGGER entries_insert_change AFTER INSERT ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns)
    VALUES (NEW.user_id, NEW.id, NEW.parent_id, NEW.name,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER));
END;

-- Every update: content (size, version, hash), attributes, deletion to the trash and
-- restore. A move or rename also records where the entry was.
CREATE TRIGGER entries_update_change AFTER UPDATE ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, old_parent_id, old_name,
                         created_ns)
    VALUES (NEW.user_id, NEW.id, NEW.parent_id, NEW.name,
            CASE WHEN OLD.parent_id IS NOT NEW.parent_id OR OLD.name IS NOT NEW.name
                 THEN OLD.parent_id END,
            CASE WHEN OLD.parent_id IS NOT NEW.parent_id OR OLD.name IS NOT NEW.name
                 THEN OLD.name END,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER));
END;

-- Purges of old trash.
CREATE TRIGGER entries_delete_change AFTER DELETE ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns)
    VALUES (OLD.user_id, OLD.id, OLD.parent_id, OLD.name,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER));
END;

-- Extended attributes change their entry (if it still exists).
CREATE TRIGGER xattrs_insert_change AFTER INSERT ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)
    FROM entries WHERE id = NEW.entry_id;
END;

CREATE TRIGGER xattrs_update_change AFTER UPDATE ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)
    FROM entries WHERE id = NEW.entry_id;
END;

CREATE TRIGGER xattrs_delete_change AFTER DELETE ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)
    FROM entries WHERE id = OLD.entry_id;
END;
