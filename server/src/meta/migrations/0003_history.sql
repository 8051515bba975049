-- Schema version 3: who wrote each version from which device, and the trash.

ALTER TABLE versions ADD COLUMN author_id INTEGER;
ALTER TABLE versions ADD COLUMN device TEXT;

-- On a deleted entry: the id of the entry whose deletion removed it (itself for the
-- entry the user deleted, that entry for everything below it). The trash lists the
-- entries that are their own trash root; restoring one revives its whole subtree.
ALTER TABLE entries ADD COLUMN trash_root_id INTEGER;
CREATE INDEX entries_trash ON entries(user_id, trash_root_id) WHERE deleted_ns IS NOT NULL;
