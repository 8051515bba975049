//! The local view of journaled namespace changes: what the tree looks like once the
//! operations waiting in the [`journal`](super::journal) are applied, laid over the
//! server's listings until the server has applied them.
//!
//! Every entry touched by a pending operation is held here (created or moved entries
//! with their new parent and name, removed ones as removed), with the number of pending
//! operations that touch it; when the last of them is applied by the server, the entry
//! leaves the overlay and the server's listing shows the same thing.

use std::collections::HashMap;

use cubby_proto::api::Entry;

use super::journal::Op;

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
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.removed.is_empty()
    }

    /// Lays a newly journaled operation over the view; `canon` maps ids to the server's.
    pub fn apply(&mut self, op: &Op, canon: impl Fn(u64) -> u64) {
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
        let slot = self.entries.entry(entry.id).or_insert((entry.clone(), 0));
        slot.0 = entry;
        slot.1 += 1;
    }

    /// The server applied `op`: it no longer needs laying over.
    pub fn retire(&mut self, op: &Op, canon: impl Fn(u64) -> u64) {
        fn release<T>(map: &mut HashMap<u64, T>, id: u64, count: impl Fn(&mut T) -> &mut usize) {
            if let Some(slot) = map.get_mut(&id) {
                let n = count(slot);
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&id);
                }
            }
        }
        match op {
            Op::Create { entry, .. } | Op::Mkdir { entry } | Op::SetAttrs { entry, .. } => {
                release(&mut self.entries, canon(entry.id), |s| &mut s.1)
            }
            Op::Rename { entry, replaced } => {
                release(&mut self.entries, canon(entry.id), |s| &mut s.1);
                if let Some(replaced) = replaced {
                    release(&mut self.removed, canon(*replaced), |n| n);
                }
            }
            Op::Delete { id, .. } => release(&mut self.removed, canon(*id), |n| n),
        }
    }

    /// The server created local entry `local` as `server`.
    pub fn rekey(&mut self, local: u64, server: u64) {
        if let Some((mut entry, count)) = self.entries.remove(&local) {
            entry.id = server;
            self.entries.insert(server, (entry, count));
        }
        if let Some(count) = self.removed.remove(&local) {
            self.removed.insert(server, count);
        }
        for (entry, _) in self.entries.values_mut() {
            if entry.parent_id == Some(local) {
                entry.parent_id = Some(server);
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

    /// The children of directory `dir` (canonical): the server's, as pending operations
    /// leave them.
    pub fn children(&self, dir: u64, server: &[Entry]) -> Vec<Entry> {
        let mut out: Vec<Entry> = server
            .iter()
            .filter(|e| !self.removed.contains_key(&e.id) && !self.entries.contains_key(&e.id))
            .cloned()
            .collect();
        out.extend(
            self.entries
                .values()
                .map(|(entry, _)| entry)
                .filter(|e| e.parent_id == Some(dir) && !self.removed.contains_key(&e.id))
                .cloned(),
        );
        out
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
        let server = vec![entry(10, 1, "a"), entry(11, 1, "b")];
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
        assert_eq!(names(&overlay.children(2, &[])), ["moved"]);
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
}
