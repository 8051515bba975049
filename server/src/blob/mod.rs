//! The blob store: immutable chunks named by their BLAKE3 hash.
//!
//! [`BlobStore`] is the boundary; local disk is the embedded engine (an S3-compatible
//! store comes later). Promises every engine keeps:
//! - `put` stores bytes only under their own hash (a mismatch is refused and nothing is
//!   kept) and returns only once the blob is durable;
//! - `put` is idempotent, and concurrent puts of one hash are safe; a put of a blob that
//!   exists refreshes its age, so collection waits a full grace period after it;
//! - `get` verifies the bytes against the hash before handing them out.

pub mod local;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use cubby_proto::ContentHash;

pub use local::LocalBlobStore;

/// Whether a put wrote a new blob or found it present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Existed,
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no blob {0}")]
    NotFound(ContentHash),
    #[error("content does not match hash {expected}")]
    HashMismatch { expected: ContentHash },
    #[error("blob {0} is corrupt on disk")]
    Corrupt(ContentHash),
    #[error("the blob store is full")]
    Full,
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The blob store. See the module docs for the promises.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `data` as blob `hash`, durably. `HashMismatch` if `data` hashes otherwise.
    async fn put(&self, hash: ContentHash, data: Bytes) -> Result<PutOutcome, BlobError>;

    /// The verified bytes of blob `hash`.
    async fn get(&self, hash: ContentHash) -> Result<Bytes, BlobError>;

    /// Whether blob `hash` is present.
    async fn contains(&self, hash: ContentHash) -> Result<bool, BlobError>;

    /// Removes blob `hash`; removing an absent blob is not an error.
    async fn delete(&self, hash: ContentHash) -> Result<(), BlobError>;

    /// Removes blob `hash` only if it was last put before `cutoff`: whether it is gone
    /// (absent counts as gone). Collection decides on a listing made at the start of
    /// its pass; a chunk put again since (a one-shot upload re-sending it before any
    /// metadata names it) is young again and stays.
    async fn delete_if_older_than(
        &self,
        hash: ContentHash,
        cutoff: SystemTime,
    ) -> Result<bool, BlobError>;

    /// Blobs last put before `cutoff` (a put of an existing blob counts as a put):
    /// the candidates for garbage collection.
    async fn list_older_than(&self, cutoff: SystemTime) -> Result<Vec<ContentHash>, BlobError>;
}
