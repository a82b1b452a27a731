//! Step 1: claim the job, and hold it while the run lasts.
//!
//! The claim is a compare-and-set `queued → started` (or the takeover of a `started` job whose worker
//! stopped beating). The [`Lease`] is this worker's view of the claimed job: its progress, and why it
//! was lost when the heartbeat finds the job cancelled or taken over.

use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use tokio::task::JoinHandle;
use trace_core::job::{JobMeta, JobStatus, Progress};
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, Delivery, JobQueue, JobStoreError};
use tracing::Instrument;

use super::ShardError;
use crate::App;

/// What the claim found.
// Once per delivery and moved into the lease: boxing the metadata would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Claim {
    /// The job is ours: run it (its metadata as claimed).
    Run(JobMeta),
    /// Nothing to do (the job is unknown, over, or refused the transition): drop the message.
    Duplicate(&'static str),
    /// Another worker is running the job: leave the message for later.
    Busy,
}

/// `queued → started`, or a takeover of a `started` job whose worker stopped beating.
pub(super) async fn claim(app: &App, message: &ShardMessage) -> Result<Claim, JobStoreError> {
    let jobs = &app.backends.jobs;
    for _ in 0..3 {
        let Some(meta) = jobs.get(&message.job_id).await? else {
            return Ok(Claim::Duplicate("job unknown or expired"));
        };
        let stale = |m: &JobMeta| {
            let beat = m.heartbeat_at.or(m.started_at).unwrap_or(m.created_at);
            (Utc::now() - beat).to_std().unwrap_or_default() > app.config.worker_visibility
        };
        match meta.status {
            JobStatus::Finished => return Ok(Claim::Duplicate("job already finished")),
            JobStatus::Failed => return Ok(Claim::Duplicate("job already failed")),
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
                    return Ok(Claim::Run(next));
                }
            }
        }
    }
    Ok(Claim::Busy)
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

    /// Stores progress; tells whether the job is still ours.
    pub(super) async fn publish(&self, app: &App, progress: Progress) -> Result<(), ShardError> {
        self.note(progress.clone());
        let outcome =
            app.backends.jobs.update_progress(&self.meta.job_id, self.meta.guard(), &progress).await?;
        self.held_after(outcome)
    }

    /// Whether the job is still ours after a compare-and-set of it.
    pub(super) fn held_after(&self, outcome: CasOutcome) -> Result<(), ShardError> {
        LeaseLost::from_outcome(outcome).map_or(Ok(()), |why| Err(why.into()))
    }
}

/// Starts the heartbeat: every `TRACE_WORKER_HEARTBEAT_SECONDS` it extends the message's visibility
/// and refreshes the job's heartbeat, and notes on the lease when the job was cancelled or taken
/// over. It runs until the returned task is aborted.
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
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = queue.extend_visibility(&receipt, app.config.worker_visibility).await {
                    tracing::warn!(error = %e, "could not extend the message's visibility");
                }
                match lease.publish(&app, lease.progress()).await {
                    Ok(()) => {}
                    Err(ShardError::LeaseLost(why)) => {
                        let _ = lease.lost.set(why);
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat could not reach the job store"),
                }
            }
        }
        .in_current_span(),
    )
}
