//! The chunk cache on local disk: content-addressed, bounded in size (least recently
//! used chunks go first), verified by hash on every read, safe to delete at any time.
//!
//! Layout: `ROOT/ab/<64 hex digits>`, one file per chunk, written to a temporary name
//! and renamed into place. The index of what is present lives in memory (moka, weighed
//! by chunk size, its eviction deleting the file) and is rebuilt from the directory when
//! the cache opens.
//!
//! In front of the disk sits a small in-memory cache of verified chunks: the kernel reads
//! a file 128 KiB at a time, and a chunk is about 1 MiB, so without it every read would
//! re-read and re-hash a whole chunk from disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use cubby_proto::ContentHash;
use moka::notification::RemovalCause;
use moka::sync::Cache;

/// A bounded, content-addressed chunk cache on disk.
#[derive(Clone)]
pub struct ChunkCache {
    root: PathBuf,
    index: Cache<ContentHash, u32>,
    memory: Cache<ContentHash, Bytes>,
}

/// Bytes of verified chunks kept in memory.
const MEMORY_BYTES: u64 = 128 << 20;

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("root", &self.root)
            .finish()
    }
}

fn chunk_path(root: &Path, hash: &ContentHash) -> PathBuf {
    let hex = hash.to_hex();
    root.join(&hex[..2]).join(hex)
}

impl ChunkCache {
    /// Opens (creating) the cache at `root`, holding at most `max_bytes`.
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let evict_root = root.to_owned();
        let index = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &ContentHash, size: &u32| *size)
            .eviction_listener(move |hash: std::sync::Arc<ContentHash>, _, cause| {
                if cause != RemovalCause::Replaced {
                    let _ = std::fs::remove_file(chunk_path(&evict_root, &hash));
                }
            })
            .build();
        let memory = Cache::builder()
            .max_capacity(MEMORY_BYTES)
            .weigher(|_: &ContentHash, data: &Bytes| data.len().try_into().unwrap_or(u32::MAX))
            .build();
        let cache = Self {
            root: root.to_owned(),
            index,
            memory,
        };
        for fan in std::fs::read_dir(root)?.flatten() {
            let Ok(files) = std::fs::read_dir(fan.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                match name.to_str().and_then(|n| n.parse::<ContentHash>().ok()) {
                    Some(hash) => {
                        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                        cache.index.insert(hash, size as u32);
                    }
                    None => {
                        let _ = std::fs::remove_file(file.path());
                    }
                }
            }
        }
        Ok(cache)
    }

    /// The chunk, if cached and intact. A corrupt file is dropped and reported absent.
    pub fn get(&self, hash: &ContentHash) -> Option<Bytes> {
        if let Some(data) = self.memory.get(hash) {
            return Some(data);
        }
        self.index.get(hash)?;
        let path = chunk_path(&self.root, hash);
        match std::fs::read(&path) {
            Ok(data) if ContentHash::of(&data) == *hash => {
                let data = Bytes::from(data);
                self.memory.insert(*hash, data.clone());
                Some(data)
            }
            _ => {
                self.index.invalidate(hash);
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a chunk (the caller verified it). Failures only cost a later refetch.
    pub fn put(&self, hash: &ContentHash, data: &Bytes) {
        self.memory.insert(*hash, data.clone());
        let path = chunk_path(&self.root, hash);
        let stored = (|| {
            let dir = path.parent().expect("chunk paths have a parent");
            std::fs::create_dir_all(dir)?;
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(std::io::Error::other)?;
            let tmp = dir.join(format!(".tmp-{}", hex::encode(random)));
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, &path)
        })();
        match stored {
            Ok(()) => self.index.insert(*hash, data.len() as u32),
            Err(error) => tracing::debug!(%error, "chunk cache write failed"),
        }
    }
}
