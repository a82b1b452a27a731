//! Scheduled backfill: queue trace jobs for the containers that changed in a time window, so their
//! results are ready before anyone asks.
//!
//! - **Window**: `[end - length, end)`, where `end` is the scheduled event's `time` truncated to a
//!   multiple of `TRACE_BACKFILL_WINDOW_SECONDS` (counted from the Unix epoch). A schedule whose period
//!   equals the length covers every window once, whatever minute it fires at.
//! - **Change**: the reference tables have no update time; a container changed in the window when one
//!   of its history rows moved out (`move_out`) in it (`catalog::CHANGED_IDS` on PostgreSQL; the same
//!   rule over the embedded dataset otherwise).
//! - **Batches**: the changed ids, sorted and de-duplicated, split into the fewest batches of at most
//!   `TRACE_EVENTS_CID_LIMIT` ids, of equal sizes (±1). Each batch is one job a client could have
//!   submitted (`query_tool`, every domain, tagged `params.backfill`), created by
//!   [`submit::enqueue`](crate::submit::enqueue) on the queue the admission rule picks (heavy above
//!   `TRACE_HEAVY_CID_THRESHOLD` ids).
//! - **Idempotence**: a marker per (window, batch), `{prefix}:backfill:{start}/{end}:{batch}` in Redis,
//!   claimed with `SET NX` before the job is created (expiring after [`CLAIM_TTL`], the longest a
//!   Lambda run lives), then set to the job id for `TRACE_JOB_TTL_SECONDS`. A repeated or concurrent
//!   run of the same window finds the batch marked and creates nothing; a batch whose job could not be
//!   queued is unmarked, so the retry of a failed run queues exactly the missing batches. A run that
//!   dies between claim and job leaves its claim for [`CLAIM_TTL`]; after that, running the window again
//!   (`backfill --window-end …`) queues that batch. Without Redis (local run) the markers live in the
//!   process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use lambda_runtime::{service_fn, LambdaEvent};
use serde::Serialize;
use serde_json::json;
use trace_adapters::source::{catalog, postgres};
use trace_core::ports::BackendError;
use trace_core::record::{RowBatch, Value};
use trace_core::{admission, ContainerId, Domain, Profile, QueueKind, TraceRequest};
use trace_dataset as dataset;

use crate::serve::ServeError;
use crate::{submit, App};

/// How long a claimed batch stays claimed before its job exists: 15 minutes, the longest a Lambda
/// invocation runs, so a claim never outlives the run that made it.
pub const CLAIM_TTL: Duration = Duration::from_secs(900);

/// Marker value of a batch claimed by a run that has not created its job yet.
const PENDING: &str = "pending";

/// A backfill window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First instant in the window.
    pub start: DateTime<Utc>,
    /// First instant after it.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window of `length` whose end is `at` truncated to a multiple of `length` (counted from the
    /// Unix epoch): the last whole window before `at`.
    pub fn ending_at(at: DateTime<Utc>, length: Duration) -> Window {
        let length = length.as_secs().clamp(1, i64::MAX as u64) as i64;
        let end = at.timestamp().div_euclid(length) * length;
        let instant = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(at);
        Window { start: instant(end.saturating_sub(length)), end: instant(end) }
    }

    /// The window an EventBridge event asks for: the one ending at its `time` (at `now` when it has none).
    pub fn of_event(event: &EventBridgeEvent, length: Duration, now: DateTime<Utc>) -> Window {
        Window::ending_at(event.time.unwrap_or(now), length)
    }

    /// `start/end`, both RFC 3339 in seconds: the window's part of marker keys.
    pub fn key(&self) -> String {
        format!("{}/{}", rfc3339(self.start), rfc3339(self.end))
    }

    /// Whether `at` is in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", rfc3339(self.start), rfc3339(self.end))
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Where the changed containers of a window come from.
#[async_trait]
pub trait ChangedIds: Send + Sync {
    /// Ids of the containers with a history row that moved out in `window`, as stored (any order,
    /// possibly not valid container ids).
    async fn changed(&self, window: &Window) -> Result<Vec<String>, BackendError>;
}

/// The changed containers in PostgreSQL: [`catalog::CHANGED_IDS`].
#[derive(Debug, Clone)]
pub struct PgChangedIds {
    source: postgres::PgSource,
}

impl PgChangedIds {
    /// Over the database at `url`, with one connection.
    pub fn connect(url: &str) -> Result<Self, BackendError> {
        Ok(PgChangedIds { source: postgres::PgSource::new(postgres::pool(url, 1)?, 1, 1) })
    }
}

#[async_trait]
impl ChangedIds for PgChangedIds {
    async fn changed(&self, window: &Window) -> Result<Vec<String>, BackendError> {
        let conn = self.source.pool().get().await.map_err(|e| BackendError::new("postgres", "connect", e))?;
        let rows = conn
            .query(catalog::CHANGED_IDS, &[&window.start, &window.end])
            .await
            .map_err(|e| BackendError::new("postgres", "changed ids", e))?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, String>(0).map_err(|e| BackendError::new("postgres", "changed ids", e))
            })
            .collect()
    }
}

/// The changed containers of the embedded reference dataset (`CID-0000001` … `CID-9999999`), by the
/// same rule: a history row with `move_out` in the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatasetChangedIds;

impl DatasetChangedIds {
    /// Every history row of container `i` moves out within `[T0 + 97 i seconds, + 2 days)` (at most 39
    /// steps an hour apart, plus under an hour of processing: see `dataset.md`), so only the containers
    /// whose span meets the window are looked at.
    const SPAN_SECONDS: i64 = 2 * 86_400;

    fn candidates(window: &Window) -> std::ops::RangeInclusive<u64> {
        let from = (window.start.timestamp() - dataset::T0_UNIX - Self::SPAN_SECONDS).div_euclid(97);
        let to = (window.end.timestamp() - dataset::T0_UNIX).div_euclid(97);
        let max = dataset::MAX_INDEX as i64;
        // `to` 0 (a window before T0): empty.
        (from.clamp(1, max) as u64)..=(to.clamp(0, max) as u64)
    }
}

#[async_trait]
impl ChangedIds for DatasetChangedIds {
    async fn changed(&self, window: &Window) -> Result<Vec<String>, BackendError> {
        let column = Domain::History.columns().iter().position(|c| c.name == "move_out").unwrap_or(8);
        let mut ids = Vec::new();
        for i in Self::candidates(window) {
            let mut batch = RowBatch::with_capacity(Domain::History, 40);
            dataset::push_rows(Domain::History, i, &mut batch);
            if batch.rows().any(|row| matches!(row[column], Value::Time(t) if window.contains(t))) {
                ids.push(dataset::container_id(i));
            }
        }
        Ok(ids)
    }
}

/// Per-(window, batch) markers: Redis when configured, else this process's memory.
enum Markers {
    Redis { conn: redis::aio::ConnectionManager, prefix: String },
    Memory(Mutex<HashMap<String, String>>),
}

/// What claiming a batch found.
enum Claim {
    /// The batch is ours to queue.
    Won,
    /// Another run has it: the marker's value (a job id, or [`PENDING`]).
    Taken(Option<String>),
}

fn redis_error(op: &'static str) -> impl Fn(redis::RedisError) -> BackendError {
    move |e| BackendError::new("redis", op, e)
}

impl Markers {
    fn key(&self, window: &Window, batch: usize) -> String {
        let prefix = match self {
            Markers::Redis { prefix, .. } => prefix.as_str(),
            Markers::Memory(_) => "local",
        };
        format!("{prefix}:backfill:{}:{batch}", window.key())
    }

    async fn claim(&self, key: &str) -> Result<Claim, BackendError> {
        match self {
            Markers::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(PENDING)
                    .arg("NX")
                    .arg("EX")
                    .arg(CLAIM_TTL.as_secs())
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error("claim"))?;
                if set.is_some() {
                    return Ok(Claim::Won);
                }
                let value: Option<String> =
                    redis::cmd("GET").arg(key).query_async(&mut conn).await.map_err(redis_error("get"))?;
                Ok(Claim::Taken(value))
            }
            Markers::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                match map.get(key) {
                    Some(value) => Ok(Claim::Taken(Some(value.clone()))),
                    None => {
                        map.insert(key.to_owned(), PENDING.to_owned());
                        Ok(Claim::Won)
                    }
                }
            }
        }
    }

    async fn confirm(&self, key: &str, job_id: &str, ttl: Duration) -> Result<(), BackendError> {
        match self {
            Markers::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let _: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(job_id)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error("confirm"))?;
                Ok(())
            }
            Markers::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), job_id.to_owned());
                Ok(())
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), BackendError> {
        match self {
            Markers::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let _: i64 = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error("release"))?;
                Ok(())
            }
            Markers::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
                Ok(())
            }
        }
    }
}

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

/// The backfill of one deployment: its app (configuration, backends), where changes come from, and
/// the markers.
pub struct Backfill {
    app: App,
    changes: Arc<dyn ChangedIds>,
    markers: Markers,
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let markers = match self.markers {
            Markers::Redis { .. } => "redis",
            Markers::Memory(_) => "memory",
        };
        f.debug_struct("Backfill").field("app", &self.app).field("markers", &markers).finish_non_exhaustive()
    }
}

impl Backfill {
    /// From the configuration: changes from `DATABASE_URL` (the embedded dataset when unset), markers
    /// in Redis when `REDIS_URL` is set.
    pub fn new(app: App) -> Result<Self, BackendError> {
        let changes: Arc<dyn ChangedIds> = match &app.config.database_url {
            Some(url) => Arc::new(PgChangedIds::connect(url)?),
            None => Arc::new(DatasetChangedIds),
        };
        Ok(Self::with_changes(app, changes))
    }

    /// With another source of changes (tests).
    pub fn with_changes(app: App, changes: Arc<dyn ChangedIds>) -> Self {
        let markers = match &app.backends.redis {
            Some(conn) => Markers::Redis { conn: conn.clone(), prefix: app.config.redis_key_prefix.clone() },
            None => Markers::Memory(Mutex::new(HashMap::new())),
        };
        Backfill { app, changes, markers }
    }

    /// `TRACE_BACKFILL_WINDOW_SECONDS`.
    pub fn window_length(&self) -> Duration {
        self.app.config.backfill_window
    }

    /// Queues the jobs of `window` that no run has queued yet. A batch that fails is reported and left
    /// unmarked; the run goes on with the others.
    pub async fn run(&self, window: Window) -> Result<Report, BackfillError> {
        let now = Utc::now();
        if window.end > now {
            return Err(BackfillError::NotOver { window, now });
        }
        let stored = self
            .changes
            .changed(&window)
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
        let key = self.markers.key(window, index);
        match self.markers.claim(&key).await {
            Ok(Claim::Won) => {}
            Ok(Claim::Taken(value)) => {
                entry.outcome = Outcome::AlreadySubmitted;
                entry.job_id = value.filter(|v| v != PENDING);
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
        match submit::enqueue(&self.app, &request, queue).await {
            Ok(accepted) => {
                let job_id = accepted.job_id.to_string();
                if let Err(e) = self.markers.confirm(&key, &job_id, self.app.config.job_ttl).await {
                    // The claim stays (until CLAIM_TTL): the job exists, only its marker is short-lived.
                    tracing::warn!(%window, batch = index, job_id, error = %e, "could not record the batch's job");
                }
                entry.outcome = Outcome::Submitted;
                entry.job_id = Some(job_id);
                entry.queue = Some(queue);
            }
            Err(e) => {
                tracing::error!(%window, batch = index, error = %e, "could not queue the batch's job");
                if let Err(e) = self.markers.release(&key).await {
                    tracing::warn!(%window, batch = index, error = %e, "could not release the batch's claim");
                }
                entry.error = Some(e.to_string());
            }
        }
        entry
    }
}

/// Serves the backfill in Lambda: each EventBridge event (the schedule's "Scheduled Event") runs the
/// window ending at its `time`. A run with failed batches answers an error, so that Lambda retries it
/// (the retry queues only the unmarked batches).
pub async fn lambda(backfill: Backfill) -> Result<(), ServeError> {
    let backfill = Arc::new(backfill);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let backfill = backfill.clone();
        async move {
            let window = Window::of_event(&event.payload, backfill.window_length(), Utc::now());
            tracing::info!(%window, time = ?event.payload.time, detail_type = %event.payload.detail_type, "backfill event");
            let report = backfill.run(window).await?;
            if report.failed > 0 {
                return Err(format!(
                    "backfill of {window}: {} of {} batches could not be queued (a retry queues them)",
                    report.failed,
                    report.batches.len()
                )
                .into());
            }
            Ok::<_, lambda_runtime::Error>(report)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use trace_adapters::runtime::Backends;
    use trace_core::Config;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn a_window_ends_at_the_time_truncated_to_its_length() {
        let hour = Duration::from_secs(3600);
        let w = Window::ending_at(at(2026, 3, 12, 9, 20, 0), hour);
        assert_eq!((w.start, w.end), (at(2026, 3, 12, 8, 0, 0), at(2026, 3, 12, 9, 0, 0)));
        assert_eq!(w.key(), "2026-03-12T08:00:00Z/2026-03-12T09:00:00Z");
        // On a boundary, the window that just ended.
        let w = Window::ending_at(at(2026, 3, 12, 9, 0, 0), hour);
        assert_eq!(w.end, at(2026, 3, 12, 9, 0, 0));
        // Every firing time within one period names the same window.
        let day = Duration::from_secs(86_400);
        for t in [at(2025, 1, 2, 0, 0, 0), at(2025, 1, 2, 0, 0, 1), at(2025, 1, 2, 23, 59, 59)] {
            assert_eq!(Window::ending_at(t, day).to_string(), "[2025-01-01T00:00:00Z, 2025-01-02T00:00:00Z)");
        }
        assert!(w.contains(w.start) && !w.contains(w.end));
    }

    #[test]
    fn the_scheduled_event_names_its_window() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/backfill-schedule.json"
        ))
        .expect("events/backfill-schedule.json");
        let event: EventBridgeEvent = serde_json::from_str(&text).expect("an EventBridge event");
        assert_eq!(event.detail_type, "Scheduled Event");
        let w = Window::of_event(&event, Duration::from_secs(3600), Utc::now());
        assert_eq!(w.end, Window::ending_at(event.time.unwrap(), Duration::from_secs(3600)).end);
        assert!(w.end <= event.time.unwrap() && event.time.unwrap() - w.end < chrono::Duration::hours(1));
    }

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
    async fn the_embedded_dataset_changes_by_move_out() {
        // Container i's history rows move out from T0 + 97 i + 3600 s + 600 s on: on the first day
        // (T0 = 2025-01-01), containers up to ~870 have moved out, and none after 86400 / 97.
        let day = Window::ending_at(at(2025, 1, 2, 0, 0, 0), Duration::from_secs(86_400));
        let ids = DatasetChangedIds.changed(&day).await.unwrap();
        assert!(ids.len() > 500, "{}", ids.len());
        let max = ids.iter().map(|id| dataset::parse_container_index(id).unwrap()).max().unwrap();
        assert!(max <= 86_400 / 97, "{max}");
        assert_eq!(ids[0], "CID-0000001");
        // An hour later on: the containers around (start - T0) / 97, the 2-day span of a container before.
        let later = Window::ending_at(at(2026, 3, 12, 9, 20, 0), Duration::from_secs(3600));
        let ids = DatasetChangedIds.changed(&later).await.unwrap();
        let from = (later.start.timestamp() - dataset::T0_UNIX - 2 * 86_400) as u64 / 97;
        let to = (later.end.timestamp() - dataset::T0_UNIX) as u64 / 97;
        assert!(ids.len() > 100, "{}", ids.len());
        for id in &ids {
            assert!((from..=to).contains(&dataset::parse_container_index(id).unwrap()), "{id}");
        }
        // Before T0: nothing.
        let before = Window::ending_at(at(2024, 6, 1, 0, 0, 0), Duration::from_secs(3600));
        assert!(DatasetChangedIds.changed(&before).await.unwrap().is_empty());
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
        let backfill = Backfill::new(App::new(config, backends.clone())).unwrap();
        let window = Window::ending_at(at(2025, 1, 2, 0, 0, 0), Duration::from_secs(86_400));

        let first = backfill.run(window).await.unwrap();
        assert!(first.batches.len() >= 2, "{first:?}");
        assert_eq!(first.submitted, first.batches.len());
        assert_eq!(first.batches.iter().map(|b| b.cid_count).sum::<usize>(), first.changed_ids);
        assert!(first.batches.iter().all(|b| b.cid_count <= 400));
        assert_eq!(backends.jobs.list_recent(None, 200).await.unwrap().len(), first.batches.len());

        let second = backfill.run(window).await.unwrap();
        assert_eq!((second.submitted, second.already_submitted), (0, first.batches.len()));
        let job_ids = |r: &Report| r.batches.iter().map(|b| b.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(job_ids(&second), job_ids(&first));
        assert_eq!(backends.jobs.list_recent(None, 200).await.unwrap().len(), first.batches.len());

        let open = Window::ending_at(Utc::now() + chrono::Duration::hours(2), Duration::from_secs(3600));
        assert!(matches!(backfill.run(open).await, Err(BackfillError::NotOver { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn uuid_like() -> String {
        format!("{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or_default())
    }
}
