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
pub fn chunks<R: Read>(source: R) -> impl Iterator<Item = std::io::Result<Chunk>> {
    StreamCDC::new(
        source,
        MIN_CHUNK as usize,
        AVG_CHUNK as usize,
        MAX_CHUNK as usize,
    )
    .map(|item| {
        let item = item.map_err(std::io::Error::from)?;
        Ok(Chunk {
            offset: item.offset,
            hash: ContentHash::of(&item.data),
            data: item.data,
        })
    })
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
        assert_eq!(chunks(&[][..]).count(), 0);
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = pseudo_random(12 * 1024 * 1024, 7);
        let cut: Vec<Chunk> = chunks(&data[..]).map(Result::unwrap).collect();
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
        let before: Vec<ContentHash> = chunks(&data[..]).map(|c| c.unwrap().hash).collect();
        let after: Vec<ContentHash> = chunks(&shifted[..]).map(|c| c.unwrap().hash).collect();
        let new = after.iter().filter(|h| !before.contains(h)).count();
        assert!(new <= 2, "{new} new chunks after a 1-byte insertion");
    }
}
