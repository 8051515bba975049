//! Downloading a file: fetch its manifest, then its chunks (several in flight, written
//! in order), verify each chunk and the whole, and rename the result into place. The
//! destination is never left half-written: the bytes go to a temporary file beside it.

use std::path::{Path, PathBuf};

use cubby_proto::api::EntryKind;
use cubby_proto::{ContentHash, RemotePath};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::PARALLEL_CHUNKS;
use crate::progress::Progress;
use crate::remote::{Remote, RemoteError};

/// What a download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub path: String,
    pub file_id: u64,
    pub version: u64,
    pub size: u64,
    pub hash: ContentHash,
    pub chunks: usize,
    pub bytes_received: u64,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}: no such file on the server")]
    NotFound(String),
    #[error("{0} is not a regular file on the server")]
    NotAFile(String),
    #[error("chunk {0} arrived corrupted")]
    CorruptChunk(ContentHash),
    #[error("the content does not hash to {0}")]
    CorruptFile(ContentHash),
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Downloads `remote_path` (at `version`, or the current one) to `local`.
pub async fn download(
    remote: &Remote,
    remote_path: &RemotePath,
    version: Option<u64>,
    local: &Path,
    progress: &Progress,
) -> Result<DownloadReport, DownloadError> {
    let entry = remote
        .stat(remote_path)
        .await?
        .ok_or_else(|| DownloadError::NotFound(remote_path.to_string()))?;
    if entry.kind != EntryKind::File {
        return Err(DownloadError::NotAFile(remote_path.to_string()));
    }
    let manifest = remote.manifest(entry.id, version).await?;
    progress.phase("downloading", manifest.size);

    let dir = local
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cubby-part-{}", std::process::id()));
    let local_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DownloadError::Local { path, source }
    };
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .map_err(local_error(&tmp))?;
    let result = async {
        let mut whole = blake3::Hasher::new();
        let mut chunks = futures_util::stream::iter(manifest.chunks.iter())
            .map(|chunk| async move { (chunk.hash, remote.get_chunk(&chunk.url).await) })
            .buffered(PARALLEL_CHUNKS);
        while let Some((hash, data)) = chunks.next().await {
            let data = data?;
            if ContentHash::of(&data) != hash {
                return Err(DownloadError::CorruptChunk(hash));
            }
            whole.update(&data);
            out.write_all(&data).await.map_err(local_error(&tmp))?;
            progress.advance(data.len() as u64);
        }
        let actual: ContentHash = whole.finalize().into();
        if actual != manifest.hash {
            return Err(DownloadError::CorruptFile(manifest.hash));
        }
        out.sync_all().await.map_err(local_error(&tmp))?;
        tokio::fs::rename(&tmp, local)
            .await
            .map_err(local_error(local))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result?;
    progress.finish();
    Ok(DownloadReport {
        path: remote_path.to_string(),
        file_id: manifest.file_id,
        version: manifest.version,
        size: manifest.size,
        hash: manifest.hash,
        chunks: manifest.chunks.len(),
        bytes_received: manifest.size,
    })
}
