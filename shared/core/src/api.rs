//! Wire types of the HTTP answers that both the server and clients use, defined once so they cannot
//! drift: the 202 answer of submit and a job's status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::ids::JobId;
use crate::job::{JobError, JobMeta, JobStatus, Progress};
use crate::profile::Profile;
use crate::queue::QueueKind;

/// The 202 answer of `POST /api/trace/events`: the request became a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// Always `events`.
    #[serde(default)]
    pub stage: String,
    /// Always true.
    #[serde(rename = "async", default)]
    pub is_async: bool,
    /// The job.
    pub job_id: JobId,
    /// Its status (`queued`).
    pub status: JobStatus,
    /// The queue it went to.
    pub queue: QueueKind,
    /// Path of its status.
    pub status_url: String,
    /// Path of its result pages.
    pub result_url: String,
    /// Path of its NDJSON stream.
    pub stream_url: String,
}

impl Accepted {
    /// The answer for a job just queued on `queue`.
    pub fn queued(job_id: JobId, queue: QueueKind) -> Self {
        Accepted {
            stage: "events".to_owned(),
            is_async: true,
            job_id,
            status: JobStatus::Queued,
            queue,
            status_url: format!("/api/trace/job/{job_id}"),
            result_url: format!("/api/trace/job/{job_id}/result"),
            stream_url: format!("/api/trace/job/{job_id}/stream"),
        }
    }
}

/// A job's status: `GET /api/trace/job/{id}`, an entry of the history, the answer of cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job.
    pub job_id: JobId,
    /// `queued|started|finished|failed|cancelled`.
    pub status: JobStatus,
    /// Its profile.
    pub profile: Profile,
    /// Unique container ids.
    pub cid_count: u64,
    /// Domains, in result order.
    pub domains: Vec<Domain>,
    /// Progress of the current run.
    pub progress: Progress,
    /// The queue.
    pub queue: QueueKind,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds run so far (or in all).
    pub elapsed_seconds: f64,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Worker attempts.
    pub attempt: u32,
}

impl JobInfo {
    /// The answer for a job at `now`.
    pub fn of(meta: JobMeta, now: DateTime<Utc>) -> Self {
        JobInfo {
            elapsed_seconds: meta.elapsed_seconds(now),
            job_id: meta.job_id,
            status: meta.status,
            profile: meta.profile,
            cid_count: meta.cid_count,
            domains: meta.domains,
            progress: meta.progress,
            queue: meta.queue,
            created_at: meta.created_at,
            started_at: meta.started_at,
            completed_at: meta.completed_at,
            error: meta.error,
            attempt: meta.attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_round_trips_with_the_client_fields() {
        let job = JobId::new();
        let a = Accepted::queued(job, QueueKind::Light);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["async"], true);
        assert_eq!(json["stage"], "events");
        assert_eq!(json["stream_url"], format!("/api/trace/job/{job}/stream"));
        assert_eq!(serde_json::from_value::<Accepted>(json).unwrap(), a);
    }
}
