//! Extended attributes: the read-only `user.cubby.*` ones, and other `user.*` ones
//! stored on the server.

use super::*;

impl CubbyFs {
    // ---- extended attributes ----

    /// An extended attribute: the read-only `user.cubby.*` ones, other `user.*` ones from
    /// the server; other namespaces are not supported.
    pub fn xattr(&self, ino: u64, name: &str) -> FsResult<Option<Vec<u8>>> {
        let entry = self.getattr(ino)?;
        if let Some(key) = name.strip_prefix("user.cubby.") {
            if key == "sync" && ino == ROOT_INO {
                let status = serde_json::to_vec_pretty(&self.status())
                    .map_err(|e| FsError::Io(e.to_string()))?;
                return Ok(Some(status));
            }
            let staged = self.staged_copy(entry.id);
            let pending = is_local(entry.id) || staged.is_some_and(|s| s.lock().pending());
            return Ok(match key {
                "version" => Some(entry.version.to_string().into_bytes()),
                "hash" => entry.hash.map(|h| h.to_hex().into_bytes()),
                "status" if entry.kind == EntryKind::File => {
                    Some(if self.sync.is_conflicted(entry.id) {
                        b"conflict".to_vec()
                    } else if pending {
                        b"pending".to_vec()
                    } else {
                        b"synced".to_vec()
                    })
                }
                _ => None,
            });
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(entry.id);
        Ok(self.call(self.remote.xattr(id, name))?.map(|v| v.to_vec()))
    }

    pub fn xattr_names(&self, ino: u64) -> FsResult<Vec<String>> {
        let entry = self.getattr(ino)?;
        let mut names = vec!["user.cubby.version".to_owned()];
        if ino == ROOT_INO {
            names.push("user.cubby.sync".to_owned());
        }
        if entry.kind == EntryKind::File {
            names.extend(["user.cubby.hash".to_owned(), "user.cubby.status".to_owned()]);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(entry.id);
        names.extend(self.call(self.remote.xattr_names(id))?);
        Ok(names)
    }

    /// Sets a `user.*` attribute; `create` / `replace` as setxattr's flags.
    pub fn set_xattr(
        &self,
        ino: u64,
        name: &str,
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> FsResult<()> {
        let id = self.id_of(ino);
        if name.starts_with("user.cubby.") {
            return Err(FsError::NotPermitted);
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.journal.canonical(id);
        let mode = match (create, replace) {
            (true, _) => "create",
            (false, true) => "replace",
            (false, false) => "any",
        };
        match self.call(self.remote.set_xattr(id, name, value, mode)) {
            Ok(()) => Ok(()),
            Err(FsError::NotFound) if replace => Err(FsError::NoAttribute),
            Err(e) => Err(e),
        }
    }

    pub fn remove_xattr(&self, ino: u64, name: &str) -> FsResult<()> {
        if name.starts_with("user.cubby.") {
            return Err(FsError::NotPermitted);
        }
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.settle_journal()?;
        let id = self.id_of(ino);
        match self.call(self.remote.remove_xattr(id, name)) {
            Ok(()) => Ok(()),
            Err(FsError::NotFound) => Err(FsError::NoAttribute),
            Err(e) => Err(e),
        }
    }
}
