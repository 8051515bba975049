//! Wire types shared by the Cubby client (`cubby`) and server (`cubby-server`).
//!
//! Everything that crosses the HTTP boundary is defined here once: request and
//! response bodies, the error body and its stable codes, validated names and paths,
//! content hashes, and the chunking parameters (which are part of the protocol: a
//! client and a server that chunk differently would never share a chunk).

pub mod api;
pub mod chunking;
pub mod error;
pub mod hash;
pub mod path;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use hash::ContentHash;
pub use path::{Name, NameError, RemotePath};
