//! Local caches of the client. Everything here is disposable: deleting it at any time
//! loses nothing (written data lives in the staging area, never here).

pub mod chunks;
