//! Chunk stores: [`fs::FsStore`] (a folder on disk, for the local run) and [`s3::S3Store`]
//! (Amazon S3 or an emulator). Both implement [`trace_core::ports::ChunkStore`].

pub mod fs;
pub mod s3;

use trace_core::ports::StoreError;

/// Rejects keys a store must not hold: empty, absolute, with empty or `.`/`..` segments.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        Err(StoreError::InvalidKey(key.to_owned()))
    } else {
        Ok(())
    }
}

/// Like [`check_key`] for a prefix, which may be empty or end with `/`.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() { Ok(()) } else { Err(StoreError::InvalidKey(prefix.to_owned())) };
    }
    check_key(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("jobs/a/input.json").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("jobs/").is_ok());
        assert!(check_prefix("jobs/x/res").is_ok());
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("../").is_err());
    }
}
