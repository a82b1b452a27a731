//! How a result chunk's NDJSON is stored. A leaf of the crate's vocabulary.

use serde::{Deserialize, Serialize};

/// How a chunk's NDJSON is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkEncoding {
    /// The NDJSON bytes as they are (what manifests without an `encoding` describe).
    #[default]
    Plain,
    /// An LZ4 block of the NDJSON bytes (NDJSON compresses about 5×; cheap to write and to read back).
    Lz4,
}

impl ChunkEncoding {
    /// The chunk key's file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ChunkEncoding::Plain => ".ndjson",
            ChunkEncoding::Lz4 => ".ndjson.lz4",
        }
    }

    pub(crate) fn is_plain(&self) -> bool {
        *self == ChunkEncoding::Plain
    }
}
