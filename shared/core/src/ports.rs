//! The ports: small async traits the services need from the outside world. Adapters implement them
//! (SQS / in-process queue, S3 / on-disk store, Redis / in-memory job store, PostgreSQL / embedded
//! source, Redis / in-memory rate limiter and backfill markers, PostgreSQL / embedded changed ids);
//! one contract test suite per trait runs against every implementation. [`Backends`] bundles them.
//!
//! Errors are per port and say what the caller can do next: a `Backend` error is transient (retry,
//! leave the message), the others are answers.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::domain::Domain;
use crate::ids::{ContainerId, JobId};
use crate::job::{Guard, JobMeta, JobStatus, Progress};
use crate::queue::QueueKind;
use crate::record::RowBatch;

/// Any error from a backend library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A backend call failed (network, service error, timeout). Transient unless proven otherwise.
#[derive(Debug, thiserror::Error)]
#[error("{backend} {op} failed: {source}")]
pub struct BackendError {
    /// Which backend (`sqs`, `s3`, `redis`, `postgres`, …).
    pub backend: &'static str,
    /// Which operation.
    pub op: &'static str,
    /// The cause.
    #[source]
    pub source: BoxError,
}

impl BackendError {
    /// Wraps a backend library's error. A cause whose text (or any of its sources') holds a URL with
    /// a password is replaced by its redacted text ([`redact_url`](crate::config::redact_url)), so no
    /// log line or message built from the error can show the password.
    pub fn new(backend: &'static str, op: &'static str, source: impl Into<BoxError>) -> Self {
        BackendError { backend, op, source: Redacted::wrap(source.into()) }
    }
}

/// An error chain flattened to redacted text: what [`BackendError::new`] keeps of a cause that
/// mentioned a password.
#[derive(Debug)]
struct Redacted {
    message: String,
    source: Option<Box<Redacted>>,
}

impl Redacted {
    /// `error` as it is when no text of its chain changes under redaction; else the redacted chain.
    fn wrap(error: BoxError) -> BoxError {
        let mut chain = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        if chain.iter().all(|text| crate::config::redact_url(text) == *text) {
            return error;
        }
        let redacted = chain.iter().rev().fold(None, |source, text| {
            Some(Box::new(Redacted { message: crate::config::redact_url(text), source }))
        });
        redacted.map_or(error, |r| r as BoxError)
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Redacted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

// ---------------------------------------------------------------------------------------------
// Job queue
// ---------------------------------------------------------------------------------------------

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id of the message (stable across redeliveries).
    pub message_id: String,
    /// Handle for delete / visibility changes of this delivery.
    pub receipt: String,
    /// The body.
    pub body: String,
    /// String attributes sent with it.
    pub attributes: HashMap<String, String>,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is unknown or no longer valid (the message was deleted or redelivered).
    #[error("receipt handle is not valid (any more)")]
    InvalidReceipt,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A job queue with at-least-once delivery and visibility timeouts.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends a message; returns its id.
    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError>;
    /// Receives up to `max` messages, waiting up to `wait` for the first; each stays invisible to
    /// other receivers for `visibility`.
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Deletes a delivered message.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Sets the delivery's remaining invisibility to `visibility` from now (0 releases it at once).
    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;
}

// ---------------------------------------------------------------------------------------------
// Chunk store
// ---------------------------------------------------------------------------------------------

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size: u64,
}

/// Chunk store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object at the key.
    #[error("no object at {0}")]
    NotFound(String),
    /// A key the store cannot hold (empty, absolute, `..`).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// An object store for job inputs, result chunks and manifests.
#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Writes (or replaces) an object.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// Writes an object only if none is at `key` (S3's `If-None-Match: *`): `true` when written,
    /// `false` when an object was already there (left as it was). Of concurrent writers one wins.
    async fn put_new(&self, key: &str, body: Bytes) -> Result<bool, StoreError>;
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Reads bytes `range` of an object (clamped to its end).
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Deletes every object whose key starts with `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// A URL that lets anyone holding it GET the object at `key`, with no other credentials, for
    /// `expires`; `None` when the store cannot hand out such URLs (a folder on disk). The object need
    /// not exist (a GET of the URL then fails).
    async fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError>;
}

// ---------------------------------------------------------------------------------------------
// Job store
// ---------------------------------------------------------------------------------------------

/// Job store errors.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    /// `create` of an id that exists.
    #[error("job {0} already exists")]
    AlreadyExists(JobId),
    /// Stored metadata that does not decode.
    #[error("stored metadata of job {job} is corrupt: {reason}")]
    Corrupt {
        /// The job.
        job: JobId,
        /// What failed.
        reason: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub enum CasOutcome {
    /// Applied.
    Applied,
    /// The job is no longer in the guard's state; here is what it is.
    Conflict(Box<JobMeta>),
    /// No such job (expired or never created).
    Missing,
}

/// Job metadata with TTLs, atomic status changes and a history listing.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a job that expires after `ttl`.
    async fn create(&self, meta: &JobMeta, ttl: Duration) -> Result<(), JobStoreError>;
    /// Reads a job.
    async fn get(&self, id: &JobId) -> Result<Option<JobMeta>, JobStoreError>;
    /// Replaces the job with `next` if it is still in the state `guard`: of concurrent callers with the
    /// same guard, exactly one gets [`CasOutcome::Applied`]. Callers compute `next` with
    /// [`JobMeta::transitioned`], which enforces the transition table.
    async fn compare_and_set(&self, guard: Guard, next: &JobMeta) -> Result<CasOutcome, JobStoreError>;
    /// Sets progress if the job is still in the state `guard` (a cancel or a takeover makes this
    /// fail, which is how a worker learns to stop); with `renewed`, also the lease's renewal time
    /// (`heartbeat_at`). Only the heartbeat renews, and always before it extends the message's
    /// visibility, so a lease never outlives the message: the first delivery after a worker died
    /// finds it expired.
    async fn update_progress(
        &self,
        id: &JobId,
        guard: Guard,
        progress: &Progress,
        renewed: Option<DateTime<Utc>>,
    ) -> Result<CasOutcome, JobStoreError>;
    /// The most recent jobs, newest first: of `owner` (a principal id, [`JobMeta::owner`]) when
    /// given, else of everyone (an admin's history); optionally of one status.
    async fn list_recent(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobMeta>, JobStoreError>;
    /// Restarts the job's TTL.
    async fn refresh_ttl(&self, id: &JobId, ttl: Duration) -> Result<bool, JobStoreError>;
}

// ---------------------------------------------------------------------------------------------
// Event source
// ---------------------------------------------------------------------------------------------

/// Event source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A row that does not fit the domain's columns.
    #[error("{domain}: {reason}")]
    BadRow {
        /// The domain.
        domain: Domain,
        /// What is wrong.
        reason: String,
    },
}

/// Rows of one domain for some containers, fetch by fetch.
#[async_trait]
pub trait RowCursor: Send {
    /// The next fetch (at most the source's fetch size rows), or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<RowBatch>, SourceError>;
}

/// Where events come from.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Opens a cursor over the rows of `domain` for `ids`, ordered by container then `seq`.
    async fn open(&self, domain: Domain, ids: &[ContainerId]) -> Result<Box<dyn RowCursor>, SourceError>;

    /// How many rows [`open`](Self::open) would give for `domain` and `ids`. This default reads them
    /// all; a source that can count without sending the rows (a database) should.
    async fn count(&self, domain: Domain, ids: &[ContainerId]) -> Result<u64, SourceError> {
        let mut cursor = self.open(domain, ids).await?;
        let mut rows = 0;
        while let Some(batch) = cursor.next_batch().await? {
            rows += batch.len() as u64;
        }
        Ok(rows)
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------------------------

/// What counting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the caller's limit.
    Allowed,
    /// Over the limit until the caller's window ends.
    Limited {
        /// Time left in the window.
        retry_after: Duration,
    },
}

/// Counts requests per caller in fixed windows that start at a caller's first request; the limit and
/// the window length are the implementation's.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `caller` and says whether it is within the limit.
    async fn hit(&self, caller: &str) -> Result<RateVerdict, BackendError>;
}

// ---------------------------------------------------------------------------------------------
// Backfill markers
// ---------------------------------------------------------------------------------------------

/// What claiming a backfill batch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The batch is the caller's to queue.
    Won,
    /// Another run has the batch.
    Taken {
        /// The job it created; `None` while that run has not created it yet.
        job_id: Option<String>,
    },
}

/// One marker per (window, batch) of the backfill, so that a window's batches are queued once
/// however often, and however concurrently, the window is run. `window` is the window's key
/// (`start/end`), `batch` the batch's index in it.
#[async_trait]
pub trait BackfillMarkers: Send + Sync {
    /// Marks the batch as claimed for `ttl` unless it is marked already (atomically: of concurrent
    /// claims, exactly one wins).
    async fn claim(&self, window: &str, batch: usize, ttl: Duration) -> Result<Claim, BackendError>;
    /// Records the job of a claimed batch, kept for `ttl`.
    async fn confirm(
        &self,
        window: &str,
        batch: usize,
        job_id: &str,
        ttl: Duration,
    ) -> Result<(), BackendError>;
    /// Removes the batch's marker (its job could not be queued).
    async fn release(&self, window: &str, batch: usize) -> Result<(), BackendError>;
}

// ---------------------------------------------------------------------------------------------
// Changed ids
// ---------------------------------------------------------------------------------------------

/// Where the containers changed in a time window come from (the backfill's input).
#[async_trait]
pub trait ChangedIds: Send + Sync {
    /// Ids of the containers with a history row that moved out in `[window.start, window.end)`, as
    /// stored (any order, possibly not valid container ids).
    async fn changed(&self, window: &Range<DateTime<Utc>>) -> Result<Vec<String>, BackendError>;
}

// ---------------------------------------------------------------------------------------------
// The backends of a process
// ---------------------------------------------------------------------------------------------

/// Every port a function works with, as chosen from the configuration (`trace_adapters::runtime`).
/// Cheap to clone.
#[derive(Clone)]
pub struct Backends {
    /// The heavy queue.
    pub heavy: Arc<dyn JobQueue>,
    /// The light queue.
    pub light: Arc<dyn JobQueue>,
    /// The heavy queue's dead-letter queue, when this process is given it.
    pub heavy_dlq: Option<Arc<dyn JobQueue>>,
    /// The light queue's dead-letter queue, when this process is given it.
    pub light_dlq: Option<Arc<dyn JobQueue>>,
    /// Inputs and results.
    pub store: Arc<dyn ChunkStore>,
    /// Job metadata.
    pub jobs: Arc<dyn JobStore>,
    /// Where events come from.
    pub source: Arc<dyn EventSource>,
    /// Rate limiter of the job reads (status, history, cancel, result, stream).
    pub limiter: Arc<dyn RateLimiter>,
    /// Rate limiter of submits, counted apart from the reads.
    pub submit_limiter: Arc<dyn RateLimiter>,
    /// Markers of the backfill's batches.
    pub markers: Arc<dyn BackfillMarkers>,
    /// Where the backfill finds the changed containers.
    pub changes: Arc<dyn ChangedIds>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// The queue of a kind.
    pub fn queue(&self, kind: QueueKind) -> &Arc<dyn JobQueue> {
        match kind {
            QueueKind::Heavy => &self.heavy,
            QueueKind::Light => &self.light,
        }
    }

    /// The dead-letter queue of `kind`'s queue, if this process has it.
    pub fn dead_letters(&self, kind: QueueKind) -> Option<&Arc<dyn JobQueue>> {
        match kind {
            QueueKind::Heavy => self.heavy_dlq.as_ref(),
            QueueKind::Light => self.light_dlq.as_ref(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Where secrets live (AWS Secrets Manager), read once at start-up. Implementations never put a
/// secret's value in an error.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current string value of the secret `id` (an ARN or a name).
    async fn secret_string(&self, id: &str) -> Result<String, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, like a driver's "connect failed" over an I/O error.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Outer(String, #[source] std::io::Error);

    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            text.push_str(" / ");
            text.push_str(&s.to_string());
            next = s.source();
        }
        text
    }

    #[test]
    fn a_backend_error_never_carries_a_password() {
        let cause = Outer(
            "cannot connect to postgres://trace:hunter2@db:5432/trace".into(),
            std::io::Error::other("redis://default:hunter3@cache refused"),
        );
        let e = BackendError::new("postgres", "connect", cause);
        let text = chain(&e);
        assert!(!text.contains("hunter2") && !text.contains("hunter3"), "{text}");
        assert!(text.contains("postgres://trace:***@db:5432/trace") && text.contains("refused"), "{text}");
    }

    #[test]
    fn a_backend_error_without_a_password_keeps_its_cause() {
        let e =
            BackendError::new("redis", "get", std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        assert!(e.source.downcast_ref::<std::io::Error>().is_some(), "the original cause is kept");
        assert_eq!(e.to_string(), "redis get failed: timed out");
    }
}
