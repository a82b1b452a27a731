//! Job status, history and cancel, each as seen by one caller: a job belongs to the principal that
//! submitted it, and another caller's job answers exactly like an unknown id (`JOB_NOT_FOUND`, never
//! a 403 that would tell the id exists). An admin sees every job.

use chrono::Utc;
use trace_core::job::{JobMeta, JobStatus};
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, JobStoreError};
use trace_core::{JobId, Principal, TraceError};

use crate::App;

/// Most jobs one history page returns.
pub const MAX_LIST: usize = 200;

/// What `GET /api/trace/job/{id}` answers (the wire type shared with clients).
pub use trace_core::api::JobInfo as StatusBody;
/// What `GET /api/trace/jobs` answers (the wire type shared with clients).
pub use trace_core::api::JobList;

/// Parses a job id from a path.
pub fn parse_job_id(id: &str) -> Result<JobId, TraceError> {
    id.parse().map_err(|e: trace_core::ids::InvalidJobId| TraceError::InvalidParameter {
        name: "job_id",
        reason: e.to_string(),
    })
}

/// A job-store failure as the caller sees it.
pub(crate) fn job_store_unavailable(e: JobStoreError) -> TraceError {
    TraceError::unavailable("the job store", e)
}

/// Reads a job `principal` may see, or `JOB_NOT_FOUND`: the same error whether the job does not exist
/// or belongs to someone else.
pub async fn load(app: &App, principal: &Principal, id: &str) -> Result<JobMeta, TraceError> {
    let job_id = parse_job_id(id)?;
    // A job the job store lost is rebuilt from the object store, the source of truth.
    crate::record::get_or_restore(app, &job_id, crate::record::Asker::Caller)
        .await
        .map_err(|e| match e {
            crate::record::RestoreError::Jobs(e) => job_store_unavailable(e),
            crate::record::RestoreError::Store(e) => TraceError::unavailable("the result store", e),
        })?
        .filter(|meta| principal.may_see(&meta.owner))
        .ok_or_else(|| TraceError::JobNotFound(job_id.to_string()))
}

/// `GET /api/trace/job/{id}`. A job left stale (see [`crate::record::reconcile_stale`]) is brought in
/// line with its outcome in the object store first.
pub async fn status(app: &App, principal: &Principal, id: &str) -> Result<StatusBody, TraceError> {
    let meta = crate::record::reconcile_stale(app, load(app, principal, id).await?).await;
    if meta.shards > 1 && !meta.status.is_terminal() {
        let shards = crate::sharding::shard_records(app, &meta).await.map_err(job_store_unavailable)?;
        let (progress, done) = crate::sharding::summed(&meta, &shards);
        let domains = meta.domains.clone();
        return Ok(StatusBody::of(meta, Utc::now()).with_shards(progress, &domains, done));
    }
    Ok(StatusBody::of(meta, Utc::now()))
}

/// `GET /api/trace/jobs?status=&limit=`: the caller's jobs (an admin's: everyone's), newest first.
pub async fn list(
    app: &App,
    principal: &Principal,
    status: Option<&str>,
    limit: Option<&str>,
) -> Result<JobList, TraceError> {
    let status = match status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| TraceError::InvalidParameter {
            name: "status",
            reason: format!("{s:?} is not one of queued, started, finished, failed, cancelled"),
        })?),
    };
    let limit = match limit.filter(|s| !s.is_empty()) {
        None => 20,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_LIST).contains(n)).ok_or_else(|| {
            TraceError::InvalidParameter {
                name: "limit",
                reason: format!("{l:?} is not a whole number from 1 to {MAX_LIST}"),
            }
        })?,
    };
    let now = Utc::now();
    let jobs: Vec<StatusBody> = app
        .backends
        .jobs
        .list_recent((!principal.is_admin()).then(|| principal.id()), status, limit)
        .await
        .map_err(job_store_unavailable)?
        .into_iter()
        .map(|m| StatusBody::of(m, now))
        .collect();
    Ok(JobList::from(jobs))
}

/// `DELETE /api/trace/job/{id}`: a queued or running job becomes cancelled (a running worker stops at
/// its next batch and writes no manifest); a finished, failed or cancelled one is answered 409.
pub async fn cancel(app: &App, principal: &Principal, id: &str) -> Result<StatusBody, TraceError> {
    let mut meta = load(app, principal, id).await?;
    // Retry on races with the worker's own transitions (started, a takeover).
    for _ in 0..10 {
        if meta.status.is_terminal() {
            return Err(TraceError::JobNotCancellable { status: meta.status });
        }
        let cancelled = meta
            .transitioned(JobStatus::Cancelled, Utc::now(), None)
            .map_err(|e| TraceError::Internal(e.to_string()))?;
        match app
            .backends
            .jobs
            .compare_and_set(meta.guard(), &cancelled)
            .await
            .map_err(job_store_unavailable)?
        {
            CasOutcome::Applied => {
                crate::record::save_outcome(app, &cancelled).await;
                tracing::info!(job_id = %cancelled.job_id, "job cancelled");
                return Ok(StatusBody::of(cancelled, Utc::now()));
            }
            CasOutcome::Conflict(current) => meta = *current,
            CasOutcome::Missing => return Err(TraceError::JobNotFound(meta.job_id.to_string())),
        }
    }
    Err(TraceError::Unavailable { message: "the job kept changing; cancel again".into(), source: None })
}

/// `POST /api/trace/job/{id}/retry`: a failed job is queued again (its owner's, or an admin's) and
/// answered as queued; any other status is answered 409 `JOB_NOT_RETRYABLE`. Its outcome record is
/// removed and a new message sent on its queue; if the message cannot be sent the job is failed
/// again (`QUEUE_SEND_FAILED`), never left queued.
pub async fn retry(app: &App, principal: &Principal, id: &str) -> Result<StatusBody, TraceError> {
    let meta = load(app, principal, id).await?;
    let queued = meta.requeued().map_err(|_| TraceError::JobNotRetryable { status: meta.status })?;
    let job = queued.job_id;
    // The failure's record goes first: left behind, it would fail the retried job again.
    app.backends
        .store
        .delete_prefix(&trace_core::layout::outcome_key(&job))
        .await
        .map_err(|e| TraceError::unavailable("the result store", e))?;
    match app.backends.jobs.compare_and_set(meta.guard(), &queued).await.map_err(job_store_unavailable)? {
        CasOutcome::Applied => {}
        CasOutcome::Conflict(now) => return Err(TraceError::JobNotRetryable { status: now.status }),
        CasOutcome::Missing => return Err(TraceError::JobNotFound(meta.job_id.to_string())),
    }
    if queued.shards > 1 {
        // Only the shards that failed (or whose record was lost) run again; finished ones stay.
        let mut messages = crate::sharding::shards_to_retry(app, &queued)
            .await
            .map_err(|e| TraceError::unavailable("the job's shards", e))?;
        if messages.is_empty() {
            // Every shard is done: one message, whose claim finds its shard finished and reduces.
            messages = ShardMessage::split(
                job,
                queued.profile,
                queued.domains.clone(),
                queued.cid_count,
                queued.shards,
            );
            messages.truncate(1);
        }
        crate::submit::send_messages_or_fail(app, &queued, &messages).await?;
        tracing::info!(job_id = %job, shards = messages.len(), "failed shards queued again");
    } else {
        crate::submit::send_or_fail(app, &queued).await?;
    }
    tracing::info!(job_id = %job, attempt = queued.attempt, "failed job queued again");
    Ok(StatusBody::of(queued, Utc::now()))
}
