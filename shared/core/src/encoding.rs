//! How a result chunk's NDJSON is stored. A leaf of the crate's vocabulary.

use serde::{Deserialize, Serialize};

/// How a chunk's NDJSON is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkEncoding {
    /// The NDJSON bytes as they are (what manifests without an `encoding` describe).
    #[default]
    Plain,
    /// An LZ4 block of the NDJSON bytes (about 4.8× smaller; readable only with this project's code).
    Lz4,
    /// A gzip member of the NDJSON bytes (about 7.6× smaller at level 1), stored with
    /// `Content-Encoding: gzip` so that a browser's `fetch()` or `curl --compressed` decodes a chunk URL.
    Gzip,
}

impl ChunkEncoding {
    /// The chunk key's file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ChunkEncoding::Plain => ".ndjson",
            ChunkEncoding::Lz4 => ".ndjson.lz4",
            ChunkEncoding::Gzip => ".ndjson.gz",
        }
    }

    /// The `Content-Encoding` an HTTP reader of the object needs (None: the bytes are the NDJSON, or
    /// an encoding no HTTP client decodes).
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            ChunkEncoding::Gzip => Some("gzip"),
            ChunkEncoding::Plain | ChunkEncoding::Lz4 => None,
        }
    }

    /// The encoding of a stored object, from its key (None: not a chunk).
    pub fn of_key(key: &str) -> Option<ChunkEncoding> {
        [ChunkEncoding::Gzip, ChunkEncoding::Lz4, ChunkEncoding::Plain]
            .into_iter()
            .find(|e| key.ends_with(e.extension()))
    }

    pub(crate) fn is_plain(&self) -> bool {
        *self == ChunkEncoding::Plain
    }
}
