//! The worker: runs one queue message (a shard of a job) into result chunks.
//!
//! Per message: claim the job with a compare-and-set (`queued → started`; a `started` job whose
//! heartbeat is older than the visibility timeout is taken over; anything else is a duplicate), read
//! the shard's ids, run the [`engine`] into chunks of `TRACE_STREAM_BATCH_SIZE` records uploaded as
//! they fill, keep the message invisible and the job's heartbeat fresh, write the manifest last, then
//! mark the job finished. What happens to the message afterwards is one [`Disposition`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use trace_core::ids::IdList;
use trace_core::job::{Guard, JobError, JobMeta, JobStatus, Progress};
use trace_core::layout::{self, ChunkBuilder, ChunkEntry, DomainManifest, Manifest, SealedChunk};
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, Delivery, JobQueue, StoreError};
use trace_core::record::RowBatch;
use trace_core::{Domain, JobId, QueueKind};
use tracing::Instrument;

use crate::engine::{self, RecordSink, RunError};
use crate::App;

/// Chunk uploads in flight at once per worker: overlaps the object store's latency with reading.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Least time between two progress writes of a run (the first is at once; the heartbeat and the
/// finish write the rest). Each write is a job-store round trip on the path of the rows, and a
/// 114,000-id job fills about 1,500 chunks and id batches.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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

/// A worker's own view of the job it runs, shared with its heartbeat.
struct Lease {
    job_id: JobId,
    guard: Guard,
    progress: Mutex<Progress>,
    /// Set when the heartbeat finds the job cancelled or taken over.
    lost: watch::Sender<Option<JobStatus>>,
}

impl Lease {
    fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes progress for the next heartbeat without writing it.
    fn note(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
    }

    /// Stores progress; tells whether the job is still ours.
    async fn publish(&self, app: &App, progress: Progress) -> Result<(), RunError> {
        self.note(progress.clone());
        match app.backends.jobs.update_progress(&self.job_id, self.guard, &progress).await? {
            CasOutcome::Applied => Ok(()),
            CasOutcome::Conflict(now) if now.status == JobStatus::Cancelled => Err(RunError::Cancelled),
            CasOutcome::Conflict(_) | CasOutcome::Missing => Err(RunError::Superseded),
        }
    }
}

/// Time kept back from a Lambda invocation's deadline to record the outcome.
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);

/// Handles one delivery of `queue`. `shutdown` turning true makes a running job release its message
/// (back to queued, visible at once) at the next batch. `time_left` is the invocation's remaining time
/// in Lambda: the run stops (failed, `JOB_TIMEOUT`) before Lambda would kill it unrecorded.
pub async fn handle(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    shutdown: watch::Receiver<bool>,
    time_left: Option<Duration>,
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
    handle_shard(app, queue, delivery, message, shutdown, time_left).instrument(span).await
}

async fn handle_shard(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    message: ShardMessage,
    shutdown: watch::Receiver<bool>,
    time_left: Option<Duration>,
) -> Disposition {
    let retry = Disposition::Retry { after: app.config.worker_visibility };
    let meta = match claim(app, &message).await {
        Ok(Claim::Run(meta)) => meta,
        Ok(Claim::Skip(why)) => {
            tracing::info!(why, "nothing to do for this message");
            return Disposition::Delete;
        }
        Ok(Claim::Busy) => {
            tracing::info!("job is running in another worker: message left for later");
            return retry;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not claim the job; message left for a retry");
            return Disposition::Retry { after: backoff(delivery) };
        }
    };
    tracing::Span::current().record("attempt", meta.attempt);
    tracing::info!(cid_count = meta.cid_count, "job started");
    let started = Instant::now();
    let (lost_tx, lost_rx) = watch::channel(None);
    let lease = Arc::new(Lease {
        job_id: meta.job_id,
        guard: meta.guard(),
        progress: Mutex::new(meta.progress.clone()),
        lost: lost_tx,
    });
    let heartbeat =
        tokio::spawn(heartbeat(app.clone(), queue.clone(), delivery.receipt.clone(), lease.clone()));
    let limit = time_left.map(|t| t.saturating_sub(DEADLINE_MARGIN));
    let outcome = run(app, &message, &meta, &lease, lost_rx, shutdown, limit).await;
    heartbeat.abort();
    let elapsed = started.elapsed().as_secs_f64();
    settle(app, delivery, &meta, &lease, outcome, elapsed).await
}

fn backoff(delivery: &Delivery) -> Duration {
    Duration::from_secs(5 * u64::from(delivery.receive_count.clamp(1, 12)))
}

/// Decides what happens after a run, and records it on the job.
async fn settle(
    app: &App,
    delivery: &Delivery,
    meta: &JobMeta,
    lease: &Lease,
    outcome: Result<u64, RunError>,
    elapsed: f64,
) -> Disposition {
    let current = || {
        let mut m = meta.clone();
        m.progress = lease.progress();
        m
    };
    let fail = |code: &str, message: String| JobError { code: code.to_owned(), message };
    match outcome {
        Ok(records) => {
            tracing::info!(records, elapsed_s = elapsed, "job finished");
            Disposition::Delete
        }
        Err(RunError::Cancelled) => {
            tracing::info!("job cancelled: partial result removed");
            remove_result(app, &meta.job_id).await;
            Disposition::Delete
        }
        Err(RunError::Superseded) => {
            tracing::warn!("job taken over by another worker: stopping");
            Disposition::Delete
        }
        Err(RunError::Shutdown) => {
            // Back to queued and visible at once, for the next worker.
            transition(app, &current(), JobStatus::Queued, None).await;
            tracing::info!("shutting down: job released");
            Disposition::Retry { after: Duration::ZERO }
        }
        Err(RunError::Timeout(s)) => {
            remove_result(app, &meta.job_id).await;
            transition(
                app,
                &current(),
                JobStatus::Failed,
                Some(fail("JOB_TIMEOUT", format!("the job ran longer than {s} s"))),
            )
            .await;
            Disposition::Delete
        }
        Err(RunError::BadInput(reason)) => {
            transition(app, &current(), JobStatus::Failed, Some(fail("BAD_INPUT", reason))).await;
            Disposition::Delete
        }
        Err(RunError::TooLarge(_)) => {
            tracing::error!("a worker run reported an inline budget overrun");
            Disposition::Delete
        }
        Err(e @ (RunError::Source(_) | RunError::Store(_) | RunError::Jobs(_) | RunError::Queue(_))) => {
            let code = match e {
                RunError::Source(_) => "SOURCE_ERROR",
                RunError::Store(_) => "STORE_ERROR",
                _ => "BACKEND_ERROR",
            };
            if delivery.receive_count >= app.config.max_receive_count {
                tracing::error!(error = %e, receives = delivery.receive_count, "job failed on its last delivery");
                transition(app, &current(), JobStatus::Failed, Some(fail(code, e.to_string()))).await;
                // Left undeleted: the queue moves it to the dead-letter queue on its next receive.
                Disposition::Retry { after: Duration::ZERO }
            } else {
                tracing::warn!(error = %e, receives = delivery.receive_count, "job failed; released for a retry");
                transition(app, &current(), JobStatus::Queued, None).await;
                Disposition::Retry { after: backoff(delivery) }
            }
        }
    }
}

async fn transition(app: &App, meta: &JobMeta, to: JobStatus, error: Option<trace_core::job::JobError>) {
    let Ok(next) = meta.transitioned(to, Utc::now(), error) else { return };
    match app.backends.jobs.compare_and_set(meta.guard(), &next).await {
        Ok(CasOutcome::Applied) => {}
        Ok(other) => tracing::warn!(to = %to, outcome = ?other, "job changed meanwhile; status left as is"),
        Err(e) => tracing::error!(to = %to, error = %e, "could not record the job's status"),
    }
}

async fn remove_result(app: &App, job: &JobId) {
    let prefix = format!("jobs/{job}/result/");
    if let Err(e) = app.backends.store.delete_prefix(&prefix).await {
        tracing::warn!(error = %e, "could not remove a partial result");
    }
    if let Err(e) = app.backends.store.delete_prefix(&layout::manifest_key(job)).await {
        tracing::warn!(error = %e, "could not remove a manifest");
    }
}

enum Claim {
    Run(JobMeta),
    Skip(&'static str),
    Busy,
}

/// `queued → started`, or a takeover of a `started` job whose worker stopped beating.
async fn claim(app: &App, message: &ShardMessage) -> Result<Claim, RunError> {
    let jobs = &app.backends.jobs;
    for _ in 0..3 {
        let Some(meta) = jobs.get(&message.job_id).await? else {
            return Ok(Claim::Skip("job unknown or expired"));
        };
        let stale = |m: &JobMeta| {
            let beat = m.heartbeat_at.or(m.started_at).unwrap_or(m.created_at);
            (Utc::now() - beat).to_std().unwrap_or_default() > app.config.worker_visibility
        };
        match meta.status {
            JobStatus::Finished => return Ok(Claim::Skip("job already finished")),
            JobStatus::Failed => return Ok(Claim::Skip("job already failed")),
            JobStatus::Cancelled => return Ok(Claim::Skip("job cancelled")),
            JobStatus::Started if !stale(&meta) => return Ok(Claim::Busy),
            JobStatus::Queued | JobStatus::Started => {
                let Ok(next) = meta.transitioned(JobStatus::Started, Utc::now(), None) else {
                    return Ok(Claim::Skip("transition refused"));
                };
                if meta.status == JobStatus::Started {
                    tracing::warn!(previous_attempt = meta.attempt, "taking over a job whose worker stopped");
                }
                if jobs.compare_and_set(meta.guard(), &next).await? == CasOutcome::Applied {
                    return Ok(Claim::Run(next));
                }
            }
        }
    }
    Ok(Claim::Busy)
}

/// Extends the message's visibility and refreshes the job's heartbeat every
/// `TRACE_WORKER_HEARTBEAT_SECONDS`; notes when the job was cancelled or taken over.
async fn heartbeat(app: App, queue: Arc<dyn JobQueue>, receipt: String, lease: Arc<Lease>) {
    let mut tick = tokio::time::interval(app.config.worker_heartbeat);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = queue.extend_visibility(&receipt, app.config.worker_visibility).await {
            tracing::warn!(error = %e, "could not extend the message's visibility");
        }
        match lease.publish(&app, lease.progress()).await {
            Ok(()) => {}
            Err(RunError::Cancelled) => {
                let _ = lease.lost.send(Some(JobStatus::Cancelled));
            }
            Err(RunError::Superseded) => {
                let _ = lease.lost.send(Some(JobStatus::Started));
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat could not reach the job store"),
        }
    }
}

/// Runs the shard; the number of records written.
async fn run(
    app: &App,
    message: &ShardMessage,
    meta: &JobMeta,
    lease: &Lease,
    lost: watch::Receiver<Option<JobStatus>>,
    shutdown: watch::Receiver<bool>,
    limit: Option<Duration>,
) -> Result<u64, RunError> {
    // The clock runs from this attempt's start (the claim just now).
    let timeout = app.config.job_timeout;
    let mut remaining = timeout;
    if let Some(limit) = limit.filter(|l| *l < remaining) {
        tracing::info!(
            limit_s = limit.as_secs(),
            "the invocation ends before the job timeout: run bounded by it"
        );
        remaining = limit;
    }
    let stops = Stops { lost, shutdown, deadline: Instant::now() + remaining, timeout: timeout.as_secs() };
    let work = run_inner(app, message, meta, lease, stops);
    match tokio::time::timeout(remaining + Duration::from_secs(5), work).await {
        Ok(result) => result,
        Err(_) => Err(RunError::Timeout(timeout.as_secs())),
    }
}

/// What makes a run stop early: a cancel or takeover seen by the heartbeat, a shutdown, the deadline.
struct Stops {
    lost: watch::Receiver<Option<JobStatus>>,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    timeout: u64,
}

impl Stops {
    fn check(&self) -> Result<(), RunError> {
        match *self.lost.borrow() {
            Some(JobStatus::Cancelled) => return Err(RunError::Cancelled),
            Some(_) => return Err(RunError::Superseded),
            None => {}
        }
        if *self.shutdown.borrow() {
            return Err(RunError::Shutdown);
        }
        if Instant::now() >= self.deadline {
            return Err(RunError::Timeout(self.timeout));
        }
        Ok(())
    }
}

async fn run_inner(
    app: &App,
    message: &ShardMessage,
    meta: &JobMeta,
    lease: &Lease,
    stops: Stops,
) -> Result<u64, RunError> {
    let store = &app.backends.store;
    if meta.attempt > 1 {
        // A previous attempt may have left chunks: start from a clean slate.
        store.delete_prefix(&format!("jobs/{}/result/", meta.job_id)).await?;
    }
    let input = match store.get(&layout::input_key(&meta.job_id)).await {
        Ok(b) => b,
        Err(StoreError::NotFound(k)) => return Err(RunError::BadInput(format!("{k} is missing"))),
        Err(e) => return Err(e.into()),
    };
    // Only the ids, compactly (one buffer, not one allocation per id); the raw JSON is dropped at once.
    #[derive(serde::Deserialize)]
    struct InputIds {
        container_ids: IdList,
    }
    let all = serde_json::from_slice::<InputIds>(&input)
        .map_err(|e| RunError::BadInput(format!("input.json: {e}")))?
        .container_ids;
    drop(input);
    tracing::debug!("input read");
    let (from, to) = (message.ids_from as usize, message.ids_to as usize);
    if from > to || to > all.len() {
        return Err(RunError::BadInput(format!(
            "shard ids {from}..{to} outside the {} input ids",
            all.len()
        )));
    }
    let ids = if (from, to) == (0, all.len()) { all } else { all.slice(from..to) };
    let mut sink = ChunkSink {
        app,
        lease,
        builders: message
            .domains
            .iter()
            .map(|d| {
                let builder = ChunkBuilder::new(
                    meta.job_id,
                    *d,
                    message.shard,
                    app.config.stream_batch_size,
                    app.config.chunk_encoding,
                );
                (*d, builder)
            })
            .collect(),
        entries: BTreeMap::new(),
        uploads: JoinSet::new(),
        progress: lease.progress(),
        published: None,
        stops,
    };
    let aggregation = engine::run(
        app.backends.source.clone(),
        Arc::new(ids),
        message.profile,
        &message.domains,
        app.config.id_batch_size,
        &mut sink,
    )
    .await;
    let aggregation = match aggregation {
        Ok(a) => a,
        Err(e) => {
            // Let the uploads in flight land before the caller cleans up, so none lands after it.
            sink.drain().await;
            return Err(e);
        }
    };
    tracing::debug!("every row read");
    let records = sink.progress.records_written;
    let domains = match sink.finish(&message.domains).await {
        Ok(d) => d,
        Err(e) => {
            sink.drain().await;
            return Err(e);
        }
    };
    tracing::debug!("every chunk stored");
    let aggregation = aggregation.map(|a| serde_json::to_value(a).unwrap_or_default());
    let manifest = Manifest::new(meta.job_id, message.profile, domains, aggregation, Utc::now());
    let body = serde_json::to_vec(&manifest).map_err(|e| RunError::BadInput(e.to_string()))?;
    // The manifest goes last: its presence means the result is complete.
    store.put(&layout::manifest_key(&meta.job_id), Bytes::from(body)).await?;
    tracing::debug!("manifest stored");
    let mut done = meta.clone();
    done.progress = sink.progress.clone();
    let finished =
        done.transitioned(JobStatus::Finished, Utc::now(), None).map_err(|_| RunError::Superseded)?;
    match app.backends.jobs.compare_and_set(lease.guard, &finished).await? {
        CasOutcome::Applied => Ok(records),
        CasOutcome::Conflict(now) if now.status == JobStatus::Cancelled => Err(RunError::Cancelled),
        _ => Err(RunError::Superseded),
    }
}

/// Turns fetches into chunks and uploads them as they fill.
struct ChunkSink<'a> {
    app: &'a App,
    lease: &'a Lease,
    builders: BTreeMap<Domain, ChunkBuilder>,
    entries: BTreeMap<Domain, Vec<ChunkEntry>>,
    uploads: JoinSet<Result<(Domain, ChunkEntry), StoreError>>,
    progress: Progress,
    /// When progress was last written.
    published: Option<Instant>,
    stops: Stops,
}

impl ChunkSink<'_> {
    /// Records progress: written to the job store (which also tells about a cancel) at most every
    /// [`PROGRESS_EVERY`], otherwise left for the heartbeat.
    async fn report(&mut self) -> Result<(), RunError> {
        if self.published.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
            self.lease.note(self.progress.clone());
            return Ok(());
        }
        self.published = Some(Instant::now());
        self.lease.publish(self.app, self.progress.clone()).await
    }

    async fn collect_one(&mut self) -> Result<(), RunError> {
        if let Some(joined) = self.uploads.join_next().await {
            let (domain, entry) = joined.map_err(|e| RunError::BadInput(format!("upload task: {e}")))??;
            self.entries.entry(domain).or_default().push(entry);
        }
        Ok(())
    }

    async fn upload(&mut self, domain: Domain, chunk: SealedChunk) -> Result<(), RunError> {
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let store = self.app.backends.store.clone();
        self.uploads.spawn(async move {
            store.put(&chunk.entry.key, chunk.body).await?;
            Ok((domain, chunk.entry))
        });
        self.report().await
    }

    /// Waits for every upload in flight, ignoring their outcome (the run is being abandoned).
    async fn drain(&mut self) {
        while self.uploads.join_next().await.is_some() {}
    }

    /// Seals the open chunks, waits for every upload, and returns the domains in result order.
    async fn finish(&mut self, order: &[Domain]) -> Result<Vec<DomainManifest>, RunError> {
        let sealed: Vec<(Domain, SealedChunk)> =
            self.builders.iter_mut().filter_map(|(d, b)| b.finish().map(|c| (*d, c))).collect();
        for (domain, chunk) in sealed {
            self.upload(domain, chunk).await?;
        }
        while !self.uploads.is_empty() {
            self.collect_one().await?;
        }
        Ok(order
            .iter()
            .map(|d| {
                let mut chunks = self.entries.remove(d).unwrap_or_default();
                chunks.sort_by(|a, b| a.key.cmp(&b.key));
                DomainManifest { domain: *d, records: chunks.iter().map(|c| c.records).sum(), chunks }
            })
            .collect())
    }
}

#[async_trait]
impl RecordSink for ChunkSink<'_> {
    async fn rows(&mut self, batch: &RowBatch) -> Result<(), RunError> {
        self.stops.check()?;
        let domain = batch.domain();
        self.progress.domain = Some(domain);
        let mut sealed = Vec::new();
        if let Some(builder) = self.builders.get_mut(&domain) {
            for i in 0..batch.len() {
                if let Some(chunk) = builder.push_record(|out| batch.write_row_json(i, out)) {
                    sealed.push(chunk);
                }
            }
        }
        self.progress.records_written += batch.len() as u64;
        for chunk in sealed {
            self.upload(domain, chunk).await?;
        }
        Ok(())
    }

    async fn ids_done(&mut self, ids_done: u64, _next: Option<Domain>) -> Result<(), RunError> {
        self.stops.check()?;
        self.progress.set_ids_done(ids_done);
        self.report().await
    }

    async fn domain_done(&mut self, domain: Domain) -> Result<(), RunError> {
        // Its open chunk goes out now, while the next domains are read, not after the last one.
        if let Some(chunk) = self.builders.get_mut(&domain).and_then(ChunkBuilder::finish) {
            self.upload(domain, chunk).await?;
        }
        Ok(())
    }
}

/// Polls `kind`'s queue and handles messages one at a time until `shutdown` turns true; the message
/// in hand is finished or released first.
pub async fn run_loop(app: App, kind: QueueKind, mut shutdown: watch::Receiver<bool>) {
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
            let disposition = handle(&app, &queue, &delivery, shutdown.clone(), None).await;
            apply(queue.as_ref(), &delivery, disposition).await;
        }
    }
    tracing::info!(queue = kind.as_str(), "worker stopped");
}

/// Deletes the message or sets when it comes back.
pub async fn apply(queue: &dyn JobQueue, delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Delete => queue.delete(&delivery.receipt).await,
        Disposition::Retry { after } => queue.extend_visibility(&delivery.receipt, after).await,
    };
    if let Err(e) = result {
        tracing::warn!(message_id = %delivery.message_id, error = %e, ?disposition, "could not settle the message");
    }
}
