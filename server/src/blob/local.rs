//! Blobs as files on a local disk.
//!
//! Layout under the root: `chunks/<first two hex digits>/<64 hex digits>` for blobs and
//! `tmp/` for writes in progress. A put writes `tmp/<random>`, fsyncs it, renames it into
//! place and fsyncs the directory, so a blob is either absent or whole and durable. A
//! crash can leave files in `tmp/`; they are removed when the store opens.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use cubby_proto::ContentHash;

use super::{BlobError, BlobStore, PutOutcome};

/// The local-disk [`BlobStore`].
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == ErrorKind::StorageFull
        || error.kind() == ErrorKind::QuotaExceeded
        || error.raw_os_error() == Some(28)
}

fn io_error(error: std::io::Error) -> BlobError {
    if is_disk_full(&error) {
        BlobError::Full
    } else {
        BlobError::Io(error)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalBlobStore {
    /// Opens the store at `root`, creating its directories and clearing `tmp/`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        fs::create_dir_all(root.join("chunks"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        sync_dir(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    fn put_blocking(&self, hash: ContentHash, data: &[u8]) -> Result<PutOutcome, BlobError> {
        if ContentHash::of(data) != hash {
            return Err(BlobError::HashMismatch { expected: hash });
        }
        let path = self.blob_path(&hash);
        if path.exists() {
            // Refresh the age, so garbage collection leaves it a whole grace period.
            let refreshed = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            match refreshed {
                Ok(()) => return Ok(PutOutcome::Existed),
                Err(e) if e.kind() == ErrorKind::NotFound => {} // collected meanwhile: write it
                Err(e) => return Err(io_error(e)),
            }
        }
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        let tmp = self.root.join("tmp").join(hex::encode(random));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(data)?;
            file.sync_all()
        })();
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(error));
        }
        let dir = path.parent().expect("blob paths have a parent");
        let placed = (|| {
            if !dir.exists() {
                fs::create_dir_all(dir)?;
                sync_dir(&self.root.join("chunks"))?;
            }
            fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })();
        if let Err(error) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(error));
        }
        Ok(PutOutcome::Created)
    }

    fn get_blocking(&self, hash: ContentHash) -> Result<Bytes, BlobError> {
        let data = match fs::read(self.blob_path(&hash)) {
            Ok(data) => data,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(BlobError::NotFound(hash)),
            Err(e) => return Err(BlobError::Io(e)),
        };
        if ContentHash::of(&data) != hash {
            return Err(BlobError::Corrupt(hash));
        }
        Ok(Bytes::from(data))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, hash: ContentHash, data: Bytes) -> Result<PutOutcome, BlobError> {
        let store = self.clone();
        blocking(move || store.put_blocking(hash, &data)).await
    }

    async fn get(&self, hash: ContentHash) -> Result<Bytes, BlobError> {
        let store = self.clone();
        blocking(move || store.get_blocking(hash)).await
    }

    async fn contains(&self, hash: ContentHash) -> Result<bool, BlobError> {
        let path = self.blob_path(&hash);
        blocking(move || Ok(path.exists())).await
    }

    async fn list_older_than(&self, cutoff: SystemTime) -> Result<Vec<ContentHash>, BlobError> {
        let chunks = self.root.join("chunks");
        blocking(move || {
            let mut out = Vec::new();
            for fan in fs::read_dir(&chunks)? {
                for blob in fs::read_dir(fan?.path())? {
                    let blob = blob?;
                    let Some(hash) = blob.file_name().to_str().and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    match blob.metadata().and_then(|m| m.modified()) {
                        Ok(modified) if modified < cutoff => out.push(hash),
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(BlobError::Io(e)),
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_if_older_than(
        &self,
        hash: ContentHash,
        cutoff: SystemTime,
    ) -> Result<bool, BlobError> {
        let path = self.blob_path(&hash);
        blocking(move || {
            match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(modified) if modified >= cutoff => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(BlobError::Io(e)),
            }
            match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
                Err(e) => Err(BlobError::Io(e)),
            }
        })
        .await
    }

    async fn delete(&self, hash: ContentHash) -> Result<(), BlobError> {
        let path = self.blob_path(&hash);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io(e)),
        })
        .await
    }
}
