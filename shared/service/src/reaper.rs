//! The reaper: ends jobs nothing will end. A job is orphaned when it is still `started` but its lease
//! expired long ago — [`ORPHAN_AFTER_LEASES`] visibility timeouts, time enough for its message to
//! have come back and been taken over — typically a worker that died (a crash, an out-of-memory kill)
//! on the message's last delivery, whose message the queue then moved to the dead-letter queue
//! without anyone marking the job. Such a job is failed with `JOB_ORPHANED` (recorded beside its
//! input, like any failure). The code is one a redrive retries: if its message does come back after
//! all (from the dead-letter queue, or late), the job is queued again and runs from its checkpoint.
//!
//! A job whose outcome only the object store has (a last delivery that could not reach the job store)
//! is brought in line too ([`record::reconcile_stale`]). The reaper runs with each scheduled backfill
//! run, and a status read does the same for the job it reads.

use chrono::Utc;
use trace_core::job::{JobError, JobMeta, JobStatus};
use trace_core::ports::{CasOutcome, JobStoreError};

use crate::{record, App};

/// How many visibility timeouts after its lease expired a `started` job counts as orphaned.
pub const ORPHAN_AFTER_LEASES: u32 = 3;

/// Most jobs one sweep looks at (the most recent, per status).
const SWEEP: usize = 1_000;

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reaped {
    /// Jobs looked at (queued or started).
    pub looked_at: usize,
    /// Jobs whose outcome was only in the object store, brought in line.
    pub reconciled: usize,
    /// Orphaned jobs failed with `JOB_ORPHANED`.
    pub orphaned: usize,
}

/// Sweeps the most recent queued and started jobs.
pub async fn sweep(app: &App) -> Result<Reaped, JobStoreError> {
    let mut done = Reaped::default();
    let orphan_after = app.config.worker_visibility * (ORPHAN_AFTER_LEASES + 1);
    for status in [JobStatus::Started, JobStatus::Queued] {
        for meta in app.backends.jobs.list_recent(None, Some(status), SWEEP).await? {
            done.looked_at += 1;
            let before = meta.status;
            let meta = record::reconcile_stale(app, meta).await;
            if meta.status != before {
                done.reconciled += 1;
                continue;
            }
            if meta.status != JobStatus::Started {
                continue;
            }
            // A job split into shards holds no lease itself: its shards' records do.
            let leased =
                if meta.shards > 1 { crate::sharding::shard_records(app, &meta).await? } else { vec![meta] };
            for leased in leased {
                if fail_if_orphaned(app, &leased, orphan_after).await? {
                    done.orphaned += 1;
                }
            }
        }
    }
    Ok(done)
}

/// Fails `meta` with `JOB_ORPHANED` if it is `started` and its lease has been idle `orphan_after`
/// (a shard's job with it); whether it did.
async fn fail_if_orphaned(
    app: &App,
    meta: &JobMeta,
    orphan_after: std::time::Duration,
) -> Result<bool, JobStoreError> {
    let renewed = meta.heartbeat_at.or(meta.started_at).unwrap_or(meta.created_at);
    let idle = (Utc::now() - renewed).to_std().unwrap_or_default();
    if meta.status != JobStatus::Started || idle < orphan_after {
        return Ok(false);
    }
    let error = JobError {
        code: "JOB_ORPHANED".into(),
        message: format!(
            "no worker has held the job for {} s (its last one stopped without an outcome)",
            idle.as_secs()
        ),
    };
    let Ok(failed) = meta.transitioned(JobStatus::Failed, Utc::now(), Some(error)) else { return Ok(false) };
    if app.backends.jobs.compare_and_set(meta.guard(), &failed).await? != CasOutcome::Applied {
        return Ok(false);
    }
    record::save_outcome(app, &failed).await;
    tracing::warn!(job_id = %meta.job_id, idle_s = idle.as_secs(), "orphaned job failed");
    if let Some(job) = meta.parent {
        crate::sharding::job_failed(app, &job, failed.error.clone()).await;
    }
    Ok(true)
}
