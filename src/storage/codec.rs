//! Versioned value encoding: one version byte, then JSON. A later release
//! that changes a record bumps the version and migrates on read.

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
