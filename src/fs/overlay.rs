//! The local view of journaled namespace changes: what the tree looks like once the
//! operations waiting in the [`journal`](super::journal) are applied, laid over the
//! server's listings until the server has applied them.
//!
//! Every entry touched by a pending operation is held here (created or moved entries
//! with their new parent and name, removed ones as removed), with the number of pending
//! operations that touch it; when the last of them is applied by the server, the entry
//! leaves the overlay and the server's listing shows the same thing.

use std::collections::{BTreeSet, HashMap};

use cubby_proto::api::Entry;

use super::journal::Op;
use super::listing::Listing;

/// What the overlay says about one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlaid {
    /// A pending operation removed it.
    Removed,
    /// Pending operations created or moved it: this is how it looks now.
    Present(Entry),
    /// No pending operation touches it.
    Untouched,
}

#[derive(Debug, Default)]
pub struct Overlay {
    entries: HashMap<u64, (Entry, usize)>,
    removed: HashMap<u64, usize>,
    /// The ids in `entries` by parent, so a listing costs its own size.
    by_parent: HashMap<u64, BTreeSet<u64>>,
    /// The ids in `entries` by parent and name, so a lookup costs no scan of the
    /// directory (an rsync of thousands of files looks each one up several times).
    by_name: HashMap<(u64, String), BTreeSet<u64>>,
    /// Directories whose times a pending operation set (a change inside them, or their
    /// own attributes): the times they show until that operation is applied, with the
    /// count of operations applied when they were set. The server's answer to an
    /// earlier operation never shows older times meanwhile (rsync took such a time
    /// for its own, skipped its last touch-up, and the server kept the later change's).
    touched: HashMap<u64, Touched>,
    /// Operations laid over, and retired, since the start: both happen in journal
    /// order, so an operation is retired when `retired` reaches its count.
    applied: u64,
    retired: u64,
}

/// A directory's times as pending operations leave them.
#[derive(Debug, Clone, Copy)]
struct Touched {
    mtime_ns: i64,
    ctime_ns: i64,
    /// `Overlay::applied` when they were set: they hold until that many are retired.
    until: u64,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.removed.is_empty() && self.touched.is_empty()
    }

    /// `entry` with the times pending operations gave it (directories only).
    pub fn with_times(&self, mut entry: Entry) -> Entry {
        if let Some(touched) = self.touched.get(&entry.id) {
            entry.mtime_ns = touched.mtime_ns;
            entry.ctime_ns = touched.ctime_ns;
        }
        entry
    }

    /// Lays a newly journaled operation over the view; `canon` maps ids to the server's.
    pub fn apply(&mut self, op: &Op, canon: impl Fn(u64) -> u64) {
        self.applied += 1;
        if let Op::SetAttrs { entry, .. } = op
            && entry.kind == cubby_proto::api::EntryKind::Dir
        {
            self.touched.insert(
                canon(entry.id),
                Touched {
                    mtime_ns: entry.mtime_ns,
                    ctime_ns: entry.ctime_ns,
                    until: self.applied,
                },
            );
        }
        match op {
            Op::Create { entry, .. } | Op::Mkdir { entry } | Op::SetAttrs { entry, .. } => {
                self.put(entry, &canon)
            }
            Op::Rename { entry, replaced } => {
                self.put(entry, &canon);
                if let Some(replaced) = replaced {
                    *self.removed.entry(canon(*replaced)).or_default() += 1;
                }
            }
            Op::Delete { id, .. } => *self.removed.entry(canon(*id)).or_default() += 1,
        }
    }

    fn put(&mut self, entry: &Entry, canon: &impl Fn(u64) -> u64) {
        let mut entry = entry.clone();
        entry.id = canon(entry.id);
        entry.parent_id = entry.parent_id.map(canon);
        if let Some((old, _)) = self.entries.get(&entry.id)
            && (old.parent_id != entry.parent_id || old.name != entry.name)
        {
            let (old_parent, old_name) = (old.parent_id, old.name.clone());
            self.unindex(entry.id, old_parent, &old_name);
        }
        self.index(entry.id, entry.parent_id, &entry.name);
        let slot = self.entries.entry(entry.id).or_insert((entry.clone(), 0));
        slot.0 = entry;
        slot.1 += 1;
    }

    fn index(&mut self, id: u64, parent: Option<u64>, name: &str) {
        let Some(parent) = parent else { return };
        self.by_parent.entry(parent).or_default().insert(id);
        self.by_name
            .entry((parent, name.to_owned()))
            .or_default()
            .insert(id);
    }

    fn unindex(&mut self, id: u64, parent: Option<u64>, name: &str) {
        let Some(parent) = parent else { return };
        if let Some(ids) = self.by_parent.get_mut(&parent) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_parent.remove(&parent);
            }
        }
        let key = (parent, name.to_owned());
        if let Some(ids) = self.by_name.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_name.remove(&key);
            }
        }
    }

    /// The server applied `op`: it no longer needs laying over.
    pub fn retire(&mut self, op: &Op, canon: impl Fn(u64) -> u64) {
        self.retired += 1;
        let retired = self.retired;
        if !self.touched.is_empty() {
            self.touched.retain(|_, touched| touched.until > retired);
        }
        fn release<T>(map: &mut HashMap<u64, T>, id: u64, count: impl Fn(&mut T) -> &mut usize) {
            if let Some(slot) = map.get_mut(&id) {
                let n = count(slot);
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&id);
                }
            }
        }
        let id = match op {
            Op::Create { entry, .. }
            | Op::Mkdir { entry }
            | Op::SetAttrs { entry, .. }
            | Op::Rename { entry, .. } => Some(canon(entry.id)),
            Op::Delete { .. } => None,
        };
        if let Some(id) = id {
            let place = self
                .entries
                .get(&id)
                .map(|(e, _)| (e.parent_id, e.name.clone()));
            release(&mut self.entries, id, |s| &mut s.1);
            if !self.entries.contains_key(&id)
                && let Some((parent, name)) = place
            {
                self.unindex(id, parent, &name);
            }
        }
        match op {
            Op::Create { .. } | Op::Mkdir { .. } | Op::SetAttrs { .. } => {}
            Op::Rename { replaced, .. } => {
                if let Some(replaced) = replaced {
                    release(&mut self.removed, canon(*replaced), |n| n);
                }
            }
            Op::Delete { id, .. } => release(&mut self.removed, canon(*id), |n| n),
        }
    }

    /// A directory's content changed at `time`, by the operation laid over last: it
    /// shows that time until the operation is retired.
    pub fn touch(&mut self, id: u64, time: i64) {
        if let Some((entry, _)) = self.entries.get_mut(&id) {
            entry.mtime_ns = time;
            entry.ctime_ns = time;
        }
        self.touched.insert(
            id,
            Touched {
                mtime_ns: time,
                ctime_ns: time,
                until: self.applied,
            },
        );
    }

    /// The server created local entry `local` as `server`.
    pub fn rekey(&mut self, local: u64, server: u64) {
        if let Some((mut entry, count)) = self.entries.remove(&local) {
            self.unindex(local, entry.parent_id, &entry.name);
            entry.id = server;
            self.index(server, entry.parent_id, &entry.name);
            self.entries.insert(server, (entry, count));
        }
        if let Some(count) = self.removed.remove(&local) {
            self.removed.insert(server, count);
        }
        if let Some(touched) = self.touched.remove(&local) {
            self.touched.insert(server, touched);
        }
        let children = self.by_parent.get(&local).cloned().unwrap_or_default();
        for child in children {
            if let Some((entry, _)) = self.entries.get_mut(&child) {
                entry.parent_id = Some(server);
                let name = entry.name.clone();
                self.unindex(child, Some(local), &name);
                self.index(child, Some(server), &name);
            }
        }
    }

    /// What the overlay says about entry `id` (a canonical id).
    pub fn get(&self, id: u64) -> Overlaid {
        if self.removed.contains_key(&id) {
            Overlaid::Removed
        } else if let Some((entry, _)) = self.entries.get(&id) {
            Overlaid::Present(entry.clone())
        } else {
            Overlaid::Untouched
        }
    }

    /// Whether the server's `entry` still shows where the server lists it: no pending
    /// operation removed, moved or changed it.
    fn shows(&self, entry: &Entry) -> bool {
        !self.removed.contains_key(&entry.id) && !self.entries.contains_key(&entry.id)
    }

    /// The entries pending operations put in directory `dir`.
    fn placed_in(&self, dir: u64) -> impl Iterator<Item = &Entry> {
        self.by_parent
            .get(&dir)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
            .map(|(entry, _)| entry)
            .filter(|e| !self.removed.contains_key(&e.id))
    }

    /// The children of directory `dir` (canonical): the server's, as pending operations
    /// leave them.
    pub fn children(&self, dir: u64, server: &Listing) -> Vec<Entry> {
        let mut out: Vec<Entry> = server
            .iter()
            .filter(|e| self.shows(e))
            .map(|e| self.with_times(e.clone()))
            .collect();
        out.extend(self.placed_in(dir).cloned());
        out
    }

    /// The child `name` of directory `dir`, as [`children`](Self::children) would list
    /// it, found without building the listing.
    pub fn child(&self, dir: u64, server: &Listing, name: &str) -> Option<Entry> {
        let placed = self
            .by_name
            .get(&(dir, name.to_owned()))
            .into_iter()
            .flatten()
            .filter(|id| !self.removed.contains_key(id))
            .find_map(|id| self.entries.get(id));
        if let Some((entry, _)) = placed {
            return Some(entry.clone());
        }
        server
            .get(name)
            .filter(|e| self.shows(e))
            .map(|e| self.with_times(e.clone()))
    }

    /// Whether directory `dir` has any child, as [`children`](Self::children) would
    /// list them.
    pub fn has_children(&self, dir: u64, server: &Listing) -> bool {
        self.placed_in(dir).next().is_some() || server.iter().any(|e| self.shows(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cubby_proto::api::EntryKind;

    fn entry(id: u64, parent: u64, name: &str) -> Entry {
        super::super::journal::test_entry(id, parent, name, EntryKind::File)
    }

    fn names(list: &[Entry]) -> Vec<&str> {
        let mut names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn pending_changes_show_until_the_server_applied_them() {
        let same = |id| id;
        let server = Listing::from_entries([entry(10, 1, "a"), entry(11, 1, "b")]);
        let mut overlay = Overlay::default();
        let create = Op::Create {
            entry: entry(100, 1, "new"),
            uid: None,
            gid: None,
        };
        let rename = Op::Rename {
            entry: entry(10, 2, "moved"),
            replaced: None,
        };
        let delete = Op::Delete {
            id: 11,
            parent: None,
        };
        for op in [&create, &rename, &delete] {
            overlay.apply(op, same);
        }
        assert_eq!(names(&overlay.children(1, &server)), ["new"]);
        assert_eq!(names(&overlay.children(2, &Listing::default())), ["moved"]);
        // A lookup finds what the listing lists, and nothing else.
        assert_eq!(overlay.child(1, &server, "new").map(|e| e.id), Some(100));
        assert_eq!(overlay.child(1, &server, "a"), None, "moved away");
        assert_eq!(overlay.child(1, &server, "b"), None, "deleted");
        let moved = overlay.child(2, &Listing::default(), "moved");
        assert_eq!(moved.map(|e| e.id), Some(10));
        assert!(overlay.has_children(1, &server));
        let only_b = Listing::from_entries([entry(11, 3, "b")]);
        assert!(
            !overlay.has_children(3, &only_b),
            "its one child is deleted"
        );
        assert_eq!(overlay.get(11), Overlaid::Removed);

        // The server created 100 as 50 and applied everything.
        overlay.rekey(100, 50);
        let canon = |id| if id == 100 { 50 } else { id };
        for op in [&create, &rename, &delete] {
            overlay.retire(op, canon);
        }
        assert!(overlay.is_empty());
        assert_eq!(overlay.get(50), Overlaid::Untouched);
    }

    #[test]
    fn a_directory_shows_the_times_of_its_last_pending_change() {
        let same = |id| id;
        let mut overlay = Overlay::default();
        let dir = |mtime: i64| {
            let mut dir = super::super::journal::test_entry(5, 1, "d", EntryKind::Dir);
            dir.mtime_ns = mtime;
            dir.ctime_ns = mtime;
            dir
        };
        // rsync: the directory's own times first, then a file created inside it.
        let times = Op::SetAttrs {
            entry: dir(100),
            attrs: Default::default(),
        };
        overlay.apply(&times, same);
        let create = Op::Create {
            entry: entry(101, 5, "f"),
            uid: None,
            gid: None,
        };
        overlay.apply(&create, same);
        overlay.touch(5, 200);
        // The server's answer to the first change (time 100) shows the second's time.
        overlay.retire(&times, same);
        assert_eq!(overlay.with_times(dir(100)).mtime_ns, 200);
        assert_eq!(
            names(&overlay.children(1, &Listing::from_entries([dir(100)]))),
            ["d"]
        );
        assert_eq!(
            overlay.children(1, &Listing::from_entries([dir(100)]))[0].mtime_ns,
            200
        );
        // Once everything is applied, the server's times are the times.
        overlay.retire(&create, same);
        assert_eq!(overlay.with_times(dir(300)).mtime_ns, 300);
        assert!(overlay.is_empty());
    }

    #[test]
    fn an_entry_stays_while_any_operation_on_it_is_pending() {
        let same = |id| id;
        let mut overlay = Overlay::default();
        let create = Op::Mkdir {
            entry: entry(100, 1, "d"),
        };
        let rename = Op::Rename {
            entry: entry(100, 1, "e"),
            replaced: None,
        };
        overlay.apply(&create, same);
        overlay.apply(&rename, same);
        overlay.retire(&create, same);
        match overlay.get(100) {
            Overlaid::Present(entry) => assert_eq!(entry.name, "e"),
            other => panic!("expected the renamed entry, got {other:?}"),
        }
        overlay.retire(&rename, same);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_child_is_found_by_its_current_name_only() {
        let same = |id| id;
        let server = Listing::from_entries([entry(10, 1, "kept")]);
        let mut overlay = Overlay::default();
        let create = Op::Create {
            entry: entry(100, 1, ".f.tmp"),
            uid: None,
            gid: None,
        };
        let rename = Op::Rename {
            entry: entry(100, 1, "f"),
            replaced: None,
        };
        overlay.apply(&create, same);
        assert_eq!(overlay.child(1, &server, ".f.tmp").map(|e| e.id), Some(100));
        overlay.apply(&rename, same);
        assert_eq!(overlay.child(1, &server, ".f.tmp"), None);
        assert_eq!(overlay.child(1, &server, "f").map(|e| e.id), Some(100));
        assert_eq!(overlay.child(2, &server, "f"), None);
        assert_eq!(overlay.child(1, &server, "kept").map(|e| e.id), Some(10));
        overlay.rekey(100, 50);
        assert_eq!(overlay.child(1, &server, "f").map(|e| e.id), Some(50));
        let delete = Op::Delete {
            id: 50,
            parent: Some(1),
        };
        overlay.apply(&delete, same);
        assert_eq!(overlay.child(1, &server, "f"), None);
    }

    #[test]
    fn a_new_directorys_children_follow_its_server_id() {
        let same = |id| id;
        let mut overlay = Overlay::default();
        let mkdir = Op::Mkdir {
            entry: entry(100, 1, "d"),
        };
        let create = Op::Create {
            entry: entry(101, 100, "f"),
            uid: None,
            gid: None,
        };
        let moved = Op::Rename {
            entry: entry(101, 1, "g"),
            replaced: None,
        };
        overlay.apply(&mkdir, same);
        overlay.apply(&create, same);
        assert_eq!(names(&overlay.children(100, &Listing::default())), ["f"]);
        overlay.rekey(100, 40);
        assert_eq!(names(&overlay.children(40, &Listing::default())), ["f"]);
        assert!(overlay.children(100, &Listing::default()).is_empty());
        overlay.apply(&moved, same);
        assert!(overlay.children(40, &Listing::default()).is_empty());
        assert_eq!(names(&overlay.children(1, &Listing::default())), ["d", "g"]);
        let canon = |id| if id == 100 { 40 } else { id };
        for op in [&mkdir, &create, &moved] {
            overlay.retire(op, canon);
        }
        assert!(overlay.is_empty());
        assert!(overlay.by_parent.is_empty(), "{:?}", overlay.by_parent);
        assert!(overlay.by_name.is_empty(), "{:?}", overlay.by_name);
    }
}
