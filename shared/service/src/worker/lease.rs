//! Step 1: claim the job, and hold it while the run lasts.
//!
//! The claim is a compare-and-set `queued → started` (or the takeover of a `started` job whose lease
//! expired). The [`Lease`] is this worker's view of the claimed job: its progress, and why it was
//! lost when the heartbeat finds the job cancelled or taken over.
//!
//! The lease's clock is `heartbeat_at`, written only by the heartbeat ([`keep_alive`]), at once after
//! the claim and then every `TRACE_WORKER_HEARTBEAT_SECONDS`, each time *before* it extends the
//! message's visibility. The message therefore never comes back before the lease has expired: the
//! first delivery after a worker died takes the job over (progress written between heartbeats does
//! not renew the lease, so a crash right after a progress write cannot make that delivery bounce).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use trace_core::job::{JobMeta, JobStatus, Progress};
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, Delivery, JobQueue};
use tracing::Instrument;

use super::ShardError;
use crate::record::{self, RestoreError};
use crate::App;

/// What the claim found.
pub(super) enum Claim {
    /// The job is ours: run it (its metadata as claimed).
    Run(Box<JobMeta>),
    /// Nothing to do (the job is unknown, over, or refused the transition): drop the message.
    Duplicate(&'static str),
    /// Another worker is running the job: leave the message for later.
    Busy,
}

/// Why the message of a finished job (or shard) is dropped.
pub(super) const FINISHED: &str = "job already finished";

/// `queued → started`, or a takeover of a `started` job whose worker stopped beating. A job that
/// failed on its last delivery (a backend down throughout) whose message comes again — redriven from
/// the dead-letter queue, where that delivery left it — is queued again and claimed: a redrive is a
/// retry. (The receive count cannot tell a redriven message: the queue may keep its count.)
pub(super) async fn claim(app: &App, message: &ShardMessage) -> Result<Claim, RestoreError> {
    let jobs = &app.backends.jobs;
    let mut redriven = false;
    for _ in 0..3 {
        // A job the job store lost is rebuilt from the object store (`record`), not dropped; a shard
        // of a job split into shards has a record of its own (`sharding`).
        let meta = if message.shards > 1 {
            crate::sharding::shard_record(app, message).await?
        } else {
            record::get_or_restore(app, &message.job_id, record::Asker::Message).await?
        };
        let Some(meta) = meta else {
            return Ok(Claim::Duplicate("job unknown or expired"));
        };
        let stale = |m: &JobMeta| lease_expired(m, app.config.worker_visibility, app.config.worker_heartbeat);
        match meta.status {
            JobStatus::Finished => return Ok(Claim::Duplicate(FINISHED)),
            JobStatus::Failed if !super::redrivable(&meta) => {
                return Ok(Claim::Duplicate("job already failed"))
            }
            JobStatus::Failed => {
                let Ok(queued) = meta.requeued() else { return Ok(Claim::Duplicate("transition refused")) };
                // The failure's record goes first: left behind, it would fail the job again.
                app.backends.store.delete_prefix(&trace_core::layout::outcome_key(&meta.job_id)).await?;
                if jobs.compare_and_set(meta.guard(), &queued).await? == CasOutcome::Applied {
                    tracing::warn!(error = ?meta.error, "a failed job's message came again (redriven): retrying it");
                    redriven = true;
                }
            }
            JobStatus::Cancelled => return Ok(Claim::Duplicate("job cancelled")),
            JobStatus::Started if !stale(&meta) => return Ok(Claim::Busy),
            JobStatus::Queued | JobStatus::Started => {
                let Ok(next) = meta.transitioned(JobStatus::Started, Utc::now(), None) else {
                    return Ok(Claim::Duplicate("transition refused"));
                };
                if meta.status == JobStatus::Started {
                    tracing::warn!(previous_attempt = meta.attempt, "taking over a job whose worker stopped");
                }
                if jobs.compare_and_set(meta.guard(), &next).await? == CasOutcome::Applied {
                    if let Some(job) = next.parent {
                        crate::sharding::job_running(app, &job, redriven).await;
                    }
                    return Ok(Claim::Run(Box::new(next)));
                }
            }
        }
    }
    Ok(Claim::Busy)
}

/// Slack for the clocks of two machines: a lease counts as expired this long before its renewal is a
/// whole visibility timeout old (but never closer than halfway to the next renewal of a live worker).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// Whether `meta`'s lease has expired: its last renewal (or its claim, before the first) is older than
/// the visibility timeout, less a slack for clock differences that stays clear of a live worker's
/// next renewal (`heartbeat`).
pub(super) fn lease_expired(meta: &JobMeta, visibility: Duration, heartbeat: Duration) -> bool {
    let slack = CLOCK_SLACK.min(visibility.saturating_sub(heartbeat) / 2);
    let renewed = meta.heartbeat_at.or(meta.started_at).unwrap_or(meta.created_at);
    (Utc::now() - renewed).to_std().unwrap_or_default() >= visibility.saturating_sub(slack)
}

/// Why this worker no longer holds its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// A caller cancelled the job.
    #[error("the job was cancelled")]
    Cancelled,
    /// Another worker took the job over (this one was presumed dead).
    #[error("another worker took the job over")]
    TakenOver,
}

impl LeaseLost {
    /// What a refused compare-and-set of the job found: `None` when it was applied.
    fn from_outcome(outcome: CasOutcome) -> Option<Self> {
        match outcome {
            CasOutcome::Applied => None,
            CasOutcome::Conflict(now) if now.status == JobStatus::Cancelled => Some(LeaseLost::Cancelled),
            CasOutcome::Conflict(_) | CasOutcome::Missing => Some(LeaseLost::TakenOver),
        }
    }
}

/// A worker's own view of the job it runs, shared with its heartbeat.
pub(super) struct Lease {
    /// The job as claimed.
    meta: JobMeta,
    progress: Mutex<Progress>,
    /// Set when the heartbeat finds the job cancelled or taken over.
    lost: OnceLock<LeaseLost>,
}

impl Lease {
    /// The lease of a job just claimed.
    pub(super) fn new(meta: &JobMeta) -> Arc<Self> {
        Arc::new(Lease {
            meta: meta.clone(),
            progress: Mutex::new(meta.progress.clone()),
            lost: OnceLock::new(),
        })
    }

    /// The job as claimed.
    pub(super) fn meta(&self) -> &JobMeta {
        &self.meta
    }

    /// The job as claimed, with the progress made since.
    pub(super) fn current(&self) -> JobMeta {
        JobMeta { progress: self.progress(), ..self.meta.clone() }
    }

    pub(super) fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes progress for the next heartbeat without writing it.
    pub(super) fn note(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
    }

    /// `Err` once the heartbeat has found the job cancelled or taken over.
    pub(super) fn check_held(&self) -> Result<(), LeaseLost> {
        self.lost.get().map_or(Ok(()), |why| Err(*why))
    }

    /// Stores progress (without renewing the lease); tells whether the job is still ours.
    pub(super) async fn publish(&self, app: &App, progress: Progress) -> Result<(), ShardError> {
        self.note(progress.clone());
        let outcome =
            app.backends.jobs.update_progress(&self.meta.job_id, self.meta.guard(), &progress, None).await?;
        self.held_after(app, outcome, &self.current()).await
    }

    /// Renews the lease with the progress noted so far; tells whether the job is still ours.
    async fn renew(&self, app: &App) -> Result<(), ShardError> {
        let (id, guard, progress) = (&self.meta.job_id, self.meta.guard(), self.progress());
        let now = Utc::now();
        let outcome = app.backends.jobs.update_progress(id, guard, &progress, Some(now)).await?;
        let renewed = JobMeta { heartbeat_at: Some(now), ..self.current() };
        self.held_after(app, outcome, &renewed).await
    }

    /// For a shard of a job split into shards: whether a caller cancelled the job (the cancel
    /// changes the job's record, not the shards'). False when it cannot tell.
    pub(super) async fn job_cancelled(&self, app: &App) -> bool {
        let Some(job) = self.meta.parent else { return false };
        matches!(app.backends.jobs.get(&job).await, Ok(Some(m)) if m.status == JobStatus::Cancelled)
    }

    /// Whether the job is still ours after a compare-and-set of it that wanted the job to become
    /// `wanted`. A job the job store lost while this run held it is put back as `wanted`: missing,
    /// or rebuilt meanwhile as queued from the object store (see [`record`]) with an attempt before
    /// this run's.
    pub(super) async fn held_after(
        &self,
        app: &App,
        outcome: CasOutcome,
        wanted: &JobMeta,
    ) -> Result<(), ShardError> {
        let found = match outcome {
            CasOutcome::Applied => return Ok(()),
            CasOutcome::Missing => {
                if record::put_back(app, wanted).await? {
                    return Ok(());
                }
                match app.backends.jobs.get(&self.meta.job_id).await? {
                    Some(found) => found,
                    None => return Err(LeaseLost::TakenOver.into()),
                }
            }
            CasOutcome::Conflict(found) => *found,
        };
        // Our own lease, put or taken back a moment ago by this run's other writer (the heartbeat and
        // the run both found the job lost, and the other one won the race to restore it).
        let ours = |m: &JobMeta| {
            m.status == JobStatus::Started && m.attempt == self.meta.attempt && m.owner == self.meta.owner
        };
        if ours(&found) {
            return Ok(());
        }
        if found.status == JobStatus::Queued && found.attempt < self.meta.attempt {
            return match app.backends.jobs.compare_and_set(found.guard(), wanted).await? {
                CasOutcome::Applied => {
                    tracing::warn!("the job store had lost the running job (rebuilt as queued): taken back");
                    Ok(())
                }
                CasOutcome::Conflict(now) if ours(&now) => Ok(()),
                other => Err(LeaseLost::from_outcome(other).unwrap_or(LeaseLost::TakenOver).into()),
            };
        }
        let why = LeaseLost::from_outcome(CasOutcome::Conflict(Box::new(found)));
        Err(why.unwrap_or(LeaseLost::TakenOver).into())
    }
}

/// Starts the heartbeat: at once, then every `TRACE_WORKER_HEARTBEAT_SECONDS`, it renews the lease
/// and then extends the message's visibility (in this order: see the [module](self)), and notes on
/// the lease when the job was cancelled or taken over. It runs until the returned task is aborted.
pub(super) fn keep_alive(
    app: &App,
    queue: &Arc<dyn JobQueue>,
    delivery: &Delivery,
    lease: &Arc<Lease>,
) -> JoinHandle<()> {
    let (app, queue, receipt, lease) = (app.clone(), queue.clone(), delivery.receipt.clone(), lease.clone());
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(app.config.worker_heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match lease.renew(&app).await {
                    // A running job never expires: its time to live starts again with each renewal.
                    Ok(()) if lease.job_cancelled(&app).await => {
                        let _ = lease.lost.set(LeaseLost::Cancelled);
                    }
                    Ok(()) => {
                        if let Err(e) =
                            app.backends.jobs.refresh_ttl(&lease.meta.job_id, app.config.job_ttl).await
                        {
                            tracing::warn!(error = %e, "could not refresh the job's time to live");
                        }
                    }
                    Err(ShardError::LeaseLost(why)) => {
                        let _ = lease.lost.set(why);
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat could not reach the job store"),
                }
                if let Err(e) = queue.extend_visibility(&receipt, app.config.worker_visibility).await {
                    tracing::warn!(error = %e, "could not extend the message's visibility");
                }
            }
        }
        .in_current_span(),
    )
}
