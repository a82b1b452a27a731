//! Jobs split into shards, on the embedded stand-ins: the result equals the same job run whole,
//! whatever order the shards finish in and whichever shard is taken over or fails and is retried.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use trace_core::job::JobStatus;
use trace_core::layout::{self, Manifest};
use trace_core::message::ShardMessage;
use trace_core::ports::Delivery;
use trace_core::{JobId, Principal};

use super::lease::{self, Claim};
use super::{handle_delivery, Disposition};
use crate::testing::{app, submitted};
use crate::App;

const SMALL: [(&str, &str); 5] = [
    ("TRACE_CHUNK_RECORDS", "700"),
    ("TRACE_DB_ID_BATCH_SIZE", "20"),
    ("TRACE_SHARD_MIN_IDS", "100"),
    ("TRACE_MAX_SHARDS", "3"),
    ("TRACE_LIGHT_WORKER_CONCURRENCY", "4"),
];

async fn run(app: &App, delivery: &Delivery) -> Disposition {
    let (_, shutdown) = watch::channel(false);
    handle_delivery(app, &app.backends.light.clone(), delivery, shutdown, None).await
}

/// The job's result as a reader sees it: the manifest's domains, then each chunk's NDJSON in order;
/// and the manifest's aggregation.
async fn result(app: &App, job: &JobId) -> (Vec<(String, Vec<u8>)>, Option<serde_json::Value>) {
    let manifest: Manifest =
        serde_json::from_slice(&app.backends.store.get(&layout::manifest_key(job)).await.unwrap()).unwrap();
    assert!(manifest.is_consistent());
    let mut out = Vec::new();
    for d in &manifest.domains {
        let mut lines = Vec::new();
        for c in &d.chunks {
            lines.extend_from_slice(&c.decode(app.backends.store.get(&c.key).await.unwrap()).unwrap());
        }
        out.push((d.domain.to_string(), lines));
    }
    (out, manifest.aggregation)
}

/// The stored chunk keys are exactly the manifest's, and no checkpoint is left.
async fn only_listed_chunks(app: &App, job: &JobId) {
    crate::testing::listed_and_stored(app, job).await;
    assert!(app.backends.store.list(&layout::checkpoint_prefix(job)).await.unwrap().is_empty());
}

/// The same request run whole (one shard).
async fn whole(
    ids: u64,
    domains: &[&str],
    profile: &str,
) -> (Vec<(String, Vec<u8>)>, Option<serde_json::Value>) {
    let app = app(&[("TRACE_CHUNK_RECORDS", "700"), ("TRACE_DB_ID_BATCH_SIZE", "20")]).await;
    let (job, deliveries) = submitted(&app, ids, domains, profile).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(run(&app, &deliveries[0]).await, Disposition::Delete);
    result(&app, &job).await
}

fn shard_of(delivery: &Delivery) -> u32 {
    ShardMessage::parse(&delivery.body).unwrap().shard
}

/// Three shards finishing in the order 2, 0, 1: the job's result is line for line the whole run's,
/// its status sums the shards while they run and says how many are done.
#[tokio::test]
async fn a_sharded_job_finishing_out_of_order_equals_the_job_run_whole() {
    let domains = ["history", "materials", "holds"];
    let app = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&app, 300, &domains, "query_tool").await;
    assert_eq!(deliveries.len(), 3, "three shards");
    deliveries.sort_by_key(shard_of);
    let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
    assert_eq!((meta.shards, meta.status), (3, JobStatus::Queued));
    for (i, shard) in [2usize, 0].into_iter().enumerate() {
        assert_eq!(run(&app, &deliveries[shard]).await, Disposition::Delete);
        let status = crate::status::status(&app, &Principal::local(), &job.to_string()).await.unwrap();
        assert_eq!(status.status, JobStatus::Started, "{status:?}");
        assert_eq!(status.shards_done, Some(i as u32 + 1));
        assert_eq!(status.progress_detail.ids_done, 100 * (i as u64 + 1));
        assert!(
            app.backends.store.get(&layout::manifest_key(&job)).await.is_err(),
            "no manifest before the last"
        );
    }
    assert_eq!(run(&app, &deliveries[1]).await, Disposition::Delete);
    let status = crate::status::status(&app, &Principal::local(), &job.to_string()).await.unwrap();
    assert_eq!((status.status, status.shards, status.shards_done), (JobStatus::Finished, 3, Some(3)));
    assert_eq!(result(&app, &job).await, whole(300, &domains, "query_tool").await);
    only_listed_chunks(&app, &job).await;
    // The history lists the job, not its shards.
    let history = app.backends.jobs.list_recent(None, None, 10).await.unwrap();
    assert_eq!(history.iter().map(|m| m.job_id).collect::<Vec<_>>(), [job]);
}

/// The MSD profile split into shards: each shard hands on its mergeable part of the aggregation and
/// the reduce merges them into exactly the whole run's aggregation.
#[tokio::test]
async fn a_sharded_msd_job_aggregates_exactly_as_the_job_run_whole() {
    let domains = ["upstream_history", "downstream_rejects"];
    let app = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&app, 300, &domains, "mid_section_defect").await;
    assert_eq!(deliveries.len(), 3);
    deliveries.sort_by_key(shard_of);
    for shard in [1usize, 2, 0] {
        assert_eq!(run(&app, &deliveries[shard]).await, Disposition::Delete);
    }
    let (sharded, reference) = (result(&app, &job).await, whole(300, &domains, "mid_section_defect").await);
    assert!(sharded.1.is_some(), "an aggregation");
    assert_eq!(sharded, reference);
}

/// A shard whose worker died (its lease expired) is taken over by its message's next delivery: only
/// that shard runs again (attempt 2), and the job's result is still the whole run's.
#[tokio::test]
async fn a_shard_whose_worker_died_is_taken_over_alone() {
    let domains = ["history", "holds"];
    let app = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&app, 300, &domains, "query_tool").await;
    deliveries.sort_by_key(shard_of);
    // Shard 1's first worker claims it and dies.
    let message = ShardMessage::parse(&deliveries[1].body).unwrap();
    let Ok(Claim::Run(_)) = lease::claim(&app, &message).await else { panic!("claimed") };
    let shard = message.lease_id();
    let meta = app.backends.jobs.get(&shard).await.unwrap().unwrap();
    let renewed = Some(Utc::now() - chrono::Duration::hours(1));
    app.backends.jobs.update_progress(&shard, meta.guard(), &meta.progress, renewed).await.unwrap();
    assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Started);
    for d in [&deliveries[0], &deliveries[2], &deliveries[1]] {
        assert_eq!(run(&app, d).await, Disposition::Delete);
    }
    let mut attempts = Vec::new();
    for i in 0..3 {
        attempts.push(app.backends.jobs.get(&job.shard(i)).await.unwrap().unwrap().attempt);
    }
    assert_eq!(attempts, [1, 2, 1]);
    assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Finished);
    assert_eq!(result(&app, &job).await, whole(300, &domains, "query_tool").await);
    only_listed_chunks(&app, &job).await;
}

/// After a retry of a 300-id job: the queue holds shard 0's message only, and running it finishes
/// the job with the whole run's result and only listed chunks.
async fn retried_shard_0_finishes_as_the_whole_run(app: &App, job: &JobId, domains: &[&str]) {
    let again =
        app.backends.light.receive(10, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.iter().map(shard_of).collect::<Vec<_>>(), [0]);
    assert_eq!(run(app, &again[0]).await, Disposition::Delete);
    assert_eq!(app.backends.jobs.get(job).await.unwrap().unwrap().status, JobStatus::Finished);
    assert_eq!(result(app, job).await, whole(300, domains, "query_tool").await);
    only_listed_chunks(app, job).await;
}

/// A shard that fails for good fails its job; its siblings finish; the owner's retry re-runs only
/// the failed shard and the job finishes with the whole run's result. A cancel stops every shard.
#[tokio::test]
async fn a_failed_shard_fails_its_job_and_a_retry_runs_it_alone() {
    let domains = ["history"];
    let base = app(&[
        ("TRACE_MAX_RECEIVE_COUNT", "1"),
        ("TRACE_RETRY_WINDOW_SECONDS", "1"),
        SMALL[0],
        SMALL[1],
        SMALL[2],
        SMALL[3],
        SMALL[4],
    ])
    .await;
    let (job, mut deliveries) = submitted(&base, 300, &domains, "query_tool").await;
    deliveries.sort_by_key(shard_of);
    // Shard 0 meets a database down throughout its only delivery.
    let broken = crate::testing::flaky_source(&base, 1_000);
    assert_eq!(run(&broken, &deliveries[0]).await, Disposition::Retry { after: Duration::ZERO });
    let meta = base.backends.jobs.get(&job).await.unwrap().unwrap();
    assert_eq!(
        (meta.status, meta.error.map(|e| e.code)),
        (JobStatus::Failed, Some("SOURCE_ERROR".to_owned()))
    );
    // Its siblings run to their end; the job stays failed.
    for d in &deliveries[1..] {
        assert_eq!(run(&base, d).await, Disposition::Delete);
    }
    assert_eq!(base.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Failed);
    // The retry sends shard 0's message only.
    let retried = crate::status::retry(&base, &Principal::local(), &job.to_string()).await.unwrap();
    assert_eq!(retried.status, JobStatus::Queued);
    retried_shard_0_finishes_as_the_whole_run(&base, &job, &domains).await;
}

/// A shard that runs out of time fails its job and removes only its own part (its chunks and
/// checkpoint): its siblings' finished parts stay, and the retry, which runs that shard alone, gives
/// the whole run's result.
#[tokio::test]
async fn a_shard_that_times_out_removes_only_its_own_part() {
    let domains = ["history", "holds"];
    let base = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&base, 300, &domains, "query_tool").await;
    deliveries.sort_by_key(shard_of);
    for d in &deliveries[1..] {
        assert_eq!(run(&base, d).await, Disposition::Delete);
    }
    let siblings = base.backends.store.list(&layout::result_prefix(&job)).await.unwrap();
    assert!(!siblings.is_empty());
    // Shard 0 left a chunk of an earlier attempt behind, then its run meets the job timeout.
    let slot = layout::ChunkSlot { shard: 0, chunk: 0, attempt: 1 };
    let own =
        layout::chunk_key(&job, trace_core::Domain::History, slot, trace_core::encoding::ChunkEncoding::Gzip);
    base.backends.store.put(&own, bytes::Bytes::from_static(b"partial")).await.unwrap();
    let mut config = (*base.config).clone();
    config.job_timeout = Duration::ZERO;
    let timed = App { config: std::sync::Arc::new(config), ..base.clone() };
    assert_eq!(run(&timed, &deliveries[0]).await, Disposition::Delete);
    let meta = base.backends.jobs.get(&job).await.unwrap().unwrap();
    assert_eq!(
        (meta.status, meta.error.map(|e| e.code)),
        (JobStatus::Failed, Some("JOB_TIMEOUT".to_owned()))
    );
    let left = base.backends.store.list(&layout::result_prefix(&job)).await.unwrap();
    let keys =
        |objects: &[trace_core::ports::ObjectInfo]| objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&left), keys(&siblings), "the siblings' chunks stay, shard 0's are gone");
    crate::status::retry(&base, &Principal::local(), &job.to_string()).await.unwrap();
    retried_shard_0_finishes_as_the_whole_run(&base, &job, &domains).await;
}

/// A cancel of a job split into shards stops each running shard at its next heartbeat, and a shard
/// whose message comes after the cancel does not run.
#[tokio::test]
async fn a_cancel_stops_every_shard() {
    let app = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&app, 300, &["history"], "query_tool").await;
    deliveries.sort_by_key(shard_of);
    let message = ShardMessage::parse(&deliveries[0].body).unwrap();
    let Ok(Claim::Run(claimed)) = lease::claim(&app, &message).await else { panic!("claimed") };
    let running = super::lease::Lease::new(&claimed);
    crate::status::cancel(&app, &Principal::local(), &job.to_string()).await.unwrap();
    assert!(running.job_cancelled(&app).await, "the running shard's heartbeat sees the cancel");
    assert_eq!(run(&app, &deliveries[1]).await, Disposition::Delete);
    assert!(app.backends.jobs.get(&job.shard(1)).await.unwrap().is_none(), "shard 1 never ran");
    assert!(app.backends.store.list(&layout::result_prefix(&job)).await.unwrap().is_empty());
}

/// The reaper never fails a job split into shards for its own (absent) heartbeat, only for a shard
/// whose lease has long expired: then the shard and the job fail with `JOB_ORPHANED`.
#[tokio::test]
async fn the_reaper_judges_a_sharded_job_by_its_shards_leases() {
    let app = app(&SMALL).await;
    let (job, mut deliveries) = submitted(&app, 300, &["history"], "query_tool").await;
    deliveries.sort_by_key(shard_of);
    let message = ShardMessage::parse(&deliveries[1].body).unwrap();
    let Ok(Claim::Run(_)) = lease::claim(&app, &message).await else { panic!("claimed") };
    // The job started an hour ago (as far as its own record says); its shard's lease is fresh.
    let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
    let old = trace_core::job::JobMeta {
        started_at: Some(Utc::now() - chrono::Duration::hours(1)),
        ..meta.clone()
    };
    app.backends.jobs.compare_and_set(meta.guard(), &old).await.unwrap();
    assert_eq!(crate::reaper::sweep(&app).await.unwrap().orphaned, 0);
    assert_eq!(app.backends.jobs.get(&job).await.unwrap().unwrap().status, JobStatus::Started);
    // The shard's worker died an hour ago.
    let shard = message.lease_id();
    let record = app.backends.jobs.get(&shard).await.unwrap().unwrap();
    let renewed = Some(Utc::now() - chrono::Duration::hours(1));
    app.backends.jobs.update_progress(&shard, record.guard(), &record.progress, renewed).await.unwrap();
    assert_eq!(crate::reaper::sweep(&app).await.unwrap().orphaned, 1);
    let failed = app.backends.jobs.get(&job).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.error.map(|e| e.code)),
        (JobStatus::Failed, Some("JOB_ORPHANED".to_owned()))
    );
}
