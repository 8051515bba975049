//! `cubby`: the Cubby client. Today: the command line (`login`, `upload`, `download`)
//! over the chunked protocol. The FUSE mount builds on the same modules.

pub mod cache;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod fs;
pub mod mount;
pub mod progress;
pub mod remote;
pub mod transfer;
