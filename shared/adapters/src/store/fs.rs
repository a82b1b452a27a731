//! A chunk store in a folder on disk: one file per key. Writes go to a temporary file that is renamed
//! into place, so a reader never sees half an object.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use trace_core::ports::{BackendError, ChunkStore, ObjectInfo, StoreError};

use super::{check_key, check_prefix};

/// A folder-backed store.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

fn io(op: &'static str, e: std::io::Error) -> StoreError {
    StoreError::Backend(BackendError::new("fs", op, e))
}

impl FsStore {
    /// Writes `body` beside the object at `key` (a temporary name in its folder, made if missing);
    /// (that file, the object's path): `put` renames it over the object, `put_new` links it.
    async fn write_aside(&self, key: &str, body: &[u8]) -> Result<(PathBuf, PathBuf), StoreError> {
        check_key(key)?;
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| io("create_dir", e))?;
        }
        let tmp = path.with_file_name(format!(
            "{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("object"),
            uuid::Uuid::new_v4().simple()
        ));
        tokio::fs::write(&tmp, body).await.map_err(|e| io("write", e))?;
        Ok((tmp, path))
    }

    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn open(&self, key: &str) -> Result<tokio::fs::File, StoreError> {
        check_key(key)?;
        match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(key.to_owned())),
            Err(e) => Err(io("open", e)),
        }
    }

    /// Every file under `dir`, as keys relative to the root.
    async fn walk(&self, dir: PathBuf, out: &mut Vec<ObjectInfo>) -> Result<(), StoreError> {
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read_dir", e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io("read_dir", e))? {
                let meta = match entry.metadata().await {
                    Ok(meta) => meta,
                    // Renamed or removed since the folder was read (a write landing, a delete): a
                    // listing is of one moment, as S3's is.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("metadata", e)),
                };
                let path = entry.path();
                if meta.is_dir() {
                    stack.push(path);
                } else if let Some(key) = self.key_of(&path) {
                    if !key.contains(".tmp-") {
                        out.push(ObjectInfo { key, size: meta.len() });
                    }
                }
            }
        }
        Ok(())
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_str()).collect::<Option<_>>()?;
        Some(parts.join("/"))
    }
}

#[async_trait]
impl ChunkStore for FsStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let (tmp, path) = self.write_aside(key, &body).await?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| io("rename", e))
    }

    async fn put_new(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let (tmp, path) = self.write_aside(key, &body).await?;
        // A hard link fails if the name exists: of concurrent writers exactly one wins, and the object
        // appears whole (as with `put`'s rename).
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io("link", e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let mut file = self.open(key).await?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).await.map_err(|e| io("read", e))?;
        Ok(buf.into())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let mut file = self.open(key).await?;
        let len = file.metadata().await.map_err(|e| io("metadata", e))?.len();
        let (start, end) = (range.start.min(len), range.end.min(len));
        if start >= end {
            return Ok(Bytes::new());
        }
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| io("seek", e))?;
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact(&mut buf).await.map_err(|e| io("read", e))?;
        Ok(buf.into())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        check_prefix(prefix)?;
        // Walk the deepest folder the prefix names completely, then filter by the whole prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        self.walk(dir, &mut out).await?;
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            match tokio::fs::remove_file(self.path(&o.key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", e)),
            }
        }
        Ok(objects.len() as u64)
    }

    /// A folder has no URLs: callers serve the bytes themselves.
    async fn presign_get(&self, key: &str, _expires: Duration) -> Result<Option<String>, StoreError> {
        check_key(key)?;
        Ok(None)
    }
}
