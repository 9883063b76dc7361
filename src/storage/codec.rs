//! Versioned value encoding: one version byte, then JSON. A later release
//! that changes a record bumps the version and migrates on read. Also the
//! LZ4 framing that records written often share (log batches, events).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Result, StorageError};

const VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    serde_json::to_writer(&mut out, value).expect("stored records always serialise");
    out
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, json)) => serde_json::from_slice(json).map_err(|e| StorageError::Codec {
            what,
            message: e.to_string(),
        }),
        _ => Err(StorageError::Codec {
            what,
            message: "unknown record version".into(),
        }),
    }
}

/// LZ4 cannot expand data more than this many times; a stated size beyond
/// it marks a damaged value rather than a reason to allocate.
const LZ4_MAX_RATIO: usize = 255;

/// `tag`, then `plain` LZ4-compressed with its size first (what
/// `decompress` reads after the tag), built in one buffer.
pub fn compress_tagged(tag: u8, plain: &[u8]) -> Vec<u8> {
    let start = 1 + 4;
    let mut out = vec![0; start + lz4_flex::block::get_maximum_output_size(plain.len())];
    out[0] = tag;
    out[1..start].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    let n = lz4_flex::block::compress_into(plain, &mut out[start..])
        .expect("the buffer has LZ4's maximum output size");
    out.truncate(start + n);
    out
}

/// The plain bytes of what `compress_tagged` made (given without its tag),
/// or an error naming `what` if it is damaged.
pub fn decompress(what: &'static str, compressed: &[u8]) -> Result<Vec<u8>> {
    let damaged = |message: String| StorageError::Codec { what, message };
    let (size, rest) =
        lz4_flex::block::uncompressed_size(compressed).map_err(|e| damaged(e.to_string()))?;
    if size > rest.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(damaged("stated size out of bounds".into()));
    }
    lz4_flex::decompress_size_prepended(compressed).map_err(|e| damaged(e.to_string()))
}
