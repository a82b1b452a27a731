//! A job split into shards: each shard runs under a lease of its own, and the job (the parent) sums
//! them up.
//!
//! Submit splits a job above `TRACE_SHARD_MIN_IDS` ids into `shards` contiguous id ranges
//! ([`trace_core::admission::shards`]) and sends one message per shard; the job's record says how
//! many (`shards`). A shard's record in the job store ([`JobMeta::shard_record`], id
//! [`JobId::shard`]) holds its status, attempts, lease and progress: claims, heartbeats, retries,
//! checkpoints and continuations work on it exactly as on a whole job. It is created by the first
//! claim of its message (or rebuilt from the job's, if the job store lost it). The job's input,
//! chunks and result are the job's: a shard writes its chunks as `{domain}/{shard:04}-…`, then a
//! record of them (`jobs/{id}/shards/{shard:04}.json`, [`trace_core::layout::ShardDone`]), and the
//! shard that finds every shard's record there writes the job's manifest (see
//! `worker::shards`).
//!
//! The job's own record moves `queued → started` with its first shard's claim, `→ failed` when a
//! shard fails for good (its siblings go on: a retry re-runs the failed shard alone), `→ cancelled`
//! by a caller (each shard's heartbeat sees it and stops), `→ finished` by the reduce.

use chrono::Utc;
use trace_core::job::{JobError, JobMeta, JobStatus, Progress};
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, JobStoreError, StoreError};
use trace_core::JobId;

use crate::record::{self, Asker, RestoreError};
use crate::worker::redrivable;
use crate::App;

/// The record of `message`'s shard: from the job store, else derived from the job's record (and
/// put in the job store unless the job is over): finished when the shard's record of its chunks is
/// stored, queued otherwise. None: the job is unknown or expired.
pub async fn shard_record(app: &App, message: &ShardMessage) -> Result<Option<JobMeta>, RestoreError> {
    let id = message.lease_id();
    if let Some(meta) = app.backends.jobs.get(&id).await? {
        return Ok(Some(meta));
    }
    let Some(job) = record::get_or_restore(app, &message.job_id, Asker::Message).await? else {
        return Ok(None);
    };
    let mut shard = job.shard_record(message.shard, message.ids_to.saturating_sub(message.ids_from));
    if job.status.is_terminal() && !(job.status == JobStatus::Failed && redrivable(&job)) {
        // Not stored: the claim drops the message of a job that is over.
        shard.status = job.status;
        return Ok(Some(shard));
    }
    let done = layout::shard_done_key(&message.job_id, message.shard);
    match app.backends.store.get(&done).await {
        Ok(_) => {
            shard.status = JobStatus::Finished;
            shard.attempt = 1;
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match app.backends.jobs.create(&shard, app.config.job_ttl).await {
        Ok(()) => Ok(Some(shard)),
        Err(JobStoreError::AlreadyExists(_)) => Ok(app.backends.jobs.get(&id).await?),
        Err(e) => Err(e.into()),
    }
}

/// A shard of job `job` was claimed: the job becomes `started` (a failed job is queued again first
/// when this shard's own failed message came again, `redriven`: the siblings of a failed shard leave
/// the job failed). Best effort: a failure is logged.
pub async fn job_running(app: &App, job: &JobId, redriven: bool) {
    for _ in 0..5 {
        let meta = match record::get_or_restore(app, job, Asker::Message).await {
            Ok(Some(meta)) => meta,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "could not mark the sharded job started"),
        };
        let next = match meta.status {
            JobStatus::Queued => meta.transitioned(JobStatus::Started, Utc::now(), None),
            JobStatus::Failed if redriven && redrivable(&meta) => {
                let _ = app.backends.store.delete_prefix(&layout::outcome_key(job)).await;
                meta.requeued()
            }
            _ => return,
        };
        let Ok(next) = next else { return };
        match app.backends.jobs.compare_and_set(meta.guard(), &next).await {
            Ok(CasOutcome::Applied) if next.status == JobStatus::Started => return,
            Ok(_) => continue,
            Err(e) => return tracing::warn!(error = %e, "could not mark the sharded job started"),
        }
    }
}

/// A shard of job `job` failed for good with `error`: so does the job (its other shards go on, and
/// a retry re-runs only the failed one). Recorded beside the job's input first.
pub async fn job_failed(app: &App, job: &JobId, error: Option<JobError>) {
    for _ in 0..5 {
        let meta = match record::get_or_restore(app, job, Asker::Message).await {
            Ok(Some(meta)) => meta,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "could not fail the sharded job"),
        };
        if meta.status.is_terminal() {
            return;
        }
        let Ok(failed) = meta.transitioned(JobStatus::Failed, Utc::now(), error.clone()) else { return };
        record::save_outcome(app, &failed).await;
        match app.backends.jobs.compare_and_set(meta.guard(), &failed).await {
            Ok(CasOutcome::Applied) => {
                return tracing::warn!(job_id = %job, "a shard failed: the job failed");
            }
            Ok(_) => continue,
            Err(e) => {
                return tracing::warn!(error = %e, "could not fail the sharded job (recorded in the object store)")
            }
        }
    }
}

/// The records of job `meta`'s shards that exist, in shard order.
pub async fn shard_records(app: &App, meta: &JobMeta) -> Result<Vec<JobMeta>, JobStoreError> {
    let mut out = Vec::new();
    for shard in 0..meta.shards {
        if let Some(record) = app.backends.jobs.get(&meta.job_id.shard(shard)).await? {
            out.push(record);
        }
    }
    Ok(out)
}

/// The progress of a sharded job that has not ended: the sum of its shards' (ids done, records
/// written; the domain of the first shard still reading), and how many shards are finished.
pub fn summed(meta: &JobMeta, shards: &[JobMeta]) -> (Progress, u32) {
    let mut progress = Progress::start(meta.cid_count);
    let mut done = 0;
    let mut ids_done = 0;
    for shard in shards {
        ids_done += shard.progress.ids_done;
        progress.records_written += shard.progress.records_written;
        if shard.status == JobStatus::Finished {
            done += 1;
        } else if progress.domain.is_none() {
            progress.domain = shard.progress.domain;
        }
    }
    progress.set_ids_done(ids_done.min(meta.cid_count));
    (progress, done)
}

/// The messages of the shards of failed job `meta` that have not finished and do not run: those
/// whose record failed (queued again here) or is missing. For a retry.
pub async fn shards_to_retry(app: &App, meta: &JobMeta) -> Result<Vec<ShardMessage>, RestoreError> {
    let messages =
        ShardMessage::split(meta.job_id, meta.profile, meta.domains.clone(), meta.cid_count, meta.shards);
    let mut out = Vec::new();
    for message in messages {
        match app.backends.store.get(&layout::shard_done_key(&meta.job_id, message.shard)).await {
            Ok(_) => continue,
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match app.backends.jobs.get(&message.lease_id()).await? {
            Some(shard) if shard.status == JobStatus::Failed => {
                let _ = app.backends.store.delete_prefix(&layout::outcome_key(&shard.job_id)).await;
                if let Ok(queued) = shard.requeued() {
                    app.backends.jobs.compare_and_set(shard.guard(), &queued).await?;
                }
                out.push(message);
            }
            Some(_) => {}
            None => out.push(message),
        }
    }
    Ok(out)
}
