//! Helpers of the unit tests: an [`App`] over the embedded stand-ins.

use trace_adapters::runtime::{Backends, BackendsFromConfig};
use trace_core::Config;

use crate::App;

/// The configuration of `vars`, open authentication and the local store in `dir` unless `vars` say.
pub(crate) fn config(vars: &[(&str, &str)], dir: &str) -> Config {
    Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
        Some((_, v)) => Some(v.to_string()),
        None if name == "TRACE_AUTH" => Some("open".to_owned()),
        None if name == "TRACE_LOCAL_DIR" => Some(dir.to_owned()),
        None => None,
    })
    .unwrap()
}

/// An app over the embedded stand-ins (the reference dataset) with `vars`, its store in a new folder.
pub(crate) async fn app(vars: &[(&str, &str)]) -> App {
    let dir = std::env::temp_dir().join(format!("trace-service-test-{}", uuid::Uuid::new_v4().simple()));
    let config = config(vars, &dir.display().to_string());
    App::new(config.clone(), Backends::from_config(&config).await.unwrap())
}

/// The same app after its job store lost everything (a Redis flush): the object store, queues and
/// source are kept.
pub(crate) fn flushed(app: &App) -> App {
    let mut backends = app.backends.clone();
    backends.jobs = std::sync::Arc::new(trace_adapters::jobs::memory::MemoryJobStore::new());
    App::new((*app.config).clone(), backends)
}

/// The manifest of finished `job`, after checking that the stored chunks are exactly the ones it
/// lists (sorted keys of both returned: (stored, listed)).
pub(crate) async fn listed_and_stored(
    app: &App,
    job: &trace_core::JobId,
) -> (trace_core::layout::Manifest, Vec<String>) {
    use trace_core::layout;
    let store = &app.backends.store;
    let manifest: layout::Manifest =
        serde_json::from_slice(&store.get(&layout::manifest_key(job)).await.unwrap()).unwrap();
    let mut stored: Vec<String> =
        store.list(&layout::result_prefix(job)).await.unwrap().into_iter().map(|o| o.key).collect();
    let mut listed: Vec<String> =
        manifest.domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.clone())).collect();
    stored.sort();
    listed.sort();
    assert_eq!(stored, listed, "the stored chunks are exactly the manifest's");
    (manifest, listed)
}

/// A job store that is down: every call fails.
pub(crate) struct DownJobStore;

fn down() -> trace_core::ports::JobStoreError {
    trace_core::ports::BackendError::new("redis", "call", "connection refused").into()
}

#[async_trait::async_trait]
impl trace_core::ports::JobStore for DownJobStore {
    async fn create(
        &self,
        _: &trace_core::job::JobMeta,
        _: std::time::Duration,
    ) -> Result<(), trace_core::ports::JobStoreError> {
        Err(down())
    }
    async fn get(
        &self,
        _: &trace_core::JobId,
    ) -> Result<Option<trace_core::job::JobMeta>, trace_core::ports::JobStoreError> {
        Err(down())
    }
    async fn compare_and_set(
        &self,
        _: trace_core::job::Guard,
        _: &trace_core::job::JobMeta,
    ) -> Result<trace_core::ports::CasOutcome, trace_core::ports::JobStoreError> {
        Err(down())
    }
    async fn update_progress(
        &self,
        _: &trace_core::JobId,
        _: trace_core::job::Guard,
        _: &trace_core::job::Progress,
        _: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<trace_core::ports::CasOutcome, trace_core::ports::JobStoreError> {
        Err(down())
    }
    async fn list_recent(
        &self,
        _: Option<&str>,
        _: Option<trace_core::job::JobStatus>,
        _: usize,
    ) -> Result<Vec<trace_core::job::JobMeta>, trace_core::ports::JobStoreError> {
        Err(down())
    }
    async fn refresh_ttl(
        &self,
        _: &trace_core::JobId,
        _: std::time::Duration,
    ) -> Result<bool, trace_core::ports::JobStoreError> {
        Err(down())
    }
}

/// The same app with its job store down.
pub(crate) fn jobs_down(app: &App) -> App {
    let mut backends = app.backends.clone();
    backends.jobs = std::sync::Arc::new(DownJobStore);
    App::new((*app.config).clone(), backends)
}

/// A job store whose first compare-and-set to `finished` applies but loses its reply (a Redis that
/// stalled past the client's timeout and then ran the command); otherwise `inner`.
pub(crate) struct LostFinishReply {
    inner: std::sync::Arc<dyn trace_core::ports::JobStore>,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl trace_core::ports::JobStore for LostFinishReply {
    async fn create(
        &self,
        meta: &trace_core::job::JobMeta,
        ttl: std::time::Duration,
    ) -> Result<(), trace_core::ports::JobStoreError> {
        self.inner.create(meta, ttl).await
    }
    async fn get(
        &self,
        id: &trace_core::JobId,
    ) -> Result<Option<trace_core::job::JobMeta>, trace_core::ports::JobStoreError> {
        self.inner.get(id).await
    }
    async fn compare_and_set(
        &self,
        guard: trace_core::job::Guard,
        next: &trace_core::job::JobMeta,
    ) -> Result<trace_core::ports::CasOutcome, trace_core::ports::JobStoreError> {
        let outcome = self.inner.compare_and_set(guard, next).await?;
        let finish = next.status == trace_core::job::JobStatus::Finished;
        if finish && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(trace_core::ports::BackendError::new("redis", "compare_and_set", "timed out").into());
        }
        Ok(outcome)
    }
    async fn update_progress(
        &self,
        id: &trace_core::JobId,
        guard: trace_core::job::Guard,
        progress: &trace_core::job::Progress,
        heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<trace_core::ports::CasOutcome, trace_core::ports::JobStoreError> {
        self.inner.update_progress(id, guard, progress, heartbeat).await
    }
    async fn list_recent(
        &self,
        owner: Option<&str>,
        status: Option<trace_core::job::JobStatus>,
        limit: usize,
    ) -> Result<Vec<trace_core::job::JobMeta>, trace_core::ports::JobStoreError> {
        self.inner.list_recent(owner, status, limit).await
    }
    async fn refresh_ttl(
        &self,
        id: &trace_core::JobId,
        ttl: std::time::Duration,
    ) -> Result<bool, trace_core::ports::JobStoreError> {
        self.inner.refresh_ttl(id, ttl).await
    }
}

/// The same app whose job store loses the reply of the first finish (see [`LostFinishReply`]).
pub(crate) fn finish_reply_lost(app: &App) -> App {
    let mut backends = app.backends.clone();
    backends.jobs =
        std::sync::Arc::new(LostFinishReply { inner: app.backends.jobs.clone(), lost: Default::default() });
    App::new((*app.config).clone(), backends)
}

/// An event source that waits `delay` before each query and counts the rows it hands out.
pub(crate) struct SlowSource {
    pub(crate) inner: std::sync::Arc<dyn trace_core::ports::EventSource>,
    pub(crate) delay: std::time::Duration,
    pub(crate) rows: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

struct CountingCursor {
    inner: Box<dyn trace_core::ports::RowCursor>,
    rows: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl trace_core::ports::EventSource for SlowSource {
    async fn open(
        &self,
        domain: trace_core::Domain,
        ids: &[trace_core::ContainerId],
    ) -> Result<Box<dyn trace_core::ports::RowCursor>, trace_core::ports::SourceError> {
        tokio::time::sleep(self.delay).await;
        let inner = self.inner.open(domain, ids).await?;
        Ok(Box::new(CountingCursor { inner, rows: self.rows.clone() }))
    }

    /// A count reads no row.
    async fn count(
        &self,
        domain: trace_core::Domain,
        ids: &[trace_core::ContainerId],
    ) -> Result<u64, trace_core::ports::SourceError> {
        tokio::time::sleep(self.delay).await;
        self.inner.count(domain, ids).await
    }
}

#[async_trait::async_trait]
impl trace_core::ports::RowCursor for CountingCursor {
    async fn next_batch(
        &mut self,
    ) -> Result<Option<trace_core::record::RowBatch>, trace_core::ports::SourceError> {
        let batch = self.inner.next_batch().await?;
        if let Some(b) = &batch {
            self.rows.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(batch)
    }
}

/// The same app reading through a [`SlowSource`] of `delay` per query; the counter of rows read.
pub(crate) fn slow_source(
    app: &App,
    delay: std::time::Duration,
) -> (App, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let rows = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut backends = app.backends.clone();
    backends.source =
        std::sync::Arc::new(SlowSource { inner: app.backends.source.clone(), delay, rows: rows.clone() });
    (App::new((*app.config).clone(), backends), rows)
}

/// An event source whose first `failures` queries fail (a database outage), then reads `inner`.
pub(crate) struct FlakySource {
    pub(crate) inner: std::sync::Arc<dyn trace_core::ports::EventSource>,
    pub(crate) failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl trace_core::ports::EventSource for FlakySource {
    async fn open(
        &self,
        domain: trace_core::Domain,
        ids: &[trace_core::ContainerId],
    ) -> Result<Box<dyn trace_core::ports::RowCursor>, trace_core::ports::SourceError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(
                trace_core::ports::BackendError::new("postgres", "query", "connection refused").into()
            );
        }
        self.inner.open(domain, ids).await
    }

    /// Counts are not what fails here (a failed count only costs a follower its early total).
    async fn count(
        &self,
        domain: trace_core::Domain,
        ids: &[trace_core::ContainerId],
    ) -> Result<u64, trace_core::ports::SourceError> {
        self.inner.count(domain, ids).await
    }
}

/// The same app whose source fails its first `failures` queries.
pub(crate) fn flaky_source(app: &App, failures: u32) -> App {
    let mut backends = app.backends.clone();
    backends.source = std::sync::Arc::new(FlakySource {
        inner: app.backends.source.clone(),
        failures: std::sync::atomic::AtomicU32::new(failures),
    });
    App::new((*app.config).clone(), backends)
}

/// A job of `ids` ids over `domains` (profile `profile`), submitted; its id and every message sent.
pub(crate) async fn submitted(
    app: &App,
    ids: u64,
    domains: &[&str],
    profile: &str,
) -> (trace_core::JobId, Vec<trace_core::ports::Delivery>) {
    let ids: Vec<String> = (1..=ids).map(trace_dataset::container_id).collect();
    let body = serde_json::json!({ "container_ids": ids, "domains": domains, "profile": profile });
    let request = trace_core::TraceRequest::parse(body.to_string().as_bytes(), usize::MAX).unwrap();
    let accepted =
        crate::submit::enqueue(app, &trace_core::Principal::local(), &request, trace_core::QueueKind::Light)
            .await
            .unwrap();
    let deliveries = app
        .backends
        .light
        .receive(10, std::time::Duration::from_secs(1), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    (accepted.job_id, deliveries)
}
