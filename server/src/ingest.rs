//! Turning a byte stream into stored chunks: the one-shot upload path.
//!
//! Three stages run at once with bounded queues between them, so memory stays near
//! a few chunks whatever the size of the upload:
//! 1. the request body is read (async) into a queue of buffers;
//! 2. a blocking thread cuts the buffers into content-defined chunks, hashing each
//!    chunk and the whole content;
//! 3. each chunk is put into the blob store (durable before the next step).
//!
//! Only when every chunk is durable does the caller commit metadata that refers to them.
//! An upload that fails part way may leave whole, unreferenced chunks behind: they are
//! content-addressed and harmless, and collected by garbage collection after a grace
//! period. Deleting them here could race a concurrent upload of the same content.

use std::io::Read;

use bytes::{Buf, Bytes};
use cubby_proto::ContentHash;
use cubby_proto::chunking::{self, Chunk};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::blob::{BlobError, BlobStore, PutOutcome};
use crate::meta::{ChunkRef, NewContent};

/// Buffers of the body waiting to be chunked.
const BODY_QUEUE: usize = 16;
/// Cut chunks waiting to be stored.
const CHUNK_QUEUE: usize = 2;

/// Why ingesting failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError<E> {
    /// Reading the source failed (the body broke, or exceeded its limit).
    #[error("reading the upload: {0}")]
    Source(E),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("chunking: {0}")]
    Chunking(std::io::Error),
}

/// A blocking `Read` over the queue of body buffers. A `None` in the queue means the
/// source failed: reading then fails too, so a broken body never becomes a short file.
struct QueueReader {
    queue: mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
}

impl Read for QueueReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.queue.blocking_recv() {
                Some(Some(bytes)) => self.current = bytes,
                Some(None) => return Err(std::io::Error::other("upload source failed")),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Reads `source` to its end, storing its chunks in `blobs`. `created` gets the chunks
/// this call stored that were not stored before (what a failed upload leaves behind).
pub async fn ingest<S, E>(
    blobs: &dyn BlobStore,
    source: S,
    created: &mut Vec<ContentHash>,
) -> Result<NewContent, IngestError<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let (body_tx, body_rx) = mpsc::channel::<Option<Bytes>>(BODY_QUEUE);
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);

    let chunker = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, ContentHash)> {
        let reader = QueueReader {
            queue: body_rx,
            current: Bytes::new(),
        };
        let mut whole = blake3::Hasher::new();
        let mut size = 0u64;
        for chunk in chunking::chunks(reader) {
            let chunk = chunk?;
            whole.update(&chunk.data);
            size += chunk.data.len() as u64;
            if chunk_tx.blocking_send(chunk).is_err() {
                return Err(std::io::Error::other("chunk store stopped"));
            }
        }
        Ok((size, whole.finalize().into()))
    });

    // Each stage owns its ends of the queues, so a stage that stops (done or failed)
    // closes its queues and the others stop too: nothing waits on a stage that is gone.
    let feed = async move {
        let mut source = std::pin::pin!(source);
        while let Some(item) = source.next().await {
            match item {
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => {
                    if body_tx.send(Some(bytes)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(error) => {
                    let _ = body_tx.send(None).await;
                    return Err(IngestError::Source(error));
                }
            }
        }
        Ok(())
    };

    let store = async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = chunk_rx.recv().await {
            let size = chunk.data.len() as u32;
            if blobs.put(chunk.hash, Bytes::from(chunk.data)).await? == PutOutcome::Created {
                created.push(chunk.hash);
            }
            chunks.push(ChunkRef {
                hash: chunk.hash,
                size,
            });
        }
        Ok::<_, IngestError<E>>(chunks)
    };

    let (fed, stored) = tokio::join!(feed, store);
    let cut = chunker
        .await
        .map_err(|e| IngestError::Chunking(std::io::Error::other(e)))?;
    // The first failure is the cause; the others follow from it.
    fed?;
    let chunks = stored?;
    let (size, hash) = cut.map_err(IngestError::Chunking)?;
    Ok(NewContent { size, hash, chunks })
}
