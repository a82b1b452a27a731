//! `POST /api/trace/events`: validate, admit, then answer inline or enqueue a job.
//!
//! The rule: a non-MSD request above `TRACE_EVENTS_CID_LIMIT` ids is refused (413); at or below
//! `TRACE_ASYNC_CID_THRESHOLD` ids it runs inline (200) unless its answer would pass
//! `TRACE_INLINE_MAX_BYTES`, in which case it becomes a job after all (202); above the threshold it
//! is a job (202) on the heavy queue (MSD, or more than `TRACE_HEAVY_CID_THRESHOLD` ids) or the light one.

use bytes::Bytes;
use chrono::Utc;
use trace_core::admission::{self, Admission};
use trace_core::job::{JobError, JobMeta, JobStatus};
use trace_core::layout::{self, JobInput};
use trace_core::message::ShardMessage;
use trace_core::{JobId, Principal, QueueKind, TraceError, TraceRequest};

use crate::inline::{self, InlineError};
use crate::App;

/// What submit answers.
#[derive(Debug)]
pub enum Answer {
    /// 200: the whole result.
    Inline(Vec<u8>),
    /// 202: a job was created.
    Accepted(Accepted),
}

/// The 202 body (the wire type shared with clients).
pub use trace_core::api::Accepted;

/// Handles one submit body of `principal` (a job it creates is its own).
pub async fn submit(app: &App, principal: &Principal, body: &[u8]) -> Result<Answer, TraceError> {
    let request = TraceRequest::parse(body, app.config.limits.max_body_bytes)?;
    match admission::admit(&request, &app.config.limits)? {
        Admission::Inline => match inline::run(app, &request).await {
            Ok(json) => Ok(Answer::Inline(json)),
            Err(InlineError::TooLarge(budget)) => {
                tracing::info!(
                    cid_count = request.cid_count(),
                    budget,
                    "inline answer over budget: running as a job"
                );
                let queue = admission::route(&request, &app.config.limits);
                enqueue(app, principal, &request, queue).await.map(Answer::Accepted)
            }
            Err(InlineError::Source(e)) => Err(TraceError::unavailable("the database", e)),
            Err(e @ InlineError::Render(_)) => {
                tracing::error!(error = %e, "inline answer");
                Err(TraceError::Internal("the answer could not be written".to_owned()))
            }
        },
        Admission::Async(queue) => enqueue(app, principal, &request, queue).await.map(Answer::Accepted),
    }
}

/// Creates a job owned by `owner`: input ids to the object store, metadata (queued, with TTL), one
/// shard message. If the message cannot be sent the job is marked failed (`QUEUE_SEND_FAILED`), never
/// left queued.
pub async fn enqueue(
    app: &App,
    owner: &Principal,
    request: &TraceRequest,
    queue: QueueKind,
) -> Result<Accepted, TraceError> {
    let backends = &app.backends;
    let job_id = JobId::new();
    let cid_count = request.cid_count() as u64;
    let shards = admission::shards(request.cid_count(), queue, &app.config.limits);
    let meta = JobMeta::new(job_id, request.profile, cid_count, request.domains.clone(), queue, Utc::now())
        .owned_by(owner)
        .split_into(shards);
    // The input carries the job's metadata too: the job store's copy can be rebuilt from it.
    let input = JobInput {
        job_id,
        profile: request.profile,
        domains: request.domains.clone(),
        params: request.params.clone(),
        container_ids: request.ids.clone(),
        job: Some(meta.clone()),
    };
    let input = serde_json::to_vec(&input).map_err(|e| TraceError::Internal(e.to_string()))?;
    backends
        .store
        .put(&layout::input_key(&job_id), Bytes::from(input))
        .await
        .map_err(|e| TraceError::unavailable("the result store", e))?;
    if let Err(e) = backends.jobs.create(&meta, app.config.job_ttl).await {
        // A stalled job store may still apply the create after the caller was told it failed: the
        // job is recorded failed (beside its input, then in the job store: the same connection
        // applies it after the create) so that it can never stay queued without a message.
        fail_unqueued(app, &meta, "JOB_STORE_ERROR", e.to_string()).await;
        return Err(TraceError::unavailable("the job store", e));
    }
    send_or_fail(app, &meta).await?;
    tracing::info!(job_id = %job_id, cid_count, shards, queue = queue.as_str(), profile = %request.profile, owner = %owner.hash(), "job queued");
    Ok(Accepted::queued(job_id, queue).with_stream_base(app.config.stream_base_url.as_deref()))
}

/// Sends the shard messages of the queued job `meta` on its queue (one per shard). If one cannot be
/// sent, the job is marked failed (`QUEUE_SEND_FAILED`, also recorded beside its input), never left
/// queued (a shard already sent finds the job failed and drops its message).
pub(crate) async fn send_or_fail(app: &App, meta: &JobMeta) -> Result<(), TraceError> {
    let messages =
        ShardMessage::split(meta.job_id, meta.profile, meta.domains.clone(), meta.cid_count, meta.shards);
    send_messages_or_fail(app, meta, &messages).await
}

/// Sends `messages` of the queued job `meta`; as [`send_or_fail`].
pub(crate) async fn send_messages_or_fail(
    app: &App,
    meta: &JobMeta,
    messages: &[ShardMessage],
) -> Result<(), TraceError> {
    let id = meta.job_id.to_string();
    for message in messages {
        let shard = message.shard.to_string();
        let sent = app
            .backends
            .queue(meta.queue)
            .send(&message.to_body(), &[("job_id", &id), ("shard", &shard)])
            .await;
        if let Err(e) = sent {
            fail_unqueued(app, meta, "QUEUE_SEND_FAILED", e.to_string()).await;
            return Err(TraceError::unavailable("the job queue", e));
        }
    }
    Ok(())
}

/// Marks the job `meta`, which could not be queued, failed with `code`: in the object store (where a
/// status read or the reaper finds it) and in the job store if it answers.
async fn fail_unqueued(app: &App, meta: &JobMeta, code: &str, cause: String) {
    let error = JobError { code: code.into(), message: cause };
    if let Ok(failed) = meta.transitioned(JobStatus::Failed, Utc::now(), Some(error)) {
        crate::record::save_outcome(app, &failed).await;
        if let Err(e) = app.backends.jobs.compare_and_set(meta.guard(), &failed).await {
            tracing::error!(job_id = %meta.job_id, code, error = %e, "could not mark the unqueued job failed");
        }
    }
    tracing::warn!(job_id = %meta.job_id, code, "the job could not be queued: it is marked failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace_adapters::runtime::{Backends, BackendsFromConfig};
    use trace_core::Config;

    /// A job's answer on the local stand-ins, with `vars` set.
    async fn accepted(vars: &[(&str, &str)]) -> Accepted {
        let dir = std::env::temp_dir().join("trace-submit-test").display().to_string();
        let config = Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(v.to_string()),
            None => match name {
                "TRACE_LOCAL_DIR" => Some(dir.clone()),
                "TRACE_ASYNC_CID_THRESHOLD" => Some("1".to_owned()),
                _ => None,
            },
        })
        .unwrap();
        let app = App::new(config.clone(), Backends::from_config(&config).await.unwrap());
        match submit(
            &app,
            &trace_core::Principal::local(),
            br#"{"container_ids":["CID-0000001","CID-0000002"]}"#,
        )
        .await
        .unwrap()
        {
            Answer::Accepted(accepted) => accepted,
            Answer::Inline(_) => panic!("two ids above a threshold of one must become a job"),
        }
    }

    #[tokio::test]
    async fn the_stream_url_is_absolute_only_when_the_stream_has_its_own_host() {
        let local = accepted(&[]).await;
        assert_eq!(local.stream_url, format!("/api/trace/job/{}/stream", local.job_id));
        let base = "https://abc.lambda-url.eu-west-1.on.aws";
        let remote = accepted(&[("TRACE_STREAM_BASE_URL", base)]).await;
        assert_eq!(remote.stream_url, format!("{base}/api/trace/job/{}/stream", remote.job_id));
        assert_eq!(remote.status_url, format!("/api/trace/job/{}", remote.job_id));
    }

    /// A submit whose job store is down answers 503 and leaves its job failed (`JOB_STORE_ERROR`)
    /// beside its input, where status and the reaper find it: a create the stalled store applies
    /// later can never leave the job queued without a message.
    #[tokio::test]
    async fn a_job_the_job_store_could_not_create_is_recorded_failed() {
        let app = crate::testing::app(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]).await;
        let app = crate::testing::jobs_down(&app);
        let body = br#"{"container_ids":["CID-0000001","CID-0000002"]}"#;
        let err = submit(&app, &trace_core::Principal::local(), body).await.unwrap_err();
        assert_eq!(err.code(), "SERVICE_UNAVAILABLE", "{err}");
        let stored = app.backends.store.list("jobs/").await.unwrap();
        let outcome = stored.iter().find(|o| o.key.ends_with("/outcome.json")).expect("an outcome");
        let ended: JobMeta =
            serde_json::from_slice(&app.backends.store.get(&outcome.key).await.unwrap()).unwrap();
        assert_eq!(ended.status, JobStatus::Failed);
        assert_eq!(ended.error.map(|e| e.code), Some("JOB_STORE_ERROR".to_owned()));
        assert_eq!(
            app.backends
                .light
                .receive(10, std::time::Duration::ZERO, std::time::Duration::from_secs(30))
                .await
                .unwrap()
                .len(),
            0
        );
    }
}
