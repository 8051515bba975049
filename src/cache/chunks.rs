//! The chunk cache on local disk: content-addressed, bounded in size (least recently
//! used chunks go first), verified by hash on every read, safe to delete at any time.
//!
//! Layout: `ROOT/ab/<64 hex digits>`, one file per chunk, written to a temporary name
//! and renamed into place. The index of what is present lives in memory (moka, weighed
//! by chunk size, its eviction deleting the file) and is rebuilt from the directory when
//! the cache opens.
//!
//! The budget holds for the folder, not for one mount: mounts that share a cache folder
//! (the default one, say) each sweep it after every sixteenth of the budget they put,
//! removing the chunks least recently used by any of them (a disk read marks a chunk
//! used by its modification time) until the folder holds 90% of the budget. A chunk
//! another mount removed is a miss here, fetched again.
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
    max_bytes: u64,
    /// Bytes put since the last sweep of the folder.
    put_since_sweep: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A sweep is under way (on a thread of its own).
    sweeping: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
            max_bytes,
            put_since_sweep: std::sync::Arc::default(),
            sweeping: std::sync::Arc::default(),
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
                // Used now, for every mount's sweep of the folder.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
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
        let put = self
            .put_since_sweep
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed)
            + data.len() as u64;
        if put > self.max_bytes / 16
            && !self
                .sweeping
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.put_since_sweep
                .store(0, std::sync::atomic::Ordering::Relaxed);
            // Not on the caller's thread, which may be serving a read or hold a file.
            let cache = self.clone();
            let spawned = std::thread::Builder::new()
                .name("cubby-cache-sweep".into())
                .spawn(move || {
                    // Again while what was put meanwhile is due a sweep of its own.
                    loop {
                        cache.sweep();
                        let put = cache
                            .put_since_sweep
                            .load(std::sync::atomic::Ordering::Relaxed);
                        if put <= cache.max_bytes / 16 {
                            break;
                        }
                        cache
                            .put_since_sweep
                            .store(0, std::sync::atomic::Ordering::Relaxed);
                    }
                    cache
                        .sweeping
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            if spawned.is_err() {
                self.sweeping
                    .store(false, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// Holds the folder (whoever filled it) to the budget: removes the chunks least
    /// recently used until it holds 90% of it.
    pub fn sweep(&self) {
        let mut chunks = Vec::new();
        let mut total = 0u64;
        for fan in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(fan.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                // Only chunks (not another mount's chunk being written, nor anything
                // else that is there).
                let name = file.file_name();
                let Some(hash) = name.to_str().and_then(|n| n.parse::<ContentHash>().ok()) else {
                    continue;
                };
                let Ok(meta) = file.metadata() else { continue };
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                total += meta.len();
                chunks.push((used, meta.len(), file.path(), hash));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        chunks.sort_by_key(|(used, ..)| *used);
        let goal = self.max_bytes / 10 * 9;
        for (_, size, path, hash) in chunks {
            if total <= goal {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                self.index.invalidate(&hash);
            }
        }
    }
}
