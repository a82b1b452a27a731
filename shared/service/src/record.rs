//! The object store is the job's source of truth; the job store (Redis) is its fast copy.
//!
//! What the object store keeps of a job, beside its chunks:
//!
//! - `jobs/{id}/input.json`: the ids, and the job's metadata as submit created it (queued);
//! - `jobs/{id}/manifest.json`: written last by the run that finished it;
//! - `jobs/{id}/outcome.json`: the job's metadata when it failed or was cancelled.
//!
//! When the job store has lost a job (a flush, a restart without persistence, an eviction) but the
//! job is younger than `TRACE_JOB_TTL_SECONDS`, [`restore`] rebuilds it from those objects and puts it
//! back for the rest of its time to live: finished if its manifest exists, failed or cancelled as its
//! outcome says, otherwise queued (a worker that still holds it takes it back at its next heartbeat;
//! a message still in the queue claims it). A job older than its time to live stays gone, as its
//! result does.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use trace_core::job::{JobMeta, JobStatus, Progress};
use trace_core::layout::{self, Manifest};
use trace_core::ports::{JobStoreError, StoreError};
use trace_core::JobId;

use crate::App;

/// Why a job could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job store failed.
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
}

/// Records how a job ended when it did not finish (its manifest records a finish). A failure is
/// logged: the job store still has the outcome.
pub async fn save_outcome(app: &App, meta: &JobMeta) {
    debug_assert!(matches!(meta.status, JobStatus::Failed | JobStatus::Cancelled));
    let body = match serde_json::to_vec(meta) {
        Ok(b) => b,
        Err(e) => return tracing::error!(error = %e, "could not encode the job's outcome"),
    };
    if let Err(e) = app.backends.store.put(&layout::outcome_key(&meta.job_id), Bytes::from(body)).await {
        tracing::warn!(job_id = %meta.job_id, error = %e, "could not record the job's outcome in the object store");
    }
}

/// How the job ended when it did not finish, as recorded by [`save_outcome`]; None when nothing is
/// recorded (or the record does not read as a terminal job of that id).
async fn read_outcome(app: &App, id: &JobId) -> Result<Option<JobMeta>, StoreError> {
    match app.backends.store.get(&layout::outcome_key(id)).await {
        Ok(body) => Ok(serde_json::from_slice::<JobMeta>(&body)
            .ok()
            .filter(|ended| ended.job_id == *id && ended.status.is_terminal())),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The job as the object store knows it (whatever its age), or None (unknown).
pub async fn rebuild(app: &App, id: &JobId) -> Result<Option<JobMeta>, StoreError> {
    let store = &app.backends.store;
    // Only the metadata: the ids are skipped, not kept.
    #[derive(serde::Deserialize)]
    struct Input {
        #[serde(default)]
        job: Option<JobMeta>,
    }
    let input = match store.get(&layout::input_key(id)).await {
        Ok(body) => body,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(submitted) = serde_json::from_slice::<Input>(&input).ok().and_then(|i| i.job) else {
        tracing::warn!(job_id = %id, "the job's input has no metadata: it cannot be rebuilt");
        return Ok(None);
    };
    drop(input);
    if submitted.job_id != *id {
        return Ok(None);
    }
    if let Some(ended) = read_outcome(app, id).await? {
        return Ok(Some(ended));
    }
    match store.get(&layout::manifest_key(id)).await {
        Ok(body) => {
            let manifest: Manifest = match serde_json::from_slice(&body) {
                Ok(m) => m,
                // A manifest that does not read is no finished result: the job runs again.
                Err(_) => return Ok(Some(submitted)),
            };
            let mut done = submitted;
            done.status = JobStatus::Finished;
            done.started_at = done.started_at.or(Some(manifest.created_at));
            done.completed_at = Some(manifest.created_at);
            done.attempt = done.attempt.max(1);
            let mut progress = Progress::start(done.cid_count);
            progress.set_ids_done(done.cid_count);
            progress.records_written = manifest.total_records;
            done.progress = progress;
            Ok(Some(done))
        }
        Err(StoreError::NotFound(_)) => Ok(Some(submitted)),
        Err(e) => Err(e),
    }
}

/// The time `meta` has left to live, if any: `TRACE_JOB_TTL_SECONDS` from its end (its result is
/// written then, so result and metadata expire together), or from its creation while it has not
/// ended.
fn expires_in(app: &App, meta: &JobMeta, now: DateTime<Utc>) -> Option<std::time::Duration> {
    let from = meta.completed_at.unwrap_or(meta.created_at);
    let age = (now - from).to_std().unwrap_or_default();
    app.config.job_ttl.checked_sub(age).filter(|left| !left.is_zero())
}

/// Who asks for a job the job store may have lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A caller (status, cancel, retry, results): a job past its time to live stays gone.
    Caller,
    /// A worker holding the job's message: the message proves the job is wanted, so a job that has
    /// not ended comes back for a whole new time to live however long it waited in the queue.
    Message,
}

/// The job from the job store, or, when the job store lost it, rebuilt from the object store and
/// put back (see the [module](self)). None: unknown or expired.
pub async fn get_or_restore(app: &App, id: &JobId, asker: Asker) -> Result<Option<JobMeta>, RestoreError> {
    if let Some(meta) = app.backends.jobs.get(id).await? {
        return Ok(Some(meta));
    }
    let now = Utc::now();
    let Some(meta) = rebuild(app, id).await? else { return Ok(None) };
    let ttl = match (asker, meta.status.is_terminal()) {
        (Asker::Message, false) => Some(app.config.job_ttl),
        _ => expires_in(app, &meta, now),
    };
    let Some(ttl) = ttl else { return Ok(None) };
    match app.backends.jobs.create(&meta, ttl).await {
        Ok(()) => {
            tracing::warn!(job_id = %id, status = %meta.status, "the job store had lost the job: rebuilt from the object store");
            Ok(Some(meta))
        }
        // Put back meanwhile by someone else: theirs stands.
        Err(JobStoreError::AlreadyExists(_)) => Ok(app.backends.jobs.get(id).await?),
        Err(e) => Err(e.into()),
    }
}

/// A job the job store still shows queued or started long after anything happened to it (queued
/// for more than a visibility timeout, or started with no heartbeat for that long), whose outcome
/// the object store has (a last delivery that could not reach the job store): the job store is
/// brought in line and the outcome returned. Otherwise `meta` as it is.
pub async fn reconcile_stale(app: &App, meta: JobMeta) -> JobMeta {
    if meta.status.is_terminal() {
        return meta;
    }
    let since = meta.heartbeat_at.or(meta.started_at).unwrap_or(meta.created_at);
    if (Utc::now() - since).to_std().unwrap_or_default() < app.config.worker_visibility {
        return meta;
    }
    let Ok(Some(ended)) = read_outcome(app, &meta.job_id).await else { return meta };
    match app.backends.jobs.compare_and_set(meta.guard(), &ended).await {
        Ok(trace_core::ports::CasOutcome::Applied) => {
            tracing::warn!(job_id = %meta.job_id, status = %ended.status, "a stale job's outcome was only in the object store: applied");
            ended
        }
        _ => meta,
    }
}

/// Puts back a job the job store lost while a worker held it: `meta` is the worker's own view (the
/// lease it holds). True when the job store now has it as `meta`.
pub async fn put_back(app: &App, meta: &JobMeta) -> Result<bool, JobStoreError> {
    match app.backends.jobs.create(meta, app.config.job_ttl).await {
        Ok(()) => {
            tracing::warn!(job_id = %meta.job_id, status = %meta.status, "the job store had lost the running job: put back");
            Ok(true)
        }
        Err(JobStoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
