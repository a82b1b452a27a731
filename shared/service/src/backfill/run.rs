//! A backfill run: the changed ids of a window, in batches, each queued as one job unless its
//! marker says another run has it; the report of what happened.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use trace_core::ports::{BackendError, Claim};
use trace_core::{admission, ContainerId, Domain, Principal, Profile, QueueKind, TraceRequest};

use super::window::{rfc3339, Window};
use crate::{submit, App};

/// How long a claimed batch stays claimed before its job exists: 15 minutes, the longest a Lambda
/// invocation runs, so a claim never outlives the run that made it.
pub const CLAIM_TTL: Duration = Duration::from_secs(900);

/// The principal that owns the backfill's jobs: no caller's, so only admins see them.
pub const OWNER: &str = "system:backfill";

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// This run created its job.
    Submitted,
    /// An earlier (or concurrent) run of the window has it.
    AlreadySubmitted,
    /// Its job could not be created; the batch is left unmarked for a retry.
    Failed,
}

/// One batch of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Index in the window, from 0.
    pub batch: usize,
    /// Ids in it.
    pub cid_count: usize,
    /// Its first id.
    pub first_id: String,
    /// Its last id.
    pub last_id: String,
    /// What happened.
    pub outcome: Outcome,
    /// The job (for `already_submitted`: the one the marker names, unless that run is still queueing it).
    pub job_id: Option<String>,
    /// The queue of the job this run created.
    pub queue: Option<QueueKind>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The result of a run: what it found and what it queued.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The window.
    pub window: Window,
    /// Containers that changed in it.
    pub changed_ids: usize,
    /// Changed ids that are not valid container ids (left out).
    pub invalid_ids: usize,
    /// Most ids per job (`TRACE_EVENTS_CID_LIMIT`).
    pub batch_limit: usize,
    /// Batches created by this run.
    pub submitted: usize,
    /// Batches found already marked.
    pub already_submitted: usize,
    /// Batches whose job could not be created.
    pub failed: usize,
    /// Every batch, in order.
    pub batches: Vec<BatchReport>,
}

/// A run that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The window has not ended: its changes are not all in yet.
    #[error("window {window} has not ended yet (now {now})")]
    NotOver {
        /// The window.
        window: Window,
        /// The time of the refusal.
        now: DateTime<Utc>,
    },
    /// The changed containers could not be read.
    #[error("finding the containers changed in {window} failed: {source}")]
    Changes {
        /// The window.
        window: Window,
        /// Why.
        source: BackendError,
    },
}

/// `ids` (sorted) in the fewest batches of at most `limit`, sizes differing by at most one.
pub fn split<T>(ids: &[T], limit: usize) -> Vec<&[T]> {
    if ids.is_empty() {
        return Vec::new();
    }
    let count = ids.len().div_ceil(limit.max(1));
    let (base, extra) = (ids.len() / count, ids.len() % count);
    let mut batches = Vec::with_capacity(count);
    let mut from = 0;
    for b in 0..count {
        let size = base + usize::from(b < extra);
        batches.push(&ids[from..from + size]);
        from += size;
    }
    batches
}

/// The backfill of one deployment: its app, whose backends say where changes come from
/// (`changes`) and where batches are marked (`markers`).
#[derive(Debug)]
pub struct Backfill {
    app: App,
}

impl Backfill {
    /// Over the app's backends.
    pub fn new(app: App) -> Self {
        Backfill { app }
    }

    /// `TRACE_BACKFILL_WINDOW_SECONDS`.
    pub fn window_length(&self) -> Duration {
        self.app.config.backfill_window
    }

    /// Queues the jobs of `window` that no run has queued yet. A batch that fails is reported and left
    /// unmarked; the run goes on with the others.
    pub async fn run(&self, window: Window) -> Result<Report, BackfillError> {
        // The scheduled run is also the reaper's: orphaned jobs are ended first (a failure is logged;
        // the backfill goes on).
        match crate::reaper::sweep(&self.app).await {
            Ok(reaped) => tracing::info!(?reaped, "reaper sweep"),
            Err(e) => tracing::warn!(error = %e, "reaper sweep failed"),
        }
        let now = Utc::now();
        if window.end > now {
            return Err(BackfillError::NotOver { window, now });
        }
        let stored = self
            .app
            .backends
            .changes
            .changed(&window.range())
            .await
            .map_err(|source| BackfillError::Changes { window, source })?;
        let changed_ids = stored.len();
        let mut ids: Vec<ContainerId> = Vec::with_capacity(stored.len());
        let mut invalid_ids = 0;
        for id in stored {
            match ContainerId::parse(id) {
                Ok(id) => ids.push(id),
                Err(_) => invalid_ids += 1,
            }
        }
        // Byte order, whatever the database's collation: the same window always splits the same way.
        ids.sort_unstable();
        ids.dedup();
        if invalid_ids > 0 {
            tracing::warn!(%window, invalid_ids, "changed ids that are not valid container ids are left out");
        }
        let limit = self.app.config.limits.events_cid_limit;
        let batches = split(&ids, limit);
        let count = batches.len();
        let mut report = Report {
            window,
            changed_ids,
            invalid_ids,
            batch_limit: limit,
            submitted: 0,
            already_submitted: 0,
            failed: 0,
            batches: Vec::with_capacity(count),
        };
        for (index, batch) in batches.into_iter().enumerate() {
            let entry = self.batch(&window, index, count, batch).await;
            match entry.outcome {
                Outcome::Submitted => report.submitted += 1,
                Outcome::AlreadySubmitted => report.already_submitted += 1,
                Outcome::Failed => report.failed += 1,
            }
            report.batches.push(entry);
        }
        tracing::info!(
            %window,
            changed_ids,
            batches = count,
            submitted = report.submitted,
            already_submitted = report.already_submitted,
            failed = report.failed,
            "backfill run"
        );
        Ok(report)
    }

    async fn batch(&self, window: &Window, index: usize, count: usize, ids: &[ContainerId]) -> BatchReport {
        let mut entry = BatchReport {
            batch: index,
            cid_count: ids.len(),
            first_id: ids.first().map(|i| i.to_string()).unwrap_or_default(),
            last_id: ids.last().map(|i| i.to_string()).unwrap_or_default(),
            outcome: Outcome::Failed,
            job_id: None,
            queue: None,
            error: None,
        };
        let (markers, key) = (&self.app.backends.markers, window.key());
        match markers.claim(&key, index, CLAIM_TTL).await {
            Ok(Claim::Won) => {}
            Ok(Claim::Taken { job_id }) => {
                entry.outcome = Outcome::AlreadySubmitted;
                entry.job_id = job_id;
                return entry;
            }
            Err(e) => {
                entry.error = Some(e.to_string());
                return entry;
            }
        }
        let mut params = serde_json::Map::new();
        params.insert(
            "backfill".into(),
            json!({
                "window_start": rfc3339(window.start),
                "window_end": rfc3339(window.end),
                "batch": index,
                "batches": count,
            }),
        );
        let request = TraceRequest {
            ids: ids.to_vec(),
            profile: Profile::QueryTool,
            domains: Domain::BASE.to_vec(),
            params,
        };
        let queue = admission::route(&request, &self.app.config.limits);
        match submit::enqueue(&self.app, &Principal::new(OWNER, None), &request, queue).await {
            Ok(accepted) => {
                let job_id = accepted.job_id.to_string();
                if let Err(e) = markers.confirm(&key, index, &job_id, self.app.config.job_ttl).await {
                    // The claim stays (until CLAIM_TTL): the job exists, only its marker is short-lived.
                    tracing::warn!(%window, batch = index, job_id, error = %e, "could not record the batch's job");
                }
                entry.outcome = Outcome::Submitted;
                entry.job_id = Some(job_id);
                entry.queue = Some(queue);
            }
            Err(e) => {
                tracing::error!(%window, batch = index, error = %e, "could not queue the batch's job");
                if let Err(e) = markers.release(&key, index).await {
                    tracing::warn!(%window, batch = index, error = %e, "could not release the batch's claim");
                }
                entry.error = Some(e.to_string());
            }
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace_adapters::runtime::{Backends, BackendsFromConfig};
    use trace_core::Config;

    use crate::backfill::window::tests::at;

    #[test]
    fn batches_are_as_few_and_as_even_as_the_limit_allows() {
        let ids: Vec<u32> = (0..10).collect();
        let sizes = |limit| split(&ids, limit).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(sizes(10), vec![10]);
        assert_eq!(sizes(100), vec![10]);
        assert_eq!(sizes(9), vec![5, 5]);
        assert_eq!(sizes(4), vec![4, 3, 3]);
        assert_eq!(sizes(1), vec![1; 10]);
        assert!(split::<u32>(&[], 5).is_empty());
        let joined: Vec<u32> = split(&ids, 3).concat();
        assert_eq!(joined, ids);
    }

    #[tokio::test]
    async fn a_second_run_of_a_window_queues_nothing() {
        let dir = std::env::temp_dir().join(format!("trace-backfill-{}", uuid_like()));
        let config = Config::from_lookup(|k| match k {
            "TRACE_EVENTS_CID_LIMIT" => Some("400".into()),
            "TRACE_LOCAL_DIR" => Some(dir.display().to_string()),
            _ => None,
        })
        .unwrap();
        let backends = Backends::from_config(&config).await.unwrap();
        let backfill = Backfill::new(App::new(config, backends.clone()));
        let window = Window::ending_at(at(2025, 1, 2, 0, 0, 0), Duration::from_secs(86_400));

        let first = backfill.run(window).await.unwrap();
        assert!(first.batches.len() >= 2, "{first:?}");
        assert_eq!(first.submitted, first.batches.len());
        assert_eq!(first.batches.iter().map(|b| b.cid_count).sum::<usize>(), first.changed_ids);
        assert!(first.batches.iter().all(|b| b.cid_count <= 400));
        let jobs = backends.jobs.list_recent(None, None, 200).await.unwrap();
        assert_eq!(jobs.len(), first.batches.len());
        assert!(jobs.iter().all(|j| j.owner == OWNER), "the backfill owns its jobs");

        let second = backfill.run(window).await.unwrap();
        assert_eq!((second.submitted, second.already_submitted), (0, first.batches.len()));
        let job_ids = |r: &Report| r.batches.iter().map(|b| b.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(job_ids(&second), job_ids(&first));
        assert_eq!(backends.jobs.list_recent(None, None, 200).await.unwrap().len(), first.batches.len());

        let open = Window::ending_at(Utc::now() + chrono::Duration::hours(2), Duration::from_secs(3600));
        assert!(matches!(backfill.run(open).await, Err(BackfillError::NotOver { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn uuid_like() -> String {
        format!("{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or_default())
    }
}
