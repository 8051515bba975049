//! Whole-file transfers over the chunked protocol: [`upload`] and [`download`].

mod download;
mod upload;

pub use download::{DownloadError, DownloadReport, download};
pub use upload::{
    Base, ConflictReport, Target, UploadError, UploadReport, commit_local, recommit, upload,
};

/// Chunk transfers in flight at once, per file.
pub const PARALLEL_CHUNKS: usize = 4;
