-- Schema version 8: each change records the origin of the request that made it (the
-- client's X-Cubby-Origin, read through the server's SQL function
-- cubby_write_origin()), so a mount that follows the feed knows its own changes.

ALTER TABLE changes ADD COLUMN origin TEXT;

DROP TRIGGER entries_insert_change;
DROP TRIGGER entries_update_change;
DROP TRIGGER entries_delete_change;
DROP TRIGGER xattrs_insert_change;
DROP TRIGGER xattrs_update_change;
DROP TRIGGER xattrs_delete_change;

CREATE TRIGGER entries_insert_change AFTER INSERT ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns, origin)
    VALUES (NEW.user_id, NEW.id, NEW.parent_id, NEW.name,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
            cubby_write_origin());
END;

-- Every update: content (size, version, hash), attributes, deletion to the trash and
-- restore. A move or rename also records where the entry was.
CREATE TRIGGER entries_update_change AFTER UPDATE ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, old_parent_id, old_name,
                         created_ns, origin)
    VALUES (NEW.user_id, NEW.id, NEW.parent_id, NEW.name,
            CASE WHEN OLD.parent_id IS NOT NEW.parent_id OR OLD.name IS NOT NEW.name
                 THEN OLD.parent_id END,
            CASE WHEN OLD.parent_id IS NOT NEW.parent_id OR OLD.name IS NOT NEW.name
                 THEN OLD.name END,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
            cubby_write_origin());
END;

-- Purges of old trash.
CREATE TRIGGER entries_delete_change AFTER DELETE ON entries BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns, origin)
    VALUES (OLD.user_id, OLD.id, OLD.parent_id, OLD.name,
            CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
            cubby_write_origin());
END;

-- Extended attributes change their entry (if it still exists).
CREATE TRIGGER xattrs_insert_change AFTER INSERT ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns, origin)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
           cubby_write_origin()
    FROM entries WHERE id = NEW.entry_id;
END;

CREATE TRIGGER xattrs_update_change AFTER UPDATE ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns, origin)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
           cubby_write_origin()
    FROM entries WHERE id = NEW.entry_id;
END;

CREATE TRIGGER xattrs_delete_change AFTER DELETE ON xattrs BEGIN
    INSERT INTO changes (user_id, entry_id, parent_id, name, created_ns, origin)
    SELECT user_id, id, parent_id, name,
           CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER),
           cubby_write_origin()
    FROM entries WHERE id = OLD.entry_id;
END;
