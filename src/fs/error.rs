//! Errors of the filesystem core, and their one mapping to errno.

use cubby_proto::ErrorCode;

use crate::remote::RemoteError;
use crate::transfer::UploadError;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument")]
    Invalid,
    #[error("file name too long")]
    NameTooLong,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("operation not supported")]
    NotSupported,
    #[error("no space left on the server")]
    NoSpace,
    #[error("file too large")]
    TooLarge,
    #[error("bad file handle")]
    BadHandle,
    #[error("no such attribute")]
    NoAttribute,
    #[error("access denied by the server (log in again)")]
    AccessDenied,
    #[error("I/O error: {0}")]
    Io(String),
    /// The server cannot be reached and the local state cannot answer.
    #[error("the server is unreachable")]
    Offline,
    /// The server answered but cannot take the request for now (an internal error, out
    /// of storage): what waits locally is kept and sent later. Never a local ENOSPC.
    #[error("the server cannot take this for now: {0}")]
    Unavailable(String),
    /// A write changed a file while a commit read it: that read is not sent (see
    /// `writeback`). Never reaches the kernel.
    #[error("the file changed while it was read for a commit")]
    Overtaken,
}

impl FsError {
    /// The errno the kernel hears.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NotPermitted => libc::EPERM,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::NoSpace => libc::ENOSPC,
            FsError::TooLarge => libc::EFBIG,
            FsError::BadHandle => libc::EBADF,
            FsError::NoAttribute => libc::ENODATA,
            FsError::AccessDenied => libc::EACCES,
            FsError::Io(_) | FsError::Offline | FsError::Unavailable(_) | FsError::Overtaken => {
                libc::EIO
            }
        }
    }
}

impl From<RemoteError> for FsError {
    fn from(error: RemoteError) -> Self {
        let Some(code) = error.code() else {
            tracing::warn!(%error, "server request failed");
            return FsError::Io(error.to_string());
        };
        match code {
            ErrorCode::NotFound | ErrorCode::UploadExpired => FsError::NotFound,
            ErrorCode::AlreadyExists | ErrorCode::UserExists => FsError::Exists,
            ErrorCode::NotADirectory => FsError::NotDir,
            ErrorCode::IsADirectory => FsError::IsDir,
            ErrorCode::DirectoryNotEmpty => FsError::NotEmpty,
            ErrorCode::InvalidName | ErrorCode::InvalidMove | ErrorCode::BadRequest => {
                FsError::Invalid
            }
            ErrorCode::Unauthorized | ErrorCode::InvalidCredentials | ErrorCode::Forbidden => {
                FsError::AccessDenied
            }
            ErrorCode::PayloadTooLarge => FsError::TooLarge,
            // The server's disk is full: not this machine's (an application seeing
            // ENOSPC would free local space for nothing).
            ErrorCode::InsufficientStorage | ErrorCode::Internal | ErrorCode::Unavailable => {
                tracing::warn!(%error, "the server cannot take a request for now");
                FsError::Unavailable(error.to_string())
            }
            ErrorCode::VersionConflict
            | ErrorCode::ChunksMissing
            | ErrorCode::HashMismatch
            | ErrorCode::RangeNotSatisfiable => {
                tracing::warn!(%error, "server refused a request");
                FsError::Io(error.to_string())
            }
        }
    }
}

impl From<UploadError> for FsError {
    fn from(error: UploadError) -> Self {
        match error {
            UploadError::Remote(remote) => remote.into(),
            UploadError::ChangedDuringUpload(_) => FsError::Overtaken,
            other => {
                tracing::warn!(error = %other, "upload failed");
                FsError::Io(other.to_string())
            }
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(error: std::io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOSPC) => FsError::NoSpace,
            _ => FsError::Io(error.to_string()),
        }
    }
}
