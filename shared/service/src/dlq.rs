//! The dead-letter queues, for the service's administrators: what is in them
//! (`GET /api/trace/admin/dlq`) and moving their messages back to their queues
//! (`POST /api/trace/admin/dlq/redrive`, what SQS's own redrive does). A redriven message of a job
//! that failed on its last delivery runs the job again (see the worker's claim); one of a finished or
//! cancelled job is dropped by its worker.

use std::collections::BTreeSet;
use std::time::Duration;

use trace_core::api::{DeadLetter, DeadLetters, Redriven};
use trace_core::ports::{Delivery, JobQueue};
use trace_core::{Principal, QueueKind, TraceError};

use crate::record::{self, Asker};
use crate::App;

/// Most messages listed or moved per queue and call.
pub const MAX_MESSAGES: usize = 1_000;

/// How long a listed message stays hidden while the listing goes on (then it is made visible again).
const PEEK: Duration = Duration::from_secs(30);

fn admin(principal: &Principal) -> Result<(), TraceError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(TraceError::AdminOnly)
    }
}

fn unavailable(e: trace_core::ports::QueueError) -> TraceError {
    TraceError::unavailable("the dead-letter queue", e)
}

/// Receives every message of `queue` (up to [`MAX_MESSAGES`]), each once.
async fn receive_all(queue: &dyn JobQueue) -> Result<Vec<Delivery>, TraceError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < MAX_MESSAGES {
        let got = queue.receive(10, Duration::ZERO, PEEK).await.map_err(unavailable)?;
        let fresh: Vec<Delivery> = got.into_iter().filter(|d| seen.insert(d.message_id.clone())).collect();
        if fresh.is_empty() {
            break;
        }
        out.extend(fresh);
    }
    Ok(out)
}

/// The messages of both dead-letter queues, with their jobs' status (admins only).
pub async fn list(app: &App, principal: &Principal) -> Result<DeadLetters, TraceError> {
    admin(principal)?;
    let mut messages = Vec::new();
    for kind in [QueueKind::Heavy, QueueKind::Light] {
        let Some(dlq) = app.backends.dead_letters(kind) else { continue };
        let deliveries = receive_all(dlq.as_ref()).await?;
        for d in &deliveries {
            let job_id = d.attributes.get("job_id").cloned().or_else(|| {
                trace_core::message::ShardMessage::parse(&d.body).ok().map(|m| m.job_id.to_string())
            });
            let meta = match job_id.as_deref().and_then(|id| id.parse().ok()) {
                Some(id) => record::get_or_restore(app, &id, Asker::Caller).await.ok().flatten(),
                None => None,
            };
            messages.push(DeadLetter {
                queue: kind.as_str().to_owned(),
                message_id: d.message_id.clone(),
                job_id,
                receive_count: d.receive_count,
                job_status: meta.as_ref().map(|m| m.status),
                error_code: meta.and_then(|m| m.error).map(|e| e.code),
            });
        }
        // Listed, not taken: visible again at once.
        for d in deliveries {
            let _ = dlq.extend_visibility(&d.receipt, Duration::ZERO).await;
        }
    }
    Ok(DeadLetters { messages })
}

/// Moves every message of both dead-letter queues back to its queue (admins only): sent first, then
/// deleted, so a failure in between leaves a duplicate (which the worker drops), never a loss.
pub async fn redrive(app: &App, principal: &Principal) -> Result<Redriven, TraceError> {
    admin(principal)?;
    let mut moved = Redriven { heavy: 0, light: 0 };
    for kind in [QueueKind::Heavy, QueueKind::Light] {
        let Some(dlq) = app.backends.dead_letters(kind) else { continue };
        let queue = app.backends.queue(kind);
        for d in receive_all(dlq.as_ref()).await? {
            let attributes: Vec<(&str, &str)> =
                d.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            queue
                .send(&d.body, &attributes)
                .await
                .map_err(|e| TraceError::unavailable("the job queue", e))?;
            dlq.delete(&d.receipt).await.map_err(unavailable)?;
            tracing::info!(queue = kind.as_str(), message_id = %d.message_id, job_id = ?d.attributes.get("job_id"), "dead letter redriven");
            match kind {
                QueueKind::Heavy => moved.heavy += 1,
                QueueKind::Light => moved.light += 1,
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::app;
    use trace_core::job::JobStatus;
    use trace_core::TraceRequest;

    /// A message received more than `TRACE_MAX_RECEIVE_COUNT` times lands in the (in-process)
    /// dead-letter queue: an admin lists it with its job's status, others are refused, and the
    /// redrive puts it back on its queue, where a worker can take it.
    #[tokio::test]
    async fn an_admin_lists_and_redrives_the_dead_letters() {
        let app = app(&[("TRACE_MAX_RECEIVE_COUNT", "1")]).await;
        let ids: Vec<String> = (1..=3).map(trace_dataset::container_id).collect();
        let body = serde_json::json!({ "container_ids": ids, "domains": ["holds"] });
        let request = TraceRequest::parse(body.to_string().as_bytes(), usize::MAX).unwrap();
        let job = crate::submit::enqueue(&app, &Principal::local(), &request, QueueKind::Light)
            .await
            .unwrap()
            .job_id;
        let light = app.backends.light.clone();
        let first = light.receive(1, Duration::ZERO, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(light.receive(1, Duration::ZERO, Duration::ZERO).await.unwrap().is_empty(), "dead-lettered");

        let nobody = Principal::new("key:bob", None);
        assert!(matches!(list(&app, &nobody).await, Err(TraceError::AdminOnly)));
        assert!(matches!(redrive(&app, &nobody).await, Err(TraceError::AdminOnly)));
        let admin = Principal::new("key:root", None).with_admin(true);
        let listed = list(&app, &admin).await.unwrap().messages;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].queue, "light");
        assert_eq!(listed[0].job_id.as_deref(), Some(job.to_string().as_str()));
        assert_eq!(listed[0].job_status, Some(JobStatus::Queued));
        assert_eq!(list(&app, &admin).await.unwrap().messages.len(), 1, "a listing leaves the messages");

        assert_eq!(redrive(&app, &admin).await.unwrap(), Redriven { heavy: 0, light: 1 });
        assert!(list(&app, &admin).await.unwrap().messages.is_empty());
        let back = light.receive(1, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].body, first[0].body);
    }
}
