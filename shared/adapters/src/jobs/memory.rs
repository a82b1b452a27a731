//! Job metadata in process memory, with TTLs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use trace_core::job::{Guard, JobMeta, JobStatus, Progress};
use trace_core::ports::{CasOutcome, JobStore, JobStoreError};
use trace_core::JobId;

/// An in-memory job store.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobId, (JobMeta, Instant)>>,
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_jobs<T>(&self, f: impl FnOnce(&mut HashMap<JobId, (JobMeta, Instant)>) -> T) -> T {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        jobs.retain(|_, (_, expires)| *expires > now);
        f(&mut jobs)
    }
}

fn matches(meta: &JobMeta, guard: Guard) -> bool {
    meta.status == guard.status && meta.attempt == guard.attempt
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, meta: &JobMeta, ttl: Duration) -> Result<(), JobStoreError> {
        self.with_jobs(|jobs| {
            if jobs.contains_key(&meta.job_id) {
                return Err(JobStoreError::AlreadyExists(meta.job_id));
            }
            jobs.insert(meta.job_id, (meta.clone(), Instant::now() + ttl));
            Ok(())
        })
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobMeta>, JobStoreError> {
        Ok(self.with_jobs(|jobs| jobs.get(id).map(|(m, _)| m.clone())))
    }

    async fn compare_and_set(&self, guard: Guard, next: &JobMeta) -> Result<CasOutcome, JobStoreError> {
        Ok(self.with_jobs(|jobs| match jobs.get_mut(&next.job_id) {
            None => CasOutcome::Missing,
            Some((meta, _)) if matches(meta, guard) => {
                // The owner is fixed at creation, as in Redis.
                let (owner, tenant) = (std::mem::take(&mut meta.owner), meta.tenant.take());
                *meta = JobMeta { owner, tenant, ..next.clone() };
                CasOutcome::Applied
            }
            Some((meta, _)) => CasOutcome::Conflict(Box::new(meta.clone())),
        }))
    }

    async fn update_progress(
        &self,
        id: &JobId,
        guard: Guard,
        progress: &Progress,
        renewed: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<CasOutcome, JobStoreError> {
        Ok(self.with_jobs(|jobs| match jobs.get_mut(id) {
            None => CasOutcome::Missing,
            Some((meta, _)) if matches(meta, guard) => {
                meta.progress = progress.clone();
                if let Some(at) = renewed {
                    meta.heartbeat_at = Some(at);
                }
                CasOutcome::Applied
            }
            Some((meta, _)) => CasOutcome::Conflict(Box::new(meta.clone())),
        }))
    }

    async fn list_recent(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobMeta>, JobStoreError> {
        Ok(self.with_jobs(|jobs| {
            let mut all: Vec<JobMeta> = jobs
                .values()
                .map(|(m, _)| m)
                .filter(|m| m.parent.is_none())
                .filter(|m| owner.is_none_or(|o| m.owner == o))
                .filter(|m| status.is_none_or(|s| m.status == s))
                .cloned()
                .collect();
            all.sort_by(|a, b| {
                b.created_at.cmp(&a.created_at).then_with(|| b.job_id.to_string().cmp(&a.job_id.to_string()))
            });
            all.truncate(limit);
            all
        }))
    }

    async fn refresh_ttl(&self, id: &JobId, ttl: Duration) -> Result<bool, JobStoreError> {
        Ok(self.with_jobs(|jobs| match jobs.get_mut(id) {
            Some((_, expires)) => {
                *expires = Instant::now() + ttl;
                true
            }
            None => false,
        }))
    }
}
