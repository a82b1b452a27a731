//! The worker: runs one queue message (a shard of a job) into result chunks.
//!
//! A message goes through these steps, one file each, in this order:
//!
//! 1. [`lease`]: claim the job with a compare-and-set (`queued → started`; a `started` job whose
//!    heartbeat is older than the visibility timeout is taken over; anything else is a duplicate),
//!    then keep the message invisible and the job's heartbeat fresh while the run lasts;
//! 2. [`checkpoint`]: find where the shard's earlier runs got to; [`input`]: read the shard's ids
//!    from the job's input;
//! 3. [`chunks`]: run the [`engine`](crate::engine) into chunks of `TRACE_CHUNK_RECORDS` records,
//!    uploaded as they fill, from the checkpoint on, storing a new checkpoint as it goes;
//! 4. [`manifest`]: write the manifest last (its presence means the result is complete), then mark
//!    the job finished;
//! 5. [`settle`]: record the outcome on the job and decide what happens to the message: one
//!    [`Disposition`].
//!
//! Steps 2–4 run before one [`Deadline`]: the job timeout (counting every run of the job), or earlier
//! the end of the Lambda invocation less a margin, where the run checkpoints and sends a continuation
//! message that resumes it in a new invocation. Between two batches the run also stops when the lease
//! is lost (a cancel or a takeover, seen by the heartbeat) or the process is shutting down (it
//! checkpoints and releases the job).

mod checkpoint;
mod chunks;
mod count;
mod input;
mod lease;
mod manifest;
mod settle;
#[cfg(test)]
mod shard_tests;
mod shards;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use trace_core::aggregation::MsdAggregator;
use trace_core::message::ShardMessage;
use trace_core::ports::{Delivery, JobQueue, JobStoreError, SourceError, StoreError};
use trace_core::QueueKind;
use tracing::Instrument;

pub use lease::LeaseLost;
pub use settle::{redrivable, settle_message, Disposition};

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
    /// The Lambda invocation is ending before the job timeout: the run checkpointed, and continues in
    /// a new message.
    #[error("the invocation is ending: the run continues from its checkpoint")]
    Continue,
    /// The job's input is missing or unreadable (permanent).
    #[error("bad job input: {0}")]
    BadInput(String),
}

impl ShardError {
    /// A backend's failure, which a retry may not meet.
    fn is_transient(&self) -> bool {
        matches!(self, ShardError::Source(_) | ShardError::Store(_) | ShardError::Jobs(_))
    }
}

/// Time kept back from a Lambda invocation's deadline to checkpoint and record the outcome: at most
/// this, and at most a quarter of the invocation. A run checkpoints and stops at the first id batch
/// that ends past the invocation's end less this margin; a third of it is the hard limit (a stalled
/// batch).
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);

/// When a run must stop: when the job's run time (every run of it) reaches `TRACE_JOB_TIMEOUT_SECONDS`,
/// or earlier when the Lambda invocation ends sooner, so that the run can checkpoint and continue in
/// a new invocation.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    /// When the run is stopped wherever it is.
    at: Instant,
    job_timeout: Duration,
    /// When the run checkpoints at the next id batch and stops to continue in a new invocation: the
    /// invocation ends before the job timeout, and the run can continue from a checkpoint.
    continue_at: Option<Instant>,
}

impl Deadline {
    /// The deadline of a run starting now, `ran_before` into the job's time; `resumable` when the run
    /// can continue from a checkpoint (else the invocation's end fails it).
    fn new(
        job_timeout: Duration,
        ran_before: Duration,
        invocation_ends: Option<Instant>,
        resumable: bool,
    ) -> Self {
        let now = Instant::now();
        let mut deadline =
            Deadline { at: now + job_timeout.saturating_sub(ran_before), job_timeout, continue_at: None };
        let Some(end) = invocation_ends else { return deadline };
        let margin = DEADLINE_MARGIN.min(end.saturating_duration_since(now) / 4);
        let hard = end.checked_sub(margin / 3).unwrap_or(end);
        if hard < deadline.at {
            tracing::info!(
                limit_s = end.saturating_duration_since(now).as_secs(),
                resumable,
                "the invocation ends before the job timeout: the run stops then (and continues in a new one)"
            );
            deadline.at = hard;
            deadline.continue_at = resumable.then(|| end.checked_sub(margin).unwrap_or(end));
        }
        deadline
    }

    /// Why the run stopped at [`Deadline::at`]: a continuation if it could and has a checkpoint of
    /// its own (`saved`), else the job timeout.
    fn passed(&self, saved: bool) -> ShardError {
        if self.continue_at.is_some() && saved {
            ShardError::Continue
        } else {
            ShardError::Timeout(self.job_timeout.as_secs())
        }
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
    let mut delays = retry_delays(app);
    let meta = loop {
        let error = match lease::claim(app, message).await {
            Ok(Claim::Run(meta)) => break *meta,
            Ok(Claim::Duplicate(why)) => {
                tracing::info!(why, receives = delivery.receive_count, "nothing to do for this message");
                // A shard whose run stopped after its finish, before the reduce: the reduce again.
                if message.shards > 1 && why == lease::FINISHED {
                    if let Err(e) = shards::reduce(app, message).await {
                        tracing::warn!(error = %e, "could not reduce the shards: message left for a retry");
                        return Disposition::Retry { after: settle::backoff(delivery) };
                    }
                }
                return Disposition::Delete;
            }
            Ok(Claim::Busy) => return busy(app, queue, delivery, message).await,
            Err(e) => e,
        };
        // The job store is down: wait for it within the retry window, the message kept invisible.
        if let Some(delay) = delays.next().filter(|d| fits(*d, invocation_ends) && !*shutdown.borrow()) {
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "could not claim the job: retrying");
            let _ = queue.extend_visibility(&delivery.receipt, app.config.worker_visibility).await;
            tokio::time::sleep(delay).await;
            continue;
        }
        if delivery.receive_count >= app.config.max_receive_count {
            settle::fail_unclaimed(app, message, "JOB_STORE_ERROR", error.to_string()).await;
            // Left undeleted: the queue moves it to the dead-letter queue.
            return Disposition::Retry { after: Duration::ZERO };
        }
        tracing::warn!(error = %error, "could not claim the job; message left for a retry");
        return Disposition::Retry { after: settle::backoff(delivery) };
    };
    tracing::Span::current().record("attempt", meta.attempt);
    tracing::info!(cid_count = meta.cid_count, "job started");
    let started = Instant::now();
    let lease = Lease::new(&meta);
    let heartbeat = lease::keep_alive(app, queue, delivery, &lease);
    let mut delays = retry_delays(app);
    let mut records;
    let (mut stored, mut again) = (Stored::default(), false);
    let outcome = loop {
        let run = write_result(app, message, &lease, shutdown.clone(), invocation_ends, again).await;
        records = run.records;
        stored = stored + run.stored;
        let error = match run.outcome {
            Err(e) if e.is_transient() => e,
            other => break other,
        };
        if run.saved {
            // Progress since the last failure: the window starts again.
            delays = retry_delays(app);
        }
        // Retried within the window, from the last checkpoint, unless the invocation or the process
        // ends first (then the message comes back, or the job continues elsewhere).
        let Some(delay) = delays.next().filter(|d| fits(*d, invocation_ends) && !*shutdown.borrow()) else {
            break Err(error);
        };
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "a backend failed: retrying from the last checkpoint");
        tokio::time::sleep(delay).await;
        if let Err(lost) = lease.check_held() {
            break Err(lost.into());
        }
        again = true;
    };
    heartbeat.abort();
    let run = started.elapsed();
    let settled = settle::record_outcome(app, queue, delivery, message, &lease, outcome, run).await;
    if crate::metrics::enabled(app.config.metrics) {
        let meta = lease.meta();
        let claimed = meta.started_at.unwrap_or(meta.created_at);
        JobEnd {
            job_id: meta.result_id().to_string(),
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

/// A live lease holds the job (this message is a duplicate of the one its run holds): the message
/// comes back after a visibility timeout. Each return counts as a receive, so a message one return
/// short of its queue's dead-letter limit is replaced by a fresh copy (receive count 0) instead: a job
/// that runs long never sends a duplicate of its message to the dead-letter queue, and never spends
/// the job's attempts (only a claim that takes a job over counts one).
async fn busy(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    message: &ShardMessage,
) -> Disposition {
    let later = Disposition::Retry { after: app.config.worker_visibility };
    if delivery.receive_count.saturating_add(1) < app.config.max_receive_count {
        tracing::info!(
            receives = delivery.receive_count,
            "job is running in another worker: message left for later"
        );
        return later;
    }
    let (job, shard) = (message.job_id.to_string(), message.shard.to_string());
    match queue.send(&delivery.body, &[("job_id", &job), ("shard", &shard)]).await {
        Ok(_) => {
            tracing::info!(
                receives = delivery.receive_count,
                "job is running in another worker: message replaced by a fresh copy"
            );
            Disposition::Delete
        }
        Err(e) => {
            tracing::warn!(error = %e, "job is running in another worker; could not renew its message");
            later
        }
    }
}

/// Steps 2–4 before the run's [`Deadline`]: finds the checkpoint, reads the shard's ids, writes their
/// chunks, the manifest last, and marks the job finished; the number of records written. Whatever
/// stops the run, the uploads in flight land before this returns, so none lands after the caller's
/// clean-up, and a run that may be resumed stores its checkpoint. Also, however it ended, the records
/// written and the objects stored (for the job-end metrics).
async fn write_result(
    app: &App,
    message: &ShardMessage,
    lease: &Lease,
    shutdown: watch::Receiver<bool>,
    invocation_ends: Option<Instant>,
    again: bool,
) -> Run {
    let resumable = !message.profile.is_msd();
    let first = Deadline::new(app.config.job_timeout, Duration::ZERO, invocation_ends, resumable);
    let found = tokio::time::timeout_at(first.at, checkpoint::load(app, lease.meta(), message, again)).await;
    let found = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Run::failed(e),
        Err(_) => return Run::failed(first.passed(false)),
    };
    let ran_before = checkpoint::Found::ran_for(found.as_ref());
    let deadline = Deadline::new(app.config.job_timeout, ran_before, invocation_ends, resumable);
    let mut chunks = ChunkWriter::new(app, lease, message, found, shutdown, deadline.continue_at);
    let mut manifest_size = None;
    let steps = async {
        let counting = count::wanted(app, lease.meta(), message).await.then_some(count::SPAN);
        let (ids, spans) = input::read_shard_ids(app, lease.meta(), message, counting).await?;
        let count = async {
            if let Some(spans) = spans {
                count::first_domain(app, lease.meta(), message, spans).await;
            }
        };
        let aggregation = count::beside(count, chunks.write(Arc::new(ids))).await?;
        tracing::debug!("every row read");
        let domains = chunks.finish(&message.domains).await?;
        tracing::debug!("every chunk stored");
        if message.shards > 1 {
            let partial = aggregation.map(|a| a.partial());
            let progress = chunks.progress().clone();
            manifest_size = Some(shards::finish(app, lease, message, domains, partial, &progress).await?);
            return Ok(progress.records_written);
        }
        let resumed = again || chunks.resumed() || lease.meta().attempt > 1 || message.continuation > 0;
        let aggregation = aggregation.map(MsdAggregator::finish);
        manifest_size =
            Some(manifest::write(app, lease, message.profile, domains, aggregation, resumed).await?);
        manifest::mark_finished(app, lease, chunks.progress()).await?;
        Ok(chunks.progress().records_written)
    };
    let outcome = match tokio::time::timeout_at(deadline.at, steps).await {
        Ok(outcome) => outcome,
        Err(_) => Err(deadline.passed(chunks.saved())),
    };
    if outcome.is_err() {
        chunks.drain().await;
    }
    let mut stored = chunks.stored();
    if let Some(size) = manifest_size {
        stored.objects += 1;
        stored.bytes += size;
    }
    Run { outcome, records: chunks.progress().records_written, stored, saved: chunks.saved() }
}

/// How one [`write_result`] went.
struct Run {
    outcome: Result<u64, ShardError>,
    /// Records written, stored chunks included.
    records: u64,
    /// Objects this run stored.
    stored: Stored,
    /// Whether it stored a checkpoint.
    saved: bool,
}

impl Run {
    fn failed(error: ShardError) -> Self {
        Run { outcome: Err(error), records: 0, stored: Stored::default(), saved: false }
    }
}

/// The waits between retries of a failing backend within one delivery: exponential from 1 s to 15 s,
/// with jitter, for at most `TRACE_RETRY_WINDOW_SECONDS` in all.
pub(super) fn retry_delays(app: &App) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(15))
        .without_max_times()
        .with_total_delay(Some(app.config.retry_window))
        .build()
}

/// Whether waiting `delay` and running again still leaves the invocation (if any) its margin.
fn fits(delay: Duration, invocation_ends: Option<Instant>) -> bool {
    invocation_ends.is_none_or(|end| Instant::now() + delay + DEADLINE_MARGIN < end)
}

/// Claims `message`'s job or shard as a worker starting it would (for tests elsewhere in the crate):
/// whether it was claimed to run.
#[cfg(test)]
pub(crate) async fn claimed_for_test(app: &App, message: &ShardMessage) -> bool {
    matches!(lease::claim(app, message).await, Ok(lease::Claim::Run(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::app;
    use chrono::Utc;
    use trace_core::job::JobStatus;
    use trace_core::{layout, Domain, JobId, Principal, TraceRequest};

    /// A queued job of `ids` containers (history) and its first delivery.
    async fn queued(app: &App, ids: u64) -> (JobId, Delivery) {
        queued_with(app, ids, &["history"]).await
    }

    /// A queued job of `ids` containers and `domains`, and its first delivery.
    async fn queued_with(app: &App, ids: u64, domains: &[&str]) -> (JobId, Delivery) {
        let ids: Vec<String> = (1..=ids).map(trace_dataset::container_id).collect();
        let body = serde_json::json!({ "container_ids": ids, "domains": domains });
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

    /// A job whose first worker (returned as its lease: the zombie) claimed it and stopped renewing
    /// it; the next delivery took it over and finished it (attempt 2). The job, the delivery, its
    /// message and the zombie's lease.
    async fn taken_over(app: &App) -> (JobId, Delivery, ShardMessage, Arc<Lease>) {
        let (job, delivery) = queued(app, 30).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(claimed)) = lease::claim(app, &message).await else { panic!("claimed") };
        let zombie = Lease::new(&claimed);
        age_lease(app, &job, chrono::Duration::hours(1)).await;
        let (_, shutdown) = watch::channel(false);
        let disposition = handle_delivery(app, &app.backends.light, &delivery, shutdown, None).await;
        assert_eq!(disposition, Disposition::Delete);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 2));
        (job, delivery, message, zombie)
    }

    /// A worker paused past its lease wakes up at its deadline after another took the job over and
    /// finished it: its clean-up must leave the finished result alone (it used to delete it first
    /// and then find the job no longer its own: `finished` with no result).
    #[tokio::test]
    async fn a_zombie_s_timeout_leaves_the_new_owner_s_finished_result_alone() {
        let app = app(&[]).await;
        // It stops renewing; the lease expires; the next delivery takes over and finishes.
        let (job, delivery, message, zombie) = taken_over(&app).await;
        let queue = app.backends.light.clone();
        let manifest = app.backends.store.get(&layout::manifest_key(&job)).await.unwrap();
        // The zombie wakes up at its deadline.
        let settled = settle::record_outcome(
            &app,
            &queue,
            &delivery,
            &message,
            &zombie,
            Err(ShardError::Timeout(1)),
            Duration::ZERO,
        )
        .await;
        assert_eq!(settled.outcome, crate::metrics::Outcome::TakenOver);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!(meta.status, JobStatus::Finished);
        assert_eq!(app.backends.store.get(&layout::manifest_key(&job)).await.unwrap(), manifest);
        assert!(!app.backends.store.list(&layout::result_prefix(&job)).await.unwrap().is_empty());
    }

    /// A worker paused past its lease (a zombie) that wakes after another run finished the job and
    /// stores a chunk (with other bytes: the database changed meanwhile) cannot touch the result: its
    /// chunk's key names its own attempt, which the manifest does not list, and when it learns it lost
    /// the job it removes that stray. The stored objects are again exactly the manifest's.
    #[tokio::test]
    async fn a_zombie_s_late_chunk_never_changes_the_result_and_is_swept() {
        let app = app(&[]).await;
        let (job, delivery, message, zombie) = taken_over(&app).await;
        let queue = app.backends.light.clone();
        let store = &app.backends.store;
        let manifest = store.get(&layout::manifest_key(&job)).await.unwrap();
        let (_, keys) = crate::testing::listed_and_stored(&app, &job).await;
        assert!(keys.iter().all(|k| layout::chunk_slot(k).is_some_and(|s| s.attempt == 2)), "{keys:?}");
        let served = store.get(&keys[0]).await.unwrap();

        // The zombie wakes and stores its version of the first chunk of the first domain.
        let domain = message.domains[0];
        let mut builder = layout::ChunkBuilder::new(job, domain, 0, 1, app.config.chunk_encoding)
            .by_attempt(zombie.meta().attempt);
        let late = builder.push_record(|o| o.extend_from_slice(b"{\"changed\":true}")).unwrap();
        assert_ne!(late.entry.key, keys[0]);
        store.put(&late.entry.key, late.body).await.unwrap();
        // Its next write learns the job is not its own; it stops and settles.
        let lost = zombie.publish(&app, zombie.progress()).await;
        assert!(matches!(lost, Err(ShardError::LeaseLost(LeaseLost::TakenOver))));
        let settled = settle::record_outcome(
            &app,
            &queue,
            &delivery,
            &message,
            &zombie,
            lost.map(|_| 0),
            Duration::ZERO,
        )
        .await;
        assert_eq!(settled.outcome, crate::metrics::Outcome::TakenOver);

        assert_eq!(store.get(&layout::manifest_key(&job)).await.unwrap(), manifest);
        assert_eq!(store.get(&keys[0]).await.unwrap(), served);
        assert_eq!(crate::testing::listed_and_stored(&app, &job).await.1, keys);
    }

    /// The finish's reply is lost after the job store applied it (a stall past the client's timeout):
    /// the run retries only the finish, finds the job finished by its own attempt, and reports it
    /// finished — it neither runs the job again nor takes the finish for another worker's.
    #[tokio::test]
    async fn a_finish_whose_reply_was_lost_is_not_run_again() {
        let base = app(&[("TRACE_RETRY_WINDOW_SECONDS", "5")]).await;
        let (app, rows) =
            crate::testing::slow_source(&crate::testing::finish_reply_lost(&base), Duration::ZERO);
        let (job, delivery) = queued(&app, 30).await;
        let queue = app.backends.light.clone();
        let (_, shutdown) = watch::channel(false);
        assert_eq!(handle_delivery(&app, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 1));

        let (plain, plain_rows) = crate::testing::slow_source(&base, Duration::ZERO);
        let (_, delivery) = queued(&plain, 30).await;
        let (_, shutdown) = watch::channel(false);
        let queue = plain.backends.light.clone();
        assert_eq!(handle_delivery(&plain, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let (read, once) = (
            rows.load(std::sync::atomic::Ordering::Relaxed),
            plain_rows.load(std::sync::atomic::Ordering::Relaxed),
        );
        assert_eq!(read, once, "the job was read again");
    }

    /// A duplicate of a running job's message comes back after a visibility timeout; one return short
    /// of the dead-letter limit it is replaced by a fresh copy instead, so a long run never sends it to
    /// the dead-letter queue.
    #[tokio::test]
    async fn a_busy_job_s_duplicate_message_never_reaches_the_dead_letter_queue() {
        let app = app(&[("TRACE_MAX_RECEIVE_COUNT", "5")]).await;
        let (_, delivery) = queued(&app, 30).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(_)) = lease::claim(&app, &message).await else { panic!("claimed") };
        let queue = app.backends.light.clone();
        let dup = |receive_count| Delivery { receive_count, ..delivery.clone() };
        for receives in 1..=3 {
            let (_, shutdown) = watch::channel(false);
            let disposition = handle_delivery(&app, &queue, &dup(receives), shutdown, None).await;
            assert_eq!(disposition, Disposition::Retry { after: app.config.worker_visibility });
        }
        let (_, shutdown) = watch::channel(false);
        assert_eq!(handle_delivery(&app, &queue, &dup(4), shutdown, None).await, Disposition::Delete);
        let copy = queue.receive(1, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        assert_eq!(copy.len(), 1, "a fresh copy");
        assert_eq!((copy[0].body.as_str(), copy[0].receive_count), (delivery.body.as_str(), 1));
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
        let app = app(&[
            ("TRACE_WORKER_VISIBILITY_SECONDS", "2"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "1"),
            ("TRACE_RETRY_WINDOW_SECONDS", "1"),
        ])
        .await;
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
        assert_eq!((info.status, info.error_code.as_deref()), (JobStatus::Failed, Some("JOB_STORE_ERROR")));
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

    /// The result's chunks as stored, without the job id: (domain, file name, records, bytes, CRC-32).
    /// The manifest's chunks: (domain, (shard, chunk), records, bytes, CRC-32) — their places in the
    /// result, not the attempts that wrote them.
    async fn chunk_list(app: &App, job: &JobId) -> Vec<(Domain, (u32, u32), u64, u64, u32)> {
        let (manifest, _) = crate::testing::listed_and_stored(app, job).await;
        manifest
            .domains
            .iter()
            .flat_map(|d| {
                d.chunks.iter().map(|c| {
                    let slot = layout::chunk_slot(&c.key).expect("a chunk key");
                    (d.domain, (slot.shard, slot.chunk), c.records, c.bytes, c.crc32)
                })
            })
            .collect()
    }

    const SMALL_CHUNKS: [(&str, &str); 2] =
        [("TRACE_CHUNK_RECORDS", "700"), ("TRACE_DB_ID_BATCH_SIZE", "20")];
    const DOMAINS: [&str; 3] = ["history", "materials", "holds"];

    /// A run that reaches the end of its Lambda invocation stores its checkpoint and sends a
    /// continuation message; each continuation resumes from the checkpoint, and the job finishes with
    /// the very chunks of an uninterrupted run (names, records, sizes, checksums), reading far fewer
    /// rows than starting again each time would.
    #[tokio::test]
    async fn a_run_past_its_invocation_continues_from_its_checkpoint_with_the_same_result() {
        let plain = app(&SMALL_CHUNKS).await;
        let (plain, plain_rows) = crate::testing::slow_source(&plain, Duration::ZERO);
        let (reference, delivery) = queued_with(&plain, 400, &DOMAINS).await;
        let (_, shutdown) = watch::channel(false);
        let queue = plain.backends.light.clone();
        assert_eq!(handle_delivery(&plain, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let one_run = plain_rows.load(std::sync::atomic::Ordering::Relaxed);

        let base = app(&SMALL_CHUNKS).await;
        let (app, rows) = crate::testing::slow_source(&base, Duration::from_millis(15));
        let (job, mut delivery) = queued_with(&app, 400, &DOMAINS).await;
        let queue = app.backends.light.clone();
        let mut invocations = 0;
        loop {
            invocations += 1;
            assert!(invocations < 100, "no end after {invocations} invocations");
            // 20 id batches of 3 domains at 15 ms a query take ~0.9 s: an invocation of 0.4 s
            // (0.3 s of run after the margin) ends each run early.
            let ends = Instant::now() + Duration::from_millis(400);
            let (_, shutdown) = watch::channel(false);
            let disposition = handle_delivery(&app, &queue, &delivery, shutdown, Some(ends)).await;
            assert_eq!(disposition, Disposition::Delete, "a continuation, or the end");
            settle_message(queue.as_ref(), &delivery, disposition).await;
            let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
            if meta.status == JobStatus::Finished {
                break;
            }
            assert_eq!(meta.status, JobStatus::Queued, "{:?}", meta.error);
            let mut next = queue.receive(1, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
            assert_eq!(next.len(), 1, "one continuation message");
            delivery = next.remove(0);
            let message = ShardMessage::parse(&delivery.body).unwrap();
            assert_eq!(message.continuation, invocations);
        }
        assert!(invocations >= 3, "the job took {invocations} invocations");
        assert_eq!(chunk_list(&app, &job).await, chunk_list(&plain, &reference).await);
        assert!(app.backends.store.list(&layout::checkpoint_prefix(&job)).await.unwrap().is_empty());
        let read = rows.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            read * 2 <= one_run * 3,
            "{invocations} runs read {read} rows, one uninterrupted run {one_run}: more than 1.5x"
        );
    }

    /// A run stopped by a shutdown stores its checkpoint at the end of an id batch and releases the
    /// job; the next run resumes from it, reading only the rest, and ends with an uninterrupted run's
    /// chunks and record count.
    #[tokio::test]
    async fn a_released_run_resumes_from_its_checkpoint_with_the_same_result() {
        let plain = app(&SMALL_CHUNKS).await;
        let (reference, delivery) = queued_with(&plain, 300, &DOMAINS).await;
        let (_, shutdown) = watch::channel(false);
        let queue = plain.backends.light.clone();
        assert_eq!(handle_delivery(&plain, &queue, &delivery, shutdown, None).await, Disposition::Delete);

        let app = app(&SMALL_CHUNKS).await;
        let (job, delivery) = queued_with(&app, 300, &DOMAINS).await;
        let queue = app.backends.light.clone();
        // The process shuts down mid-run (as a source failure would stop it: both keep the checkpoint).
        let (stop, shutdown) = watch::channel(false);
        let (slow, _) = crate::testing::slow_source(&app, Duration::from_millis(10));
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let _ = stop.send(true);
        });
        let disposition = handle_delivery(&slow, &queue, &delivery, shutdown, None).await;
        stopper.await.unwrap();
        assert_eq!(disposition, Disposition::Retry { after: Duration::ZERO });
        let (saved, _) = trace_core::checkpoint::Checkpoint::decode(
            &app.backends.store.get(&layout::checkpoint_key(&job, 0)).await.unwrap(),
        )
        .unwrap();
        assert!(saved.records() > 0, "the stopped run stored its checkpoint");
        assert!(
            saved.ids_done > 0 && saved.ids_done < 300,
            "it stopped between two id batches: {}",
            saved.ids_done
        );
        assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Queued, "released");
        let (_, shutdown) = watch::channel(false);
        let (counted, rows) = crate::testing::slow_source(&app, Duration::ZERO);
        assert_eq!(handle_delivery(&counted, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        assert_eq!(chunk_list(&app, &job).await, chunk_list(&plain, &reference).await);
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 2));
        let records = app.backends.jobs.get(&job).await.unwrap().unwrap().progress.records_written;
        assert_eq!(
            records,
            plain.backends.jobs.get(&reference).await.unwrap().unwrap().progress.records_written
        );
        let resumed_rows = rows.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            resumed_rows > 0 && resumed_rows < records,
            "the retry read {resumed_rows} of {records} rows"
        );
    }

    /// A database that fails a few queries (an outage of a few seconds) inside the retry window: the
    /// run waits and resumes within the same delivery, and the job finishes on its first attempt.
    /// Past the window the message is given back for a later delivery, the job queued again.
    #[tokio::test]
    async fn a_backend_outage_within_the_retry_window_never_fails_the_job() {
        let base = app(&[("TRACE_RETRY_WINDOW_SECONDS", "30"), ("TRACE_DB_ID_BATCH_SIZE", "10")]).await;
        let flaky = crate::testing::flaky_source(&base, 3);
        let (job, delivery) = queued(&flaky, 50).await;
        let (_, shutdown) = watch::channel(false);
        let queue = flaky.backends.light.clone();
        assert_eq!(handle_delivery(&flaky, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        let meta = flaky.backends.jobs.get(&job).await.unwrap().unwrap();
        assert_eq!((meta.status, meta.attempt), (JobStatus::Finished, 1));

        let base = app(&[("TRACE_RETRY_WINDOW_SECONDS", "1")]).await;
        let down = crate::testing::flaky_source(&base, 1_000);
        let (job, delivery) = queued(&down, 5).await;
        let (_, shutdown) = watch::channel(false);
        let queue = down.backends.light.clone();
        let disposition = handle_delivery(&down, &queue, &delivery, shutdown, None).await;
        assert!(matches!(disposition, Disposition::Retry { .. }), "{disposition:?}");
        assert_eq!(down.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Queued);
    }

    /// The manifest is written create-only: a run that finds a different complete result of its job
    /// (another run's) leaves it as it is and does not finish the job with its own.
    #[tokio::test]
    async fn a_complete_result_is_never_replaced_by_another_run_s() {
        let app = app(&[]).await;
        let (job, delivery) = queued(&app, 20).await;
        let other = layout::Manifest::new(job, trace_core::Profile::QueryTool, vec![], None, Utc::now());
        let body = bytes::Bytes::from(serde_json::to_vec(&other).unwrap());
        assert!(app.backends.store.put_new(&layout::manifest_key(&job), body.clone()).await.unwrap());
        let (_, shutdown) = watch::channel(false);
        let queue = app.backends.light.clone();
        assert_eq!(handle_delivery(&app, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        assert_eq!(
            app.backends.store.get(&layout::manifest_key(&job)).await.unwrap(),
            body,
            "left as it was"
        );
        assert_ne!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Finished);
    }

    /// A worker that died on its message's last delivery leaves the job `started` with nothing to end
    /// it (the message goes to the dead-letter queue): the reaper fails it with `JOB_ORPHANED` once its
    /// lease has been expired for a few visibility timeouts, never a live one; the message coming back
    /// after all (a redrive) queues the job again and it finishes.
    #[tokio::test]
    async fn the_reaper_fails_an_orphaned_job_and_a_redrive_still_runs_it() {
        let app =
            app(&[("TRACE_WORKER_VISIBILITY_SECONDS", "10"), ("TRACE_WORKER_HEARTBEAT_SECONDS", "2")]).await;
        let (orphan, delivery) = queued(&app, 20).await;
        let message = ShardMessage::parse(&delivery.body).unwrap();
        let Ok(Claim::Run(_)) = lease::claim(&app, &message).await else { panic!("claimed") };
        let (live, live_delivery) = queued(&app, 3).await;
        let live_message = ShardMessage::parse(&live_delivery.body).unwrap();
        let Ok(Claim::Run(_)) = lease::claim(&app, &live_message).await else { panic!("claimed") };
        // The first worker died: no renewal for 39 s (less than four visibility timeouts): not yet.
        age_lease(&app, &orphan, chrono::Duration::seconds(39)).await;
        let reaped = crate::reaper::sweep(&app).await.unwrap();
        assert_eq!((reaped.looked_at, reaped.orphaned), (2, 0));
        age_lease(&app, &orphan, chrono::Duration::seconds(41)).await;
        let reaped = crate::reaper::sweep(&app).await.unwrap();
        assert_eq!(reaped.orphaned, 1);
        let meta = app.backends.jobs.get(&orphan).await.unwrap().unwrap();
        assert_eq!(
            (meta.status, meta.error.map(|e| e.code)),
            (JobStatus::Failed, Some("JOB_ORPHANED".into()))
        );
        assert_eq!(app.backends.jobs.get(&live).await.unwrap().unwrap().status, JobStatus::Started);
        // The message comes back after all: the job runs again and finishes.
        let (_, shutdown) = watch::channel(false);
        let queue = app.backends.light.clone();
        assert_eq!(handle_delivery(&app, &queue, &delivery, shutdown, None).await, Disposition::Delete);
        assert_eq!(app.backends.jobs.get(&orphan).await.unwrap().unwrap().status, JobStatus::Finished);
    }
}
