//! Jobs: the status vocabulary, the one table of allowed transitions, and the job metadata.
//!
//! Stores persist [`JobMeta`] and apply changes with a compare-and-set on `(status, attempt)`; the
//! decision whether a change is allowed is made here, by [`JobStatus::can_become`], for every store.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::domain::Domain;
use crate::ids::JobId;
use crate::profile::Profile;
use crate::queue::QueueKind;

/// A job's status. The names are the ones the dashboard client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in a queue.
    Queued,
    /// A worker is running it.
    Started,
    /// The result is complete (its manifest is written).
    Finished,
    /// It stopped with an error.
    Failed,
    /// A caller cancelled it.
    Cancelled,
}

impl JobStatus {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Started, Self::Finished, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// Finished, failed and cancelled never change again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Finished | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// THE transition table.
    ///
    /// | from      | to                                                        |
    /// |-----------|-----------------------------------------------------------|
    /// | queued    | started, failed (e.g. the queue send failed), cancelled   |
    /// | started   | finished, failed, cancelled, queued (released on shutdown), started (a new attempt takes over a crashed one) |
    /// | terminal  | nothing                                                   |
    pub const fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        match self {
            Queued => matches!(next, Started | Failed | Cancelled),
            Started => matches!(next, Finished | Failed | Cancelled | Queued | Started),
            Finished | Failed | Cancelled => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a running job is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The domain being read now (none before the first and after the last).
    pub domain: Option<Domain>,
    /// Records written to the result so far, all domains.
    pub records_written: u64,
    /// Container ids whose rows are all written.
    pub ids_done: u64,
    /// Container ids in the job.
    pub ids_total: u64,
    /// `ids_done / ids_total` in percent, 0–100.
    pub percent: f64,
}

impl Progress {
    /// Progress at the start of a job over `ids_total` ids.
    pub fn start(ids_total: u64) -> Self {
        Progress { ids_total, ..Default::default() }
    }

    /// Sets `ids_done` and recomputes `percent` (rounded to 0.1).
    pub fn set_ids_done(&mut self, ids_done: u64) {
        self.ids_done = ids_done.min(self.ids_total);
        self.percent = if self.ids_total == 0 {
            100.0
        } else {
            (self.ids_done as f64 * 1000.0 / self.ids_total as f64).round() / 10.0
        };
    }
}

impl Progress {
    /// The progress as the dashboard shows it, one line of text: `queued`, `starting`,
    /// `history 2/5: 45,000 of 114,000 ids (39.5%)` while a domain is read, `writing the result` between
    /// the last read and the end, then `complete`, `failed` or `cancelled`.
    pub fn describe(&self, status: JobStatus, domains: &[Domain]) -> String {
        match status {
            JobStatus::Queued => "queued".to_owned(),
            JobStatus::Finished => "complete".to_owned(),
            JobStatus::Failed => "failed".to_owned(),
            JobStatus::Cancelled => "cancelled".to_owned(),
            JobStatus::Started => match self.domain {
                Some(domain) if self.ids_done < self.ids_total || self.ids_total == 0 => {
                    let position = domains.iter().position(|d| *d == domain).map_or(0, |i| i + 1);
                    format!(
                        "{domain} {position}/{}: {} of {} ids ({}%)",
                        domains.len(),
                        thousands(self.ids_done),
                        thousands(self.ids_total),
                        self.percent
                    )
                }
                Some(_) => "writing the result".to_owned(),
                None => "starting".to_owned(),
            },
        }
    }
}

/// `114000` → `114,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Why a job failed: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Stable code (`JOB_TIMEOUT`, `SOURCE_ERROR`, `QUEUE_SEND_FAILED`, …).
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

/// Everything known about a job: what status answers and what stores persist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    /// Its id.
    pub job_id: JobId,
    /// The profile.
    pub profile: Profile,
    /// Unique container ids.
    pub cid_count: u64,
    /// Domains, in result order.
    pub domains: Vec<Domain>,
    /// Current status.
    pub status: JobStatus,
    /// Progress of the current run.
    pub progress: Progress,
    /// The queue it was sent to.
    pub queue: QueueKind,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When a worker last started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Number of times a worker has started it; part of the compare-and-set guard.
    pub attempt: u32,
    /// Last sign of life of the worker running it.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The id of the principal that submitted it ([`Principal::id`]): only it (and admins) may see
    /// the job. Fixed at creation. A record from before owners were kept reads as `""`, which no
    /// caller's id equals, so only admins see it.
    #[serde(default)]
    pub owner: String,
    /// The owner's tenant, when its authorizer names one.
    #[serde(default)]
    pub tenant: Option<String>,
    /// On the record of one shard of a job split across workers (see [`JobMeta::shard_record`]): that
    /// job. The shard's lease, attempts and progress are its own; its input, chunks and result are
    /// the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// How many shards the job is split into, each run by its own worker (1: run whole).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub shards: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The state a change was computed from: a store applies the change only if the job still has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// Expected status.
    pub status: JobStatus,
    /// Expected attempt.
    pub attempt: u32,
}

/// A transition the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot become {to}")]
pub struct InvalidTransition {
    /// Current status.
    pub from: JobStatus,
    /// Refused status.
    pub to: JobStatus,
}

impl JobMeta {
    /// A new queued job, owned by nobody yet (see [`JobMeta::owned_by`]).
    pub fn new(
        job_id: JobId,
        profile: Profile,
        cid_count: u64,
        domains: Vec<Domain>,
        queue: QueueKind,
        now: DateTime<Utc>,
    ) -> Self {
        JobMeta {
            job_id,
            profile,
            cid_count,
            domains,
            status: JobStatus::Queued,
            progress: Progress::start(cid_count),
            queue,
            created_at: now,
            started_at: None,
            completed_at: None,
            error: None,
            attempt: 0,
            heartbeat_at: None,
            owner: String::new(),
            tenant: None,
            parent: None,
            shards: 1,
        }
    }

    /// This job split into `shards` shards.
    pub fn split_into(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// The queued record of shard `shard` (of `cid_count` ids) of this job: the job's owner, queue,
    /// profile and domains, its own id ([`JobId::shard`]), attempts and progress.
    pub fn shard_record(&self, shard: u32, cid_count: u64) -> JobMeta {
        JobMeta {
            job_id: self.job_id.shard(shard),
            cid_count,
            status: JobStatus::Queued,
            progress: Progress::start(cid_count),
            started_at: None,
            completed_at: None,
            error: None,
            attempt: 0,
            heartbeat_at: None,
            parent: Some(self.job_id),
            shards: 1,
            ..self.clone()
        }
    }

    /// The job whose input and result this record's runs read and write: its parent for a shard's
    /// record, else itself.
    pub fn result_id(&self) -> JobId {
        self.parent.unwrap_or(self.job_id)
    }

    /// This job, owned by `principal` (and of its tenant).
    pub fn owned_by(mut self, principal: &Principal) -> Self {
        self.owner = principal.id().to_owned();
        self.tenant = principal.tenant().map(str::to_owned);
        self
    }

    /// The guard for a change computed from this meta.
    pub fn guard(&self) -> Guard {
        Guard { status: self.status, attempt: self.attempt }
    }

    /// The meta after moving to `to` at `now`, if the table allows it. Starting (again) bumps the
    /// attempt and resets progress; a terminal status sets `completed_at`; `error` is kept for failed.
    pub fn transitioned(
        &self,
        to: JobStatus,
        now: DateTime<Utc>,
        error: Option<JobError>,
    ) -> Result<JobMeta, InvalidTransition> {
        if !self.status.can_become(to) {
            return Err(InvalidTransition { from: self.status, to });
        }
        let mut next = self.clone();
        next.status = to;
        match to {
            JobStatus::Started => {
                next.attempt += 1;
                next.started_at = Some(now);
                next.heartbeat_at = Some(now);
                next.progress = Progress::start(self.cid_count);
            }
            JobStatus::Queued => {
                next.heartbeat_at = None;
            }
            _ => {
                next.completed_at = Some(now);
                if to == JobStatus::Finished {
                    next.progress.domain = None;
                    next.progress.set_ids_done(next.progress.ids_total);
                }
            }
        }
        next.error = if to == JobStatus::Failed { error } else { None };
        Ok(next)
    }

    /// A failed job queued again (a retry, or its message redriven from the dead-letter queue): no
    /// error, no progress, no completion; the attempt is kept, so the next claim counts on from it
    /// (and clears what the failed attempts left).
    pub fn requeued(&self) -> Result<JobMeta, InvalidTransition> {
        if self.status != JobStatus::Failed {
            return Err(InvalidTransition { from: self.status, to: JobStatus::Queued });
        }
        let mut next = self.clone();
        next.status = JobStatus::Queued;
        next.error = None;
        next.completed_at = None;
        next.started_at = None;
        next.heartbeat_at = None;
        next.progress = Progress::start(self.cid_count);
        Ok(next)
    }

    /// Seconds from start (or creation) to completion (or `now`).
    pub fn elapsed_seconds(&self, now: DateTime<Utc>) -> f64 {
        let from = self.started_at.unwrap_or(self.created_at);
        let to = self.completed_at.unwrap_or(now);
        ((to - from).num_milliseconds().max(0) as f64) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    const ALL: [JobStatus; 5] = [Queued, Started, Finished, Failed, Cancelled];

    #[test]
    fn terminal_statuses_never_change() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_table() {
        let allowed: Vec<_> = ALL
            .iter()
            .flat_map(|f| ALL.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.can_become(*t))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Queued, Started),
                (Queued, Failed),
                (Queued, Cancelled),
                (Started, Queued),
                (Started, Started),
                (Started, Finished),
                (Started, Failed),
                (Started, Cancelled),
            ]
        );
    }

    #[test]
    fn wire_names() {
        for s in ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobStatus::parse("running"), None);
    }

    #[test]
    fn transitions_fill_the_timestamps() {
        let t0 = Utc::now();
        let meta = JobMeta::new(JobId::new(), Profile::QueryTool, 10, vec![], QueueKind::Light, t0);
        let started = meta.transitioned(Started, t0, None).unwrap();
        assert_eq!(started.attempt, 1);
        assert_eq!(started.started_at, Some(t0));
        let err = JobError { code: "JOB_TIMEOUT".into(), message: "x".into() };
        let failed = started.transitioned(Failed, t0, Some(err.clone())).unwrap();
        assert_eq!(failed.error, Some(err));
        assert!(failed.completed_at.is_some());
        assert_eq!(
            failed.transitioned(Started, t0, None),
            Err(InvalidTransition { from: Failed, to: Started })
        );
        let finished = started.transitioned(Finished, t0, None).unwrap();
        assert_eq!(finished.progress.percent, 100.0);
    }

    #[test]
    fn a_job_records_its_owner_and_a_record_without_one_belongs_to_nobody() {
        let t0 = Utc::now();
        let alice = Principal::new("key:alice", Some("acme".into()));
        let meta =
            JobMeta::new(JobId::new(), Profile::QueryTool, 1, vec![], QueueKind::Light, t0).owned_by(&alice);
        assert_eq!((meta.owner.as_str(), meta.tenant.as_deref()), ("key:alice", Some("acme")));
        let started = meta.transitioned(Started, t0, None).unwrap();
        assert_eq!((started.owner, started.tenant), (meta.owner.clone(), meta.tenant.clone()));
        // A record written before owners were kept.
        let mut old = serde_json::to_value(&meta).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("owner");
        fields.remove("tenant");
        let old: JobMeta = serde_json::from_value(old).unwrap();
        assert_eq!((old.owner.as_str(), old.tenant), ("", None));
        assert!(!alice.may_see(&old.owner));
        assert!(Principal::new("key:root", None).with_admin(true).may_see(&old.owner));
    }

    #[test]
    fn progress_percent() {
        let mut p = Progress::start(3);
        p.set_ids_done(1);
        assert_eq!(p.percent, 33.3);
        p.set_ids_done(9);
        assert_eq!((p.ids_done, p.percent), (3, 100.0));
    }

    #[test]
    fn progress_reads_as_one_line_of_text() {
        let domains = [Domain::History, Domain::Materials, Domain::Rejects, Domain::Holds, Domain::Jobs];
        let mut p = Progress::start(114_000);
        assert_eq!(p.describe(Queued, &domains), "queued");
        assert_eq!(p.describe(Started, &domains), "starting");
        p.domain = Some(Domain::Materials);
        p.set_ids_done(45_000);
        assert_eq!(p.describe(Started, &domains), "materials 2/5: 45,000 of 114,000 ids (39.5%)");
        p.set_ids_done(114_000);
        assert_eq!(p.describe(Started, &domains), "writing the result");
        assert_eq!(p.describe(Finished, &domains), "complete");
        assert_eq!(
            (p.describe(Failed, &domains), p.describe(Cancelled, &domains)),
            ("failed".into(), "cancelled".into())
        );
        assert_eq!(
            (thousands(0), thousands(999), thousands(1_000), thousands(1_234_567)),
            ("0".into(), "999".into(), "1,000".into(), "1,234,567".into())
        );
    }
}
