//! `cubby`: the Cubby client: the FUSE mount (`fs`, `cache`, `mount`) and the command
//! line (`cli`), both over the typed HTTP client (`remote`) and whole-file transfers
//! (`transfer`). docs/ARCHITECTURE.md has the code map.

pub mod cache;
pub mod cli;
pub mod cli_error;
pub mod config;
pub mod conflict;
pub mod fs;
pub mod mount;
pub mod progress;
pub mod remote;
pub mod status;
pub mod transfer;
