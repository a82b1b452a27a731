//! The worker: runs one queue message (a shard of a job) into result chunks.
//!
//! A message goes through these steps, one file each, in this order:
//!
//! 1. [`lease`]: claim the job with a compare-and-set (`queued → started`; a `started` job whose
//!    heartbeat is older than the visibility timeout is taken over; anything else is a duplicate),
//!    then keep the message invisible and the job's heartbeat fresh while the run lasts;
//! 2. [`input`]: read the shard's ids from the job's input;
//! 3. [`chunks`]: run the [`engine`](crate::engine) into chunks of `TRACE_STREAM_BATCH_SIZE` records,
//!    uploaded as they fill;
//! 4. [`manifest`]: write the manifest last (its presence means the result is complete), then mark
//!    the job finished;
//! 5. [`settle`]: record the outcome on the job and decide what happens to the message: one
//!    [`Disposition`].
//!
//! Steps 2–4 run before one [`Deadline`]: the job timeout, or earlier the end of the Lambda
//! invocation less a margin. Between two batches the run also stops when the lease is lost (a
//! cancel or a takeover, seen by the heartbeat) or the process is shutting down.

mod chunks;
mod input;
mod lease;
mod manifest;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use trace_core::message::ShardMessage;
use trace_core::ports::{Delivery, JobQueue, JobStoreError, SourceError, StoreError};
use trace_core::QueueKind;
use tracing::Instrument;

pub use lease::LeaseLost;
pub use settle::{settle_message, Disposition};

use crate::metrics::JobEnd;
use crate::App;
use chunks::{ChunkWriter, Stored};
use lease::{Claim, Lease};

/// Why the run of a claimed shard stopped before its result was complete. [`settle`] turns each
/// into what happens to the job and the message.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The event source failed (transient).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The object store failed (transient).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job store failed (transient).
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
    /// The job was cancelled or taken over by another worker.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The process is shutting down: release the job.
    #[error("the worker is shutting down")]
    Shutdown,
    /// The run reached its [`Deadline`]; the job timeout in seconds.
    #[error("the job ran longer than {0} s")]
    Timeout(u64),
    /// The job's input is missing or unreadable (permanent).
    #[error("bad job input: {0}")]
    BadInput(String),
}

/// Time kept back from a Lambda invocation's deadline to record the outcome.
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);

/// When a run must stop: `TRACE_JOB_TIMEOUT_SECONDS` after the claim, or earlier when the Lambda
/// invocation ends sooner (less [`DEADLINE_MARGIN`]), so the outcome is still recorded.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    job_timeout: Duration,
}

impl Deadline {
    fn from_claim(job_timeout: Duration, invocation_ends: Option<Instant>) -> Self {
        let mut at = Instant::now() + job_timeout;
        if let Some(end) =
            invocation_ends.map(|end| end.checked_sub(DEADLINE_MARGIN).unwrap_or(end)).filter(|end| *end < at)
        {
            tracing::info!(
                limit_s = end.saturating_duration_since(Instant::now()).as_secs(),
                "the invocation ends before the job timeout: run bounded by it"
            );
            at = end;
        }
        Deadline { at, job_timeout }
    }

    fn passed(&self) -> ShardError {
        ShardError::Timeout(self.job_timeout.as_secs())
    }
}

/// Polls `kind`'s queue and handles messages one at a time until `shutdown` turns true; the message
/// in hand is finished or released first.
pub async fn poll_queue(app: App, kind: QueueKind, mut shutdown: watch::Receiver<bool>) {
    let queue = app.backends.queue(kind).clone();
    tracing::info!(queue = kind.as_str(), "worker polling");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let received = tokio::select! {
            r = queue.receive(1, Duration::from_secs(20), app.config.worker_visibility) => r,
            _ = shutdown.changed() => break,
        };
        let deliveries = match received {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "receive failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for delivery in deliveries {
            let disposition = handle_delivery(&app, &queue, &delivery, shutdown.clone(), None).await;
            settle_message(queue.as_ref(), &delivery, disposition).await;
        }
    }
    tracing::info!(queue = kind.as_str(), "worker stopped");
}

/// Handles one delivery of `queue` and tells what to do with its message. `shutdown` turning true
/// makes a running job release its message (back to queued, visible at once) at the next batch.
/// `invocation_ends` is the end of the Lambda invocation: the run stops (failed, `JOB_TIMEOUT`)
/// before Lambda would kill it unrecorded.
pub async fn handle_delivery(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    shutdown: watch::Receiver<bool>,
    invocation_ends: Option<Instant>,
) -> Disposition {
    let message = match ShardMessage::parse(&delivery.body) {
        Ok(m) => m,
        Err(reason) => {
            // Unreadable by any worker: let it reach the dead-letter queue for a human to look at.
            tracing::error!(message_id = %delivery.message_id, reason, "malformed queue message");
            return Disposition::Retry { after: Duration::ZERO };
        }
    };
    let span = tracing::info_span!("job", job_id = %message.job_id, shard = message.shard, attempt = tracing::field::Empty);
    run_shard(app, queue, delivery, &message, shutdown, invocation_ends).instrument(span).await
}

/// The whole pipeline for one shard message: claim, write the result under a lease, settle.
async fn run_shard(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    message: &ShardMessage,
    shutdown: watch::Receiver<bool>,
    invocation_ends: Option<Instant>,
) -> Disposition {
    let meta = match lease::claim(app, message).await {
        Ok(Claim::Run(meta)) => *meta,
        Ok(Claim::Duplicate(why)) => {
            tracing::info!(why, receives = delivery.receive_count, "nothing to do for this message");
            return Disposition::Delete;
        }
        Ok(Claim::Busy) => {
            tracing::info!("job is running in another worker: message left for later");
            return Disposition::Retry { after: app.config.worker_visibility };
        }
        Err(e) if delivery.receive_count >= app.config.max_receive_count => {
            settle::fail_unclaimed(app, &message.job_id, "BACKEND_ERROR", e.to_string()).await;
            // Left undeleted: the queue moves it to the dead-letter queue.
            return Disposition::Retry { after: Duration::ZERO };
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not claim the job; message left for a retry");
            return Disposition::Retry { after: settle::backoff(delivery) };
        }
    };
    tracing::Span::current().record("attempt", meta.attempt);
    tracing::info!(cid_count = meta.cid_count, "job started");
    let started = Instant::now();
    let deadline = Deadline::from_claim(app.config.job_timeout, invocation_ends);
    let lease = Lease::new(&meta);
    let heartbeat = lease::keep_alive(app, queue, delivery, &lease);
    let (outcome, records, stored) = write_result(app, message, &lease, shutdown, deadline).await;
    heartbeat.abort();
    let run = started.elapsed();
    let settled = settle::record_outcome(app, delivery, &lease, outcome, run).await;
    if crate::metrics::enabled(app.config.metrics) {
        let meta = lease.meta();
        let claimed = meta.started_at.unwrap_or(meta.created_at);
        JobEnd {
            job_id: meta.job_id.to_string(),
            shard: message.shard,
            attempt: meta.attempt,
            queue: meta.queue.as_str(),
            outcome: settled.outcome,
            error_code: settled.error_code,
            queue_wait: (claimed - meta.created_at).to_std().unwrap_or_default(),
            run,
            records,
            bytes_stored: stored.bytes,
            object_writes: stored.objects,
        }
        .emf()
        .emit();
    }
    settled.disposition
}

/// Steps 2–4 before `deadline`: reads the shard's ids, writes their chunks, the manifest last, and
/// marks the job finished; the number of records written. Whatever stops the run, the uploads in
/// flight land before this returns, so none lands after the caller's clean-up. Also, however it ended,
/// the records written and the objects stored (for the job-end metrics).
async fn write_result(
    app: &App,
    message: &ShardMessage,
    lease: &Lease,
    shutdown: watch::Receiver<bool>,
    deadline: Deadline,
) -> (Result<u64, ShardError>, u64, Stored) {
    let mut chunks = ChunkWriter::new(app, lease, message, shutdown);
    let mut manifest_size = None;
    let steps = async {
        let ids = input::read_shard_ids(app, lease.meta(), message).await?;
        let aggregation = chunks.write(ids, message).await?;
        tracing::debug!("every row read");
        let domains = chunks.finish(&message.domains).await?;
        tracing::debug!("every chunk stored");
        manifest_size =
            Some(manifest::write(app, lease.meta(), message.profile, domains, aggregation).await?);
        manifest::mark_finished(app, lease, chunks.progress()).await?;
        Ok(chunks.progress().records_written)
    };
    let outcome =
        tokio::time::timeout_at(deadline.at, steps).await.unwrap_or_else(|_| Err(deadline.passed()));
    if outcome.is_err() {
        chunks.drain().await;
    }
    let mut stored = chunks.stored();
    if let Some(size) = manifest_size {
        stored.objects += 1;
        stored.bytes += size;
    }
    (outcome, chunks.progress().records_written, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::app;
    use chrono::Utc;
    use trace_core::job::JobStatus;
    use trace_core::{layout, JobId, Principal, TraceRequest};

    /// A queued job of `ids` containers (history) and its first delivery.
    async fn queued(app: &App, ids: u64) -> (JobId, Delivery) {
        let ids: Vec<String> = (1..=ids).map(trace_dataset::container_id).collect();
        let body = serde_json::json!({ "container_ids": ids, "domains": ["history"] });
        let request = TraceRequest::parse(body.to_string().as_bytes(), usize::MAX).unwrap();
        let accepted =
            crate::submit::enqueue(app, &Principal::local(), &request, QueueKind::Light).await.unwrap();
        let delivery = app
            .backends
            .light
            .receive(1, Duration::from_secs(1), Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        (accepted.job_id, delivery)
    }

    /// Ages the job's lease as if its worker had stopped renewing it `by` ago.
    async fn age_lease(app: &App, job: &JobId, by: chrono::Duration) {
        let meta = app.backends.jobs.get(job).await.unwrap().unwrap();
        let renewed = Some(Utc::now() - by);
        let outcome =
            app.backends.jobs.update_progress(job, meta.guard(), &meta.progress, renewed).await.unwrap();
        assert_eq!(outcome, trace_core::ports::CasOutcome::Applied);
    }

    /// A worker paused past its lease wakes up at its deadline after another took the job over and
    /// finished it: its clean-up must leave the finished result alone (it used to delete it first
    /// and then find the job no longer its own: `finished` with no result).
    #[tokio::test]
    async fn a_zombie_s_timeout_leaves_the_new_owner_s_finished_result_alone() {
        let app = app(&[]).await;
        let (job, delivery) = queued(&app, 30).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(claimed)) = lease::claim(&app, &message).await else { panic!("claimed") };
        let zombie = Lease::new(&claimed);
        // It stops renewing; the lease expires; the next delivery takes over and finishes.
        age_lease(&app, &job, chrono::Duration::hours(1)).await;
        let queue = app.backends.light.clone();
        let (_, shutdown) = watch::channel(false);
        let disposition = handle_delivery(&app, &queue, &delivery, shutdown, None).await;
        assert_eq!(disposition, Disposition::Delete);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 2));
        let manifest = app.backends.store.get(&layout::manifest_key(&job)).await.unwrap();
        // The zombie wakes up at its deadline.
        let settled =
            settle::record_outcome(&app, &delivery, &zombie, Err(ShardError::Timeout(1)), Duration::ZERO)
                .await;
        assert_eq!(settled.outcome, crate::metrics::Outcome::TakenOver);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!(meta.status, JobStatus::Finished);
        assert_eq!(app.backends.store.get(&layout::manifest_key(&job)).await.unwrap(), manifest);
        assert!(!app.backends.store.list(&layout::result_prefix(&job)).await.unwrap().is_empty());
    }

    /// The claim takes a `started` job over exactly when its lease is a visibility timeout old (less
    /// the clock slack), and progress written meanwhile does not keep a dead worker's lease alive.
    #[tokio::test]
    async fn a_lease_expires_a_visibility_timeout_after_its_last_renewal_whatever_progress_says() {
        let app =
            app(&[("TRACE_WORKER_VISIBILITY_SECONDS", "60"), ("TRACE_WORKER_HEARTBEAT_SECONDS", "20")]).await;
        let (job, delivery) = queued(&app, 3).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(claimed)) = lease::claim(&app, &message).await else { panic!("claimed") };
        let lease = Lease::new(&claimed);
        assert!(matches!(lease::claim(&app, &message).await, Ok(Claim::Busy)), "a fresh lease is live");
        // Renewed 57 s ago: live (60 s less the 2 s slack is 58 s).
        age_lease(&app, &job, chrono::Duration::seconds(57)).await;
        assert!(matches!(lease::claim(&app, &message).await, Ok(Claim::Busy)));
        // Renewed 58.5 s ago: expired, even after a progress write now.
        age_lease(&app, &job, chrono::Duration::milliseconds(58_500)).await;
        lease.publish(&app, lease.progress()).await.unwrap();
        match lease::claim(&app, &message).await {
            Ok(Claim::Run(meta)) => assert_eq!(meta.attempt, 2),
            _ => panic!("an expired lease is taken over"),
        }
        // The new owner's lease, renewed 50 s ago, is live.
        age_lease(&app, &job, chrono::Duration::seconds(50)).await;
        assert!(matches!(lease::claim(&app, &message).await, Ok(Claim::Busy)));
        // The first worker learns it lost the job at its next write.
        assert!(matches!(
            lease.publish(&app, lease.progress()).await,
            Err(ShardError::LeaseLost(LeaseLost::TakenOver))
        ));
    }

    /// The job store lost a queued job before its claim (a Redis flush): the delivery rebuilds it from
    /// the object store and runs it, instead of dropping the message as "unknown".
    #[tokio::test]
    async fn a_job_the_job_store_lost_before_its_claim_is_rebuilt_and_run() {
        let before = app(&[]).await;
        let (job, delivery) = queued(&before, 40).await;
        let app = crate::testing::flushed(&before);
        assert!(app.backends.jobs.get(&job).await.unwrap().is_none(), "flushed");
        let (_, shutdown) = watch::channel(false);
        let queue = app.backends.light.clone();
        assert_eq!(handle_delivery(&app, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let meta = app.backends.jobs.get(&job).await.unwrap().expect("rebuilt");
        assert_eq!((meta.status, meta.owner.as_str()), (JobStatus::Finished, Principal::local().id()));
        assert!(app.backends.store.get(&layout::manifest_key(&job)).await.is_ok());
    }

    /// After a flush, status answers from the object store: a finished job is finished with its
    /// records, a failed one failed with its code, a queued one queued; an unknown id stays unknown.
    #[tokio::test]
    async fn status_rebuilds_a_lost_job_from_the_object_store() {
        let before = app(&[]).await;
        let (finished, delivery) = queued(&before, 25).await;
        let (_, shutdown) = watch::channel(false);
        let queue = before.backends.light.clone();
        assert_eq!(handle_delivery(&before, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let records = before.backends.jobs.get(&finished).await.unwrap().unwrap().progress.records_written;
        assert!(records > 0);
        let (cancelled, _) = queued(&before, 3).await;
        crate::status::cancel(&before, &Principal::local(), &cancelled.to_string()).await.unwrap();
        let (waiting, _) = queued(&before, 3).await;

        let app = crate::testing::flushed(&before);
        let me = Principal::local();
        let status = |id: JobId| {
            let app = app.clone();
            let me = me.clone();
            async move { crate::status::status(&app, &me, &id.to_string()).await }
        };
        let info = status(finished).await.unwrap();
        assert_eq!((info.status, info.progress_detail.records_written), (JobStatus::Finished, records));
        assert_eq!(status(cancelled).await.unwrap().status, JobStatus::Cancelled);
        assert_eq!(status(waiting).await.unwrap().status, JobStatus::Queued);
        assert!(matches!(status(JobId::new()).await, Err(trace_core::TraceError::JobNotFound(_))));
        // Put back in the job store: the next read does not need the object store.
        assert_eq!(app.backends.jobs.get(&finished).await.unwrap().unwrap().status, JobStatus::Finished);
    }

    /// A job older than its time to live is not brought back for a caller, even while its objects
    /// remain; but a queued job whose message waited in the queue longer than that (a backlog) comes
    /// back for its message, with a new time to live, and runs.
    #[tokio::test]
    async fn an_expired_job_comes_back_only_for_its_message() {
        let before = app(&[("TRACE_JOB_TTL_SECONDS", "1")]).await;
        let (job, delivery) = queued(&before, 3).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let app = crate::testing::flushed(&before);
        let caller = crate::record::get_or_restore(&app, &job, crate::record::Asker::Caller).await.unwrap();
        assert!(caller.is_none());
        let (_, shutdown) = watch::channel(false);
        let queue = app.backends.light.clone();
        assert_eq!(handle_delivery(&app, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Finished);
    }

    /// The job store lost a running job (a flush mid-run): the worker's next write puts it back from
    /// its own lease and the run finishes; a status read that rebuilt it as queued meanwhile does not
    /// make the worker give it up.
    #[tokio::test]
    async fn a_running_job_the_job_store_lost_is_put_back_by_its_worker() {
        let before = app(&[]).await;
        let (job, delivery) = queued(&before, 30).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(claimed)) = lease::claim(&before, &message).await else { panic!("claimed") };
        let lease = Lease::new(&claimed);
        // Flushed: the next progress write finds nothing and puts the job back.
        let app = crate::testing::flushed(&before);
        lease.publish(&app, lease.progress()).await.expect("still ours");
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Started, claimed.attempt));
        // Flushed again, and a status read rebuilds it as queued first.
        let app = crate::testing::flushed(&before);
        let info = crate::status::status(&app, &Principal::local(), &job.to_string()).await.unwrap();
        assert_eq!(info.status, JobStatus::Queued);
        lease.publish(&app, lease.progress()).await.expect("taken back");
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Started, claimed.attempt));
        // A job that moved on (cancelled) is not taken back.
        crate::status::cancel(&app, &Principal::local(), &job.to_string()).await.unwrap();
        assert!(matches!(
            lease.publish(&app, lease.progress()).await,
            Err(ShardError::LeaseLost(LeaseLost::Cancelled))
        ));
    }

    /// Fails a job as a last delivery would (`code`), after a claim.
    async fn fail(app: &App, job: &JobId, message: &ShardMessage, code: &str) {
        let Ok(Claim::Run(claimed)) = lease::claim(app, message).await else { panic!("claimed") };
        let error = trace_core::job::JobError { code: code.into(), message: "down".into() };
        let failed = claimed.transitioned(JobStatus::Failed, Utc::now(), Some(error)).unwrap();
        assert_eq!(
            app.backends.jobs.compare_and_set(claimed.guard(), &failed).await.unwrap(),
            trace_core::ports::CasOutcome::Applied
        );
        crate::record::save_outcome(app, &failed).await;
        assert_eq!(app.backends.jobs.get(job).await.unwrap().unwrap().status, JobStatus::Failed);
    }

    /// `POST …/retry`: only a failed job, only its owner; it is queued again with a new message, which
    /// a worker runs to the same result as a first run; a Redis loss afterwards does not bring the old
    /// failure back.
    #[tokio::test]
    async fn a_failed_job_is_retried_by_its_owner_and_finishes() {
        let app = app(&[]).await;
        let (job, delivery) = queued(&app, 30).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let me = Principal::local();
        let not_failed = crate::status::retry(&app, &me, &job.to_string()).await;
        assert!(matches!(
            not_failed,
            Err(trace_core::TraceError::JobNotRetryable { status: JobStatus::Queued })
        ));
        app.backends.light.delete(&delivery.receipt).await.unwrap();
        fail(&app, &job, &message, "SOURCE_ERROR").await;
        let stranger = Principal::new("key:someone-else", None);
        assert!(matches!(
            crate::status::retry(&app, &stranger, &job.to_string()).await,
            Err(trace_core::TraceError::JobNotFound(_))
        ));
        let info = crate::status::retry(&app, &me, &job.to_string()).await.unwrap();
        assert_eq!((info.status, info.error_code.as_deref()), (JobStatus::Queued, None));
        let again =
            app.backends.light.receive(1, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        let (_, shutdown) = watch::channel(false);
        let queue = app.backends.light.clone();
        assert_eq!(handle_delivery(&app, &queue, &again[0], shutdown, None).await, Disposition::Delete);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 2));
        let lost = crate::testing::flushed(&app);
        assert_eq!(
            crate::status::status(&lost, &me, &job.to_string()).await.unwrap().status,
            JobStatus::Finished
        );
    }

    /// The message of a job failed on its last delivery, redriven from the dead-letter queue (with its
    /// receive count kept, as the queue may), runs the job again; a message of a job that failed for
    /// good (its own input, its timeout) does not.
    #[tokio::test]
    async fn a_redriven_message_retries_its_failed_job() {
        let app = app(&[]).await;
        let (job, delivery) = queued(&app, 20).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        fail(&app, &job, &message, "STORE_ERROR").await;
        let queue = app.backends.light.clone();
        let redriven = Delivery { receive_count: 4, ..delivery.clone() };
        let (_, shutdown) = watch::channel(false);
        assert_eq!(
            handle_delivery(&app, &queue, &redriven, shutdown.clone(), None).await,
            Disposition::Delete
        );
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 2));

        for code in ["BAD_INPUT", "JOB_TIMEOUT"] {
            let (over, delivery) = queued(&app, 5).await;
            let message = ShardMessage::parse(&delivery.body).unwrap();
            fail(&app, &over, &message, code).await;
            assert_eq!(
                handle_delivery(&app, &queue, &delivery, shutdown.clone(), None).await,
                Disposition::Delete
            );
            assert_eq!(
                app.backends.jobs.get(&over).await.unwrap().unwrap().status,
                JobStatus::Failed,
                "{code}"
            );
        }
    }

    /// The last delivery cannot claim the job (the job store down): the job is failed in the object
    /// store, its message left for the dead-letter queue; once the job store is back, the status read
    /// of the stale `queued` job finds the failure, instead of `queued` forever.
    #[tokio::test]
    async fn a_last_delivery_that_cannot_claim_fails_the_job_where_status_finds_it() {
        let app =
            app(&[("TRACE_WORKER_VISIBILITY_SECONDS", "2"), ("TRACE_WORKER_HEARTBEAT_SECONDS", "1")]).await;
        let (job, delivery) = queued(&app, 5).await;
        let down = crate::testing::jobs_down(&app);
        let queue = app.backends.light.clone();
        let (_, shutdown) = watch::channel(false);
        let early = Delivery { receive_count: 1, ..delivery.clone() };
        assert!(matches!(
            handle_delivery(&down, &queue, &early, shutdown.clone(), None).await,
            Disposition::Retry { after } if after > Duration::ZERO
        ));
        assert!(
            app.backends.store.get(&layout::outcome_key(&job)).await.is_err(),
            "not failed before the last"
        );
        let last = Delivery { receive_count: app.config.max_receive_count, ..delivery };
        let disposition = handle_delivery(&down, &queue, &last, shutdown, None).await;
        assert_eq!(disposition, Disposition::Retry { after: Duration::ZERO }, "left for the DLQ");
        // The job store, back, still says queued; a fresh status read does not look further.
        let me = Principal::local();
        assert_eq!(
            crate::status::status(&app, &me, &job.to_string()).await.unwrap().status,
            JobStatus::Queued
        );
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let info = crate::status::status(&app, &me, &job.to_string()).await.unwrap();
        assert_eq!((info.status, info.error_code.as_deref()), (JobStatus::Failed, Some("BACKEND_ERROR")));
        assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Failed);
    }

    #[test]
    fn the_clock_slack_stays_clear_of_a_live_worker_s_next_renewal() {
        let meta = |renewed_ago: i64| {
            let mut m = trace_core::job::JobMeta::new(
                JobId::new(),
                trace_core::Profile::QueryTool,
                1,
                vec![],
                QueueKind::Light,
                Utc::now(),
            );
            m.heartbeat_at = Some(Utc::now() - chrono::Duration::milliseconds(renewed_ago));
            m
        };
        let (v, h) = (Duration::from_secs(6), Duration::from_secs(5));
        // Slack = min(2 s, (6 - 5) / 2) = 0.5 s: live at 5.4 s, expired at 5.6 s.
        assert!(!lease::lease_expired(&meta(5_400), v, h));
        assert!(lease::lease_expired(&meta(5_600), v, h));
        let (v, h) = (Duration::from_secs(120), Duration::from_secs(20));
        assert!(!lease::lease_expired(&meta(117_900), v, h));
        assert!(lease::lease_expired(&meta(118_100), v, h));
    }
}
