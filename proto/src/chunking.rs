//! Content-defined chunking, as the protocol fixes it.
//!
//! FastCDC (2020) with a 256 KiB minimum, 1 MiB average and 4 MiB maximum chunk, each
//! chunk named by its BLAKE3 hash. Because cut points depend only on nearby content, an
//! edit in the middle of a file changes the chunks around the edit and no others, and
//! an insertion at the start shifts no later cut point. Client and server must use the
//! same parameters: they are constants of the protocol, not settings.

use std::io::Read;

use fastcdc::v2020::StreamCDC;

use crate::ContentHash;

/// Smallest chunk (except the last of a file).
pub const MIN_CHUNK: u32 = 256 * 1024;
/// Average chunk the cut-point mask aims for.
pub const AVG_CHUNK: u32 = 1024 * 1024;
/// Largest chunk: a cut is forced here.
pub const MAX_CHUNK: u32 = 4 * 1024 * 1024;

/// One chunk cut from a stream.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Byte offset of the chunk in the stream.
    pub offset: u64,
    pub hash: ContentHash,
    pub data: Vec<u8>,
}

/// Cuts `source` into chunks. Memory use is bounded by [`MAX_CHUNK`] plus the chunk
/// being handed out, whatever the length of the source.
///
/// A source shorter than [`MIN_CHUNK`] is one chunk whatever the cut points, so it is
/// read whole without setting up the chunker (whose [`MAX_CHUNK`] buffer would cost
/// more than the content: most files are small).
pub fn chunks<R: Read>(mut source: R) -> Chunks<R> {
    let mut head = Vec::new();
    let state = match (&mut source)
        .take(u64::from(MIN_CHUNK))
        .read_to_end(&mut head)
    {
        Err(error) => ChunksState::One(Some(Err(error))),
        Ok(_) if head.is_empty() => ChunksState::One(None),
        Ok(_) if head.len() < MIN_CHUNK as usize => ChunksState::One(Some(Ok(Chunk {
            offset: 0,
            hash: ContentHash::of(&head),
            data: head,
        }))),
        Ok(_) => ChunksState::Cut(StreamCDC::new(
            std::io::Cursor::new(head).chain(source),
            MIN_CHUNK as usize,
            AVG_CHUNK as usize,
            MAX_CHUNK as usize,
        )),
    };
    Chunks(state)
}

/// The chunks of a source, in order (see [`chunks`]).
pub struct Chunks<R: Read>(ChunksState<R>);

enum ChunksState<R: Read> {
    /// A short source: at most one chunk (or the error reading it).
    One(Option<std::io::Result<Chunk>>),
    Cut(StreamCDC<std::io::Chain<std::io::Cursor<Vec<u8>>, R>>),
}

impl<R: Read> std::fmt::Debug for Chunks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chunks")
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            ChunksState::One(only) => only.take(),
            ChunksState::Cut(cdc) => cdc.next().map(|item| {
                let item = item.map_err(std::io::Error::from)?;
                Ok(Chunk {
                    offset: item.offset,
                    hash: ContentHash::of(&item.data),
                    data: item.data,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert_eq!(chunks(std::io::empty()).count(), 0);
    }

    #[test]
    fn small_inputs_are_one_chunk_as_the_chunker_would_cut_them() {
        for len in [
            1,
            4096,
            MIN_CHUNK as usize - 1,
            MIN_CHUNK as usize,
            300 * 1024,
        ] {
            let data = pseudo_random(len, len as u64);
            let fast: Vec<Chunk> = chunks(std::io::Cursor::new(data.clone()))
                .map(Result::unwrap)
                .collect();
            let full: Vec<_> = StreamCDC::new(
                &data[..],
                MIN_CHUNK as usize,
                AVG_CHUNK as usize,
                MAX_CHUNK as usize,
            )
            .map(|c| c.unwrap().data)
            .collect();
            assert_eq!(
                fast.iter().map(|c| c.data.clone()).collect::<Vec<_>>(),
                full
            );
        }
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = pseudo_random(12 * 1024 * 1024, 7);
        let cut: Vec<Chunk> = chunks(std::io::Cursor::new(data.clone()))
            .map(Result::unwrap)
            .collect();
        let mut offset = 0u64;
        for (i, chunk) in cut.iter().enumerate() {
            assert_eq!(chunk.offset, offset);
            assert!(chunk.data.len() <= MAX_CHUNK as usize);
            if i + 1 < cut.len() {
                assert!(chunk.data.len() >= MIN_CHUNK as usize);
            }
            assert_eq!(chunk.hash, ContentHash::of(&chunk.data));
            offset += chunk.data.len() as u64;
        }
        assert_eq!(offset, data.len() as u64);
    }

    #[test]
    fn insertion_at_start_keeps_later_chunks() {
        let data = pseudo_random(16 * 1024 * 1024, 11);
        let mut shifted = vec![0x5a];
        shifted.extend_from_slice(&data);
        let before: Vec<ContentHash> = chunks(std::io::Cursor::new(data.clone()))
            .map(|c| c.unwrap().hash)
            .collect();
        let after: Vec<ContentHash> = chunks(std::io::Cursor::new(shifted))
            .map(|c| c.unwrap().hash)
            .collect();
        let new = after.iter().filter(|h| !before.contains(h)).count();
        assert!(new <= 2, "{new} new chunks after a 1-byte insertion");
    }
}
