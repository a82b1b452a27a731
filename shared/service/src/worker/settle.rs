//! Step 5: settle. The run's outcome is recorded on the job, and the message is deleted or left to
//! come back: the worker's retry policy is the one `match` of [`record_outcome`].

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use trace_core::domain::Domain;
use trace_core::job::{JobError, JobMeta, JobStatus};
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, Delivery, JobQueue};
use trace_core::JobId;

use super::lease::{Lease, LeaseLost};
use super::ShardError;
use crate::metrics::Outcome;
use crate::{record, App};

/// What to do with the message after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Delete it: done, a duplicate, cancelled, or failed for good (the job says why).
    Delete,
    /// Leave it to come back after `after` (a transient error, or a job another worker is running).
    /// On its last allowed delivery a failing job is marked failed and the queue moves the message to
    /// its dead-letter queue.
    Retry {
        /// When it should be visible again.
        after: Duration,
    },
}

/// What [`record_outcome`] decided: the message's fate, and how the run ended (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settled {
    /// What happens to the message.
    pub(super) disposition: Disposition,
    /// How the run ended.
    pub(super) outcome: Outcome,
    /// The failure's code, for a failed or retried run.
    pub(super) error_code: Option<&'static str>,
}

impl Settled {
    fn new(disposition: Disposition, outcome: Outcome, error_code: Option<&'static str>) -> Self {
        Settled { disposition, outcome, error_code }
    }
}

/// The wait before a transiently failed message comes back: longer with each delivery.
pub(super) fn backoff(delivery: &Delivery) -> Duration {
    Duration::from_secs(5 * u64::from(delivery.receive_count.clamp(1, 12)))
}

/// Records the outcome of a run on the job (failed, released, or left as is) and decides what
/// happens to its message.
pub(super) async fn record_outcome(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    message: &ShardMessage,
    lease: &Lease,
    outcome: Result<u64, ShardError>,
    elapsed: Duration,
) -> Settled {
    let error = match outcome {
        Ok(records) => {
            tracing::info!(records, elapsed_s = elapsed.as_secs_f64(), "job finished");
            return Settled::new(Disposition::Delete, Outcome::Finished, None);
        }
        Err(error) => error,
    };
    let job_id = &lease.meta().result_id();
    match error {
        // Drop the duplicate: the job is another worker's now.
        ShardError::LeaseLost(LeaseLost::TakenOver) => {
            tracing::warn!("job taken over by another worker: stopping");
            remove_own_strays(app, job_id, message.shard, lease.meta().attempt).await;
            Settled::new(Disposition::Delete, Outcome::TakenOver, None)
        }
        ShardError::LeaseLost(LeaseLost::Cancelled) => {
            tracing::info!("job cancelled: partial result removed");
            remove_result(app, job_id, None).await;
            Settled::new(Disposition::Delete, Outcome::Cancelled, None)
        }
        // Continue in a new invocation: released, and a new message (a fresh receive count) sent.
        ShardError::Continue => continue_run(app, queue, lease, message).await,
        // Release: back to queued and visible at once, for the next worker.
        ShardError::Shutdown => {
            transition(app, &lease.current(), JobStatus::Queued, None).await;
            tracing::info!("shutting down: job released");
            Settled::new(Disposition::Retry { after: Duration::ZERO }, Outcome::Released, None)
        }
        // Fail the job for good.
        // The status first: only a run that still holds the job may remove what was written (a worker
        // paused past its lease must not delete the result of the one that took over).
        e @ ShardError::Timeout(_) => {
            const CODE: &str = "JOB_TIMEOUT";
            let failure = Some(job_error(CODE, e.to_string()));
            match transition(app, &lease.current(), JobStatus::Failed, failure).await {
                Recorded::Applied => {
                    // Of a job split into shards, only this shard's part: its siblings' finished
                    // parts stay for the retry, which runs this shard alone.
                    let shard = (message.shards > 1).then_some(message.shard);
                    remove_result(app, job_id, shard).await;
                    Settled::new(Disposition::Delete, Outcome::Failed, Some(CODE))
                }
                Recorded::Changed => Settled::new(Disposition::Delete, Outcome::TakenOver, None),
                // Unrecorded: the message comes back, and its next delivery takes the job over.
                Recorded::Unreachable => Settled::new(
                    Disposition::Retry { after: backoff(delivery) },
                    Outcome::Retried,
                    Some(CODE),
                ),
            }
        }
        ShardError::BadInput(reason) => {
            const CODE: &str = "BAD_INPUT";
            transition(app, &lease.current(), JobStatus::Failed, Some(job_error(CODE, reason))).await;
            Settled::new(Disposition::Delete, Outcome::Failed, Some(CODE))
        }
        // Retry, until the last allowed delivery.
        e @ ShardError::Source(_) => retry_or_fail(app, delivery, lease, "SOURCE_ERROR", e).await,
        e @ ShardError::Store(_) => retry_or_fail(app, delivery, lease, "STORE_ERROR", e).await,
        e @ ShardError::Jobs(_) => retry_or_fail(app, delivery, lease, "JOB_STORE_ERROR", e).await,
    }
}

/// The Lambda invocation is ending and the run has stored its checkpoint: the job goes back to
/// queued and a continuation message takes it on from the checkpoint in a new invocation. The message
/// in hand is deleted once the continuation is sent; if it cannot be sent, the message itself comes
/// back at once instead (spending one of its deliveries).
async fn continue_run(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    lease: &Lease,
    message: &ShardMessage,
) -> Settled {
    if transition(app, &lease.current(), JobStatus::Queued, None).await == Recorded::Changed {
        tracing::warn!("the job changed before its continuation (cancelled or taken over): not continued");
        return Settled::new(Disposition::Delete, Outcome::TakenOver, None);
    }
    let next = message.continued();
    let (job, shard, n) =
        (message.job_id.to_string(), message.shard.to_string(), next.continuation.to_string());
    match queue.send(&next.to_body(), &[("job_id", &job), ("shard", &shard), ("continuation", &n)]).await {
        Ok(_) => {
            tracing::info!(
                continuation = next.continuation,
                "the invocation is ending: the job continues in a new message"
            );
            Settled::new(Disposition::Delete, Outcome::Continued, None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not send the continuation: the message comes back instead");
            Settled::new(Disposition::Retry { after: Duration::ZERO }, Outcome::Released, None)
        }
    }
}

/// The codes of a job failed on its last delivery, its message left for the dead-letter queue (or
/// failed by the [`reaper`](crate::reaper) when its worker died on that delivery): a redrive of that
/// message runs the job again.
const DEAD_LETTER_CODES: [&str; 4] = ["SOURCE_ERROR", "STORE_ERROR", "JOB_STORE_ERROR", "JOB_ORPHANED"];

/// Whether a failed job's message runs it again: it failed with one of [`DEAD_LETTER_CODES`], so its
/// message went to the dead-letter queue (from which it may be redriven).
pub fn redrivable(meta: &JobMeta) -> bool {
    meta.error.as_ref().is_some_and(|e| DEAD_LETTER_CODES.contains(&e.code.as_str()))
}

/// A transient failure: the job goes back to queued for a retry after [`backoff`], or, on the
/// message's last allowed delivery, fails with `code`.
async fn retry_or_fail(
    app: &App,
    delivery: &Delivery,
    lease: &Lease,
    code: &'static str,
    error: ShardError,
) -> Settled {
    if delivery.receive_count >= app.config.max_receive_count {
        tracing::error!(error = %error, receives = delivery.receive_count, "job failed on its last delivery");
        let failure = job_error(code, error.to_string());
        transition(app, &lease.current(), JobStatus::Failed, Some(failure)).await;
        // Left undeleted: the queue moves it to the dead-letter queue on its next receive.
        Settled::new(Disposition::Retry { after: Duration::ZERO }, Outcome::Failed, Some(code))
    } else {
        tracing::warn!(error = %error, receives = delivery.receive_count, "job failed; released for a retry");
        transition(app, &lease.current(), JobStatus::Queued, None).await;
        Settled::new(Disposition::Retry { after: backoff(delivery) }, Outcome::Retried, Some(code))
    }
}

/// The last allowed delivery could not even claim the job (the job store down): the job is failed
/// with `code` all the same, in the object store first (`outcome.json`, which status reads find on a
/// job left stale) and in the job store if it answers, so its message reaching the dead-letter queue
/// never leaves it `queued` or `started`. A redrive of that message runs it again.
pub(super) async fn fail_unclaimed(app: &App, shard: &ShardMessage, code: &'static str, message: String) {
    let job = &shard.lease_id();
    let meta = match app.backends.jobs.get(job).await {
        Ok(Some(meta)) => Some(meta),
        _ if shard.shards > 1 => record::rebuild(app, &shard.job_id)
            .await
            .ok()
            .flatten()
            .map(|j| j.shard_record(shard.shard, shard.ids_to.saturating_sub(shard.ids_from))),
        _ => record::rebuild(app, job).await.ok().flatten(),
    };
    let Some(meta) = meta.filter(|m| !m.status.is_terminal()) else { return };
    let Ok(failed) = meta.transitioned(JobStatus::Failed, Utc::now(), Some(job_error(code, message))) else {
        return;
    };
    record::save_outcome(app, &failed).await;
    if let Err(e) = app.backends.jobs.compare_and_set(meta.guard(), &failed).await {
        tracing::warn!(error = %e, "the job store is down: the failure is recorded in the object store");
    }
    if shard.shards > 1 {
        crate::sharding::job_failed(app, &shard.job_id, failed.error.clone()).await;
    }
    tracing::error!(code, "could not claim the job on its last delivery: job failed");
}

fn job_error(code: &str, message: String) -> JobError {
    JobError { code: code.to_owned(), message }
}

/// What became of a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Applied: the run still held the job.
    Applied,
    /// The job changed meanwhile (cancelled, taken over) or refused the transition: left as is.
    Changed,
    /// The job store could not be reached.
    Unreachable,
}

/// Moves the job to `to`, unless it changed meanwhile; a failure is logged, not returned.
async fn transition(app: &App, meta: &JobMeta, to: JobStatus, error: Option<JobError>) -> Recorded {
    let Ok(next) = meta.transitioned(to, Utc::now(), error) else { return Recorded::Changed };
    match app.backends.jobs.compare_and_set(meta.guard(), &next).await {
        Ok(CasOutcome::Applied) => {
            if next.status.is_terminal() {
                record::save_outcome(app, &next).await;
            }
            // A shard that failed for good fails its job (a cancelled one was cancelled by it).
            if let (JobStatus::Failed, Some(job)) = (next.status, next.parent) {
                crate::sharding::job_failed(app, &job, next.error.clone()).await;
            }
            Recorded::Applied
        }
        Ok(other) => {
            tracing::warn!(to = %to, outcome = ?other, "job changed meanwhile; status left as is");
            Recorded::Changed
        }
        Err(e) => {
            tracing::error!(to = %to, error = %e, "could not record the job's status");
            Recorded::Unreachable
        }
    }
}

/// A run that lost its job has stopped writing: the chunks of its own `shard` and `attempt` that the job's
/// complete result does not list are removed (a zombie's late writes). Without a manifest yet, the
/// new owner's manifest write sweeps them instead. Never touches a listed chunk or another attempt's;
/// a failure is logged, not returned (strays are never served, and expire with the job).
async fn remove_own_strays(app: &App, job: &JobId, shard: u32, attempt: u32) {
    let store = &app.backends.store;
    let manifest: layout::Manifest = match store.get(&layout::manifest_key(job)).await {
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "unreadable manifest: strays left"),
        },
        Err(trace_core::ports::StoreError::NotFound(_)) => return,
        Err(e) => return tracing::warn!(error = %e, "could not read the manifest: strays left"),
    };
    let listed: std::collections::HashSet<&str> =
        manifest.domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.as_str())).collect();
    let stored = match store.list(&layout::result_prefix(job)).await {
        Ok(stored) => stored,
        Err(e) => return tracing::warn!(error = %e, "could not list the result: strays left"),
    };
    for object in stored {
        let ours = layout::chunk_slot(&object.key).is_some_and(|s| s.shard == shard && s.attempt == attempt);
        if ours && !listed.contains(object.key.as_str()) {
            tracing::info!(key = object.key, "removing a chunk this run stored after it lost the job");
            if let Err(e) = store.delete_prefix(&object.key).await {
                tracing::warn!(key = object.key, error = %e, "could not remove a stray chunk");
            }
        }
    }
}

/// Removes what the job's runs wrote (chunks, manifest, checkpoints) — with `shard`, only that
/// shard's chunks and checkpoint (a job split into shards keeps its other shards' parts). A failure is
/// logged, not returned.
async fn remove_result(app: &App, job: &JobId, shard: Option<u32>) {
    let store = &app.backends.store;
    let prefixes = match shard {
        None => vec![layout::result_prefix(job), layout::manifest_key(job), layout::checkpoint_prefix(job)],
        Some(shard) => Domain::ALL
            .iter()
            .map(|&d| format!("{}{shard:04}-", layout::domain_prefix(job, d)))
            .chain([layout::checkpoint_key(job, shard)])
            .collect(),
    };
    for prefix in prefixes {
        if let Err(e) = store.delete_prefix(&prefix).await {
            tracing::warn!(prefix, error = %e, "could not remove a partial result");
        }
    }
}

/// Deletes the message or sets when it comes back.
pub async fn settle_message(queue: &dyn JobQueue, delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Delete => queue.delete(&delivery.receipt).await,
        Disposition::Retry { after } => queue.extend_visibility(&delivery.receipt, after).await,
    };
    if let Err(e) = result {
        tracing::warn!(message_id = %delivery.message_id, error = %e, ?disposition, "could not settle the message");
    }
}
