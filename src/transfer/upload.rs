//! Uploading a local file: chunk it, announce the chunk list, send only the chunks the
//! server lacks (in parallel), and commit against a base version.
//!
//! The file is read twice: once to cut and hash it, once to send the missing chunks,
//! each re-read by offset and re-hashed, so a file that changes in between is refused
//! rather than sent torn. Memory holds at most [`PARALLEL_CHUNKS`] chunks.
//!
//! A stale base version never overwrites: the server answers 409, and the local bytes
//! are committed beside the winner as a conflicted copy (its chunks are already on the
//! server, so that costs no transfer).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cubby_proto::api::{BeginUploadRequest, ChunkSpec, EntryKind};
use cubby_proto::{ContentHash, ErrorCode, Name, RemotePath, chunking};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::PARALLEL_CHUNKS;
use crate::conflict::{conflicted_names, host_name};
use crate::progress::Progress;
use crate::remote::{Remote, RemoteError};

/// Which version an upload replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Whatever is current when the upload starts (or create the file).
    Latest,
    /// Create a new file; an existing one is a conflict.
    New,
    /// Exactly this version; anything else is a conflict.
    Version(u64),
}

/// When the upload lost a race: where its bytes went instead.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictReport {
    /// The version that won on the server.
    pub current_version: u64,
    /// Where the local bytes were committed.
    pub conflicted_copy: String,
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    pub path: String,
    pub file_id: u64,
    pub version: u64,
    pub size: u64,
    pub hash: ContentHash,
    pub chunks_total: usize,
    pub chunks_sent: usize,
    pub bytes_sent: u64,
    pub bytes_reused: u64,
    /// Set when the base version was stale and the bytes were kept as a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictReport>,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} changed while it was being uploaded; nothing was committed")]
    ChangedDuringUpload(PathBuf),
    #[error("{0} is a directory on the server")]
    RemoteIsDirectory(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Where an upload commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(RemotePath),
    /// A new version of an existing file, wherever it is now.
    File(u64),
    /// A name inside a directory given by id.
    Child {
        parent: u64,
        name: String,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Path(path) => path.to_string(),
            Target::File(id) => format!("file {id}"),
            Target::Child { parent, name } => format!("{name} in directory {parent}"),
        }
    }
}

/// A file cut into chunks.
struct Plan {
    size: u64,
    hash: ContentHash,
    /// Each chunk with its offset in the file.
    chunks: Vec<(u64, ChunkSpec)>,
}

fn plan(path: &Path, progress: &Progress) -> std::io::Result<Plan> {
    let file = std::fs::File::open(path)?;
    progress.phase("hashing", file.metadata()?.len());
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    for chunk in chunking::chunks(std::io::BufReader::with_capacity(1 << 20, file)) {
        let chunk = chunk?;
        whole.update(&chunk.data);
        let len = chunk.data.len() as u32;
        chunks.push((
            chunk.offset,
            ChunkSpec {
                hash: chunk.hash,
                size: len,
            },
        ));
        size += u64::from(len);
        progress.advance(u64::from(len));
    }
    Ok(Plan {
        size,
        hash: whole.finalize().into(),
        chunks,
    })
}

/// Cuts and hashes `local` on a blocking thread.
async fn plan_file(local: &Path, progress: &Progress) -> Result<Arc<Plan>, UploadError> {
    let (path, bar) = (local.to_owned(), progress.clone());
    let local_error = |source| UploadError::Local {
        path: local.to_owned(),
        source,
    };
    let planned = tokio::task::spawn_blocking(move || plan(&path, &bar))
        .await
        .map_err(|e| local_error(std::io::Error::other(e)))?;
    Ok(Arc::new(planned.map_err(local_error)?))
}

/// Uploads `local` to `remote_path`, replacing `base`.
pub async fn upload(
    remote: &Remote,
    local: &Path,
    remote_path: &RemotePath,
    base: Base,
    progress: &Progress,
) -> Result<UploadReport, UploadError> {
    let plan = plan_file(local, progress).await?;
    let base_version = match base {
        Base::New => None,
        Base::Version(v) => Some(v),
        Base::Latest => match remote.stat(remote_path).await? {
            Some(entry) if entry.kind == EntryKind::Dir => {
                return Err(UploadError::RemoteIsDirectory(remote_path.to_string()));
            }
            Some(entry) => Some(entry.version),
            None => None,
        },
    };
    let target = Target::Path(remote_path.clone());
    match send(remote, local, &target, base_version, &plan, progress).await {
        Err(UploadError::Remote(error)) if error.code() == Some(ErrorCode::VersionConflict) => {
            let current_version = error.current_version().unwrap_or(0);
            keep_conflicted_copy(remote, local, remote_path, &plan, current_version, progress).await
        }
        other => other,
    }
}

/// Commits the local bytes as `NAME (conflicted copy HOST DATE).EXT` next to `path`.
async fn keep_conflicted_copy(
    remote: &Remote,
    local: &Path,
    path: &RemotePath,
    plan: &Arc<Plan>,
    current_version: u64,
    progress: &Progress,
) -> Result<UploadReport, UploadError> {
    let (parent, name) = path
        .split_last()
        .ok_or_else(|| UploadError::RemoteIsDirectory("/".into()))?;
    let host = host_name();
    let now = SystemTime::now();
    for copy_name in conflicted_names(name.as_str(), &host, now) {
        let copy_name: Name = copy_name
            .parse()
            .map_err(|e| RemoteError::Protocol(format!("conflicted copy name: {e}")))?;
        let copy = parent.join(copy_name);
        match send(
            remote,
            local,
            &Target::Path(copy.clone()),
            None,
            plan,
            progress,
        )
        .await
        {
            Ok(mut report) => {
                report.conflict = Some(ConflictReport {
                    current_version,
                    conflicted_copy: copy.to_string(),
                });
                return Ok(report);
            }
            Err(UploadError::Remote(error))
                if matches!(
                    error.code(),
                    Some(ErrorCode::VersionConflict | ErrorCode::AlreadyExists)
                ) => {}
            Err(error) => return Err(error),
        }
    }
    Err(RemoteError::Protocol("no free name for the conflicted copy".into()).into())
}

/// Uploads `local` to `target` based on `base_version`, once: a stale base is an error
/// (`RemoteError` with code `version_conflict`) for the caller to handle. `unchanged`
/// says, once the file has been read, whether it held one state throughout the read: a
/// file written meanwhile is refused with [`UploadError::ChangedDuringUpload`] before
/// anything is committed (chunks already sent stay on the server for the next try).
pub async fn commit_local(
    remote: &Remote,
    local: &Path,
    target: &Target,
    base_version: Option<u64>,
    unchanged: &(dyn Fn() -> bool + Sync),
) -> Result<UploadReport, UploadError> {
    let overtaken = || UploadError::ChangedDuringUpload(local.to_owned());
    // A file of at most one chunk goes in one request instead of three.
    if let Target::File(id) = target {
        let local_error = |source| UploadError::Local {
            path: local.to_owned(),
            source,
        };
        let len = tokio::fs::metadata(local).await.map_err(local_error)?.len();
        if len <= u64::from(chunking::MIN_CHUNK) {
            let data = tokio::fs::read(local).await.map_err(local_error)?;
            if !unchanged() {
                return Err(overtaken());
            }
            let sent = data.len() as u64;
            let done = remote.upload_version(*id, base_version, data).await?;
            let chunks = usize::from(sent > 0);
            return Ok(UploadReport {
                path: target.describe(),
                file_id: done.file_id,
                version: done.version,
                size: done.size,
                hash: done.hash,
                chunks_total: chunks,
                chunks_sent: chunks,
                bytes_sent: sent,
                bytes_reused: 0,
                conflict: None,
            });
        }
    }
    let plan = plan_file(local, &Progress::hidden()).await?;
    if !unchanged() {
        return Err(overtaken());
    }
    send(
        remote,
        local,
        target,
        base_version,
        &plan,
        &Progress::hidden(),
    )
    .await
}

/// Commits the content of `manifest` (a version already on the server) at `target`,
/// without re-reading it locally: chunks the server still holds for the user are not
/// sent; any it asks for are fetched from the manifest's URLs and sent back.
pub async fn recommit(
    remote: &Remote,
    manifest: &cubby_proto::api::FileManifest,
    target: &Target,
    base_version: Option<u64>,
) -> Result<cubby_proto::api::UploadResponse, UploadError> {
    let request = begin_request(
        target,
        base_version,
        manifest.size,
        manifest.hash,
        manifest
            .chunks
            .iter()
            .map(|c| ChunkSpec {
                hash: c.hash,
                size: c.size,
            })
            .collect(),
    );
    let begun = remote.begin_upload(&request).await?;
    for missing in &begun.missing {
        let source = manifest
            .chunks
            .iter()
            .find(|c| c.hash == missing.hash)
            .ok_or_else(|| RemoteError::Protocol(format!("unknown chunk {}", missing.hash)))?;
        let data = remote.get_chunk(&source.url).await?;
        remote.put_chunk(&missing.url, data).await?;
    }
    Ok(remote.complete_upload(&begun.upload_id).await?)
}

fn begin_request(
    target: &Target,
    base_version: Option<u64>,
    size: u64,
    hash: ContentHash,
    chunks: Vec<ChunkSpec>,
) -> BeginUploadRequest {
    let (path, file_id, parent_id, name) = match target {
        Target::Path(path) => (Some(path.to_string()), None, None, None),
        Target::File(id) => (None, Some(*id), None, None),
        Target::Child { parent, name } => (None, None, Some(*parent), Some(name.clone())),
    };
    BeginUploadRequest {
        path,
        file_id,
        parent_id,
        name,
        base_version,
        size,
        hash,
        chunks,
    }
}

/// One attempt: begin, send what is missing, complete.
async fn send(
    remote: &Remote,
    local: &Path,
    target: &Target,
    base_version: Option<u64>,
    plan: &Arc<Plan>,
    progress: &Progress,
) -> Result<UploadReport, UploadError> {
    let request = BeginUploadRequest {
        base_version,
        ..begin_request(
            target,
            base_version,
            plan.size,
            plan.hash,
            plan.chunks.iter().map(|(_, spec)| *spec).collect(),
        )
    };
    let begun = remote.begin_upload(&request).await?;
    let bytes_sent: u64 = begun.missing.iter().map(|c| u64::from(c.size)).sum();
    progress.phase("uploading", bytes_sent);
    let file = Arc::new(
        std::fs::File::open(local).map_err(|source| UploadError::Local {
            path: local.to_owned(),
            source,
        })?,
    );
    futures_util::stream::iter(begun.missing.iter().cloned())
        .map(|chunk| {
            let file = Arc::clone(&file);
            let plan = Arc::clone(plan);
            let local = local.to_owned();
            async move {
                let data = read_chunk(file, plan, &local, chunk.hash, chunk.size).await?;
                remote.put_chunk(&chunk.url, data).await?;
                progress.advance(u64::from(chunk.size));
                Ok::<_, UploadError>(())
            }
        })
        .buffer_unordered(PARALLEL_CHUNKS)
        .try_collect::<Vec<()>>()
        .await?;
    let done = remote.complete_upload(&begun.upload_id).await?;
    progress.finish();
    Ok(UploadReport {
        path: target.describe(),
        file_id: done.file_id,
        version: done.version,
        size: done.size,
        hash: done.hash,
        chunks_total: plan.chunks.len(),
        chunks_sent: begun.missing.len(),
        bytes_sent,
        bytes_reused: begun.reused_bytes,
        conflict: None,
    })
}

/// Reads one chunk back by offset and checks it still hashes as planned.
async fn read_chunk(
    file: Arc<std::fs::File>,
    plan: Arc<Plan>,
    local: &Path,
    hash: ContentHash,
    size: u32,
) -> Result<Bytes, UploadError> {
    let offset = plan
        .chunks
        .iter()
        .find(|(_, spec)| spec.hash == hash)
        .map(|(offset, _)| *offset)
        .ok_or_else(|| RemoteError::Protocol(format!("server asked for unknown chunk {hash}")))?;
    let path = local.to_owned();
    let data = tokio::task::spawn_blocking(move || {
        let mut data = vec![0u8; size as usize];
        file.read_exact_at(&mut data, offset).map(|()| data)
    })
    .await
    .map_err(|e| UploadError::Local {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?
    .map_err(|source| match source.kind() {
        // Cut short since it was planned: truncated meanwhile.
        std::io::ErrorKind::UnexpectedEof => UploadError::ChangedDuringUpload(path.clone()),
        _ => UploadError::Local {
            path: path.clone(),
            source,
        },
    })?;
    if ContentHash::of(&data) != hash {
        return Err(UploadError::ChangedDuringUpload(path));
    }
    Ok(Bytes::from(data))
}
