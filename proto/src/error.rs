//! The error body every failed request answers with, and its stable codes.
//!
//! `{"error":{"code":"version_conflict","message":"..."},"current_version":3}`: clients
//! branch on `code` (never on `message`, which is for people).

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Adding a code is compatible; renaming is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: a missing or unparsable field, broken multipart.
    BadRequest,
    /// A name or path is not valid ('.', '..', '/', NUL, empty, longer than 255 bytes).
    InvalidName,
    /// No credentials, or credentials that are not valid (bad signature, expired...).
    Unauthorized,
    /// Wrong username or password.
    InvalidCredentials,
    /// A signed URL was tampered with or has expired.
    Forbidden,
    /// Nothing at that id, path or version for this user.
    NotFound,
    /// The base version is not the current version (or a create found an entry).
    VersionConflict,
    /// An entry already exists at that path.
    AlreadyExists,
    /// A path component or target is not a directory.
    NotADirectory,
    /// A directory was given where a file was expected.
    IsADirectory,
    /// A directory that is not empty cannot be removed without `recursive`.
    DirectoryNotEmpty,
    /// A move would put a directory inside itself, or move the root.
    InvalidMove,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// The requested byte range lies outside the content.
    RangeNotSatisfiable,
    /// Content does not match its declared hash or size.
    HashMismatch,
    /// `upload/complete` found chunks that were never sent.
    ChunksMissing,
    /// The upload session is unknown or has expired.
    UploadExpired,
    /// The server's storage is full.
    InsufficientStorage,
    /// A user of that name exists.
    UserExists,
    /// Something failed on the server; the detail is in its log, not in the answer.
    Internal,
    /// The server is starting or stopping.
    Unavailable,
}

/// `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// The whole error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// With `version_conflict`: the version that is current now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}
