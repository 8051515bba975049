//! A directory's listing as the caches hold it: entries by name, in name order, in
//! persistent maps. A copy costs two reference counts and an edit touches a path of the
//! tree, so the mount changes a cached listing of thousands of entries (a create, a
//! sibling's new times) without copying it, and a lookup finds a name without walking
//! the listing.

use cubby_proto::api::Entry;
use imbl::{HashMap, OrdMap};

#[derive(Debug, Clone, Default)]
pub struct Listing {
    by_name: OrdMap<String, Entry>,
    /// Each entry's name, by id.
    names: HashMap<u64, String>,
}

impl Listing {
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut listing = Self::default();
        for entry in entries {
            listing.put(entry);
        }
        listing
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.by_name.values()
    }

    pub fn to_vec(&self) -> Vec<Entry> {
        self.iter().cloned().collect()
    }

    /// `entry` is in the listing under its name, in place of whatever had that name and
    /// of its own earlier name.
    pub fn put(&mut self, entry: Entry) {
        self.remove_id(entry.id);
        if let Some(replaced) = self.by_name.get(&entry.name) {
            let replaced = replaced.id;
            self.names.remove(&replaced);
        }
        self.names.insert(entry.id, entry.name.clone());
        self.by_name.insert(entry.name.clone(), entry);
    }

    /// Entry `id` leaves the listing (if it is in it).
    pub fn remove_id(&mut self, id: u64) -> Option<Entry> {
        let name = self.names.remove(&id)?;
        self.by_name.remove(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cubby_proto::api::EntryKind;

    fn entry(id: u64, name: &str) -> Entry {
        super::super::journal::test_entry(id, 1, name, EntryKind::File)
    }

    fn names(listing: &Listing) -> Vec<(u64, &str)> {
        listing.iter().map(|e| (e.id, e.name.as_str())).collect()
    }

    #[test]
    fn a_name_holds_one_entry_and_an_entry_one_name() {
        let mut listing = Listing::from_entries([entry(3, "c"), entry(1, "a"), entry(2, "b")]);
        assert_eq!(names(&listing), [(1, "a"), (2, "b"), (3, "c")]);
        // Renamed within the directory: the old name goes.
        listing.put(entry(1, "d"));
        assert_eq!(names(&listing), [(2, "b"), (3, "c"), (1, "d")]);
        // Renamed over another: the replaced entry goes, by name and by id.
        listing.put(entry(2, "c"));
        assert_eq!(names(&listing), [(2, "c"), (1, "d")]);
        assert_eq!(listing.remove_id(3), None);
        assert_eq!(listing.remove_id(1).map(|e| e.name), Some("d".to_owned()));
        assert_eq!(names(&listing), [(2, "c")]);
        assert_eq!(listing.get("c").map(|e| e.id), Some(2));
    }

    #[test]
    fn an_edited_copy_leaves_the_original_as_it_was() {
        let original = Listing::from_entries([entry(1, "a"), entry(2, "b")]);
        let mut copy = original.clone();
        copy.put(entry(3, "c"));
        copy.remove_id(1);
        assert_eq!(names(&original), [(1, "a"), (2, "b")]);
        assert_eq!(names(&copy), [(2, "b"), (3, "c")]);
    }
}
