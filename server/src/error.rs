//! Errors as HTTP answers: every failure becomes `{"error":{"code","message"}}` with its
//! status. This is the one place that maps store errors to statuses; internal detail
//! is logged here and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cubby_proto::{ErrorBody, ErrorCode, ErrorDetail, NameError};

use crate::blob::BlobError;
use crate::meta::MetaError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub current_version: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current_version: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// A failure whose detail belongs in the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }
}

impl ApiError {
    /// The JSON body of this error's answer (also what a batch reports for one item).
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
            current_version: self.current_version,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, Json(self.into_body())).into_response()
    }
}

impl From<MetaError> for ApiError {
    fn from(error: MetaError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        let message = error.to_string();
        match error {
            MetaError::NotFound => Self::new(S::NOT_FOUND, C::NotFound, message),
            MetaError::AlreadyExists => Self::new(S::CONFLICT, C::AlreadyExists, message),
            MetaError::NotADirectory => Self::new(S::CONFLICT, C::NotADirectory, message),
            MetaError::IsADirectory => Self::new(S::CONFLICT, C::IsADirectory, message),
            MetaError::DirectoryNotEmpty => Self::new(S::CONFLICT, C::DirectoryNotEmpty, message),
            MetaError::InvalidMove => Self::new(S::BAD_REQUEST, C::InvalidMove, message),
            MetaError::UserExists => Self::new(S::CONFLICT, C::UserExists, message),
            MetaError::ChunksMissing => Self::new(S::CONFLICT, C::ChunksMissing, message),
            MetaError::VersionConflict { current } => Self {
                current_version: Some(current),
                ..Self::new(S::CONFLICT, C::VersionConflict, message)
            },
            MetaError::Backend(detail) => Self::internal(detail),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::Full => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
                "the server's storage is full; the upload was not committed",
            ),
            BlobError::HashMismatch { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::HashMismatch,
                error.to_string(),
            ),
            BlobError::NotFound(_) | BlobError::Corrupt(_) | BlobError::Io(_) => {
                Self::internal(error)
            }
        }
    }
}

impl From<NameError> for ApiError {
    fn from(error: NameError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
            error.to_string(),
        )
    }
}
