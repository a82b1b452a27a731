//! The `JobStore` contract.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use trace_core::job::{JobError, JobMeta, JobStatus, Progress};
use trace_core::ports::{CasOutcome, JobStore, JobStoreError};
use trace_core::{Domain, JobId, Principal, Profile, QueueKind};

const TTL: Duration = Duration::from_secs(600);

/// The owner of the suite's jobs unless a property says otherwise.
const OWNER: &str = "key:contract";

fn job(created_offset_ms: i64) -> JobMeta {
    owned_job(created_offset_ms, &Principal::new(OWNER, None))
}

fn owned_job(created_offset_ms: i64, owner: &Principal) -> JobMeta {
    JobMeta::new(
        JobId::new(),
        Profile::MidSectionDefect,
        25_000,
        vec![Domain::History, Domain::Rejects],
        QueueKind::Heavy,
        Utc::now() + Span::milliseconds(created_offset_ms),
    )
    .owned_by(owner)
}

fn ids(jobs: Vec<JobMeta>) -> Vec<JobId> {
    jobs.into_iter().map(|m| m.job_id).collect()
}

/// Created jobs read back; a second create of an id is refused; an unknown id reads as none.
pub async fn create_and_read(s: &dyn JobStore) {
    let meta = job(0);
    s.create(&meta, TTL).await.expect("create");
    assert_eq!(s.get(&meta.job_id).await.expect("get"), Some(meta.clone()));
    assert!(matches!(s.create(&meta, TTL).await, Err(JobStoreError::AlreadyExists(id)) if id == meta.job_id));
    assert_eq!(s.get(&JobId::new()).await.expect("get"), None);
}

/// Creates `meta` and starts it: queued -> started with the right guard applies, a second time with
/// the same guard conflicts.
async fn started(s: &dyn JobStore, meta: &JobMeta) -> JobMeta {
    s.create(meta, TTL).await.expect("create");
    let now = Utc::now();
    let started = meta.transitioned(JobStatus::Started, now, None).expect("allowed");
    assert_eq!(s.compare_and_set(meta.guard(), &started).await.expect("cas"), CasOutcome::Applied);
    match s.compare_and_set(meta.guard(), &started).await.expect("cas") {
        CasOutcome::Conflict(current) => assert_eq!(current.status, JobStatus::Started),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(s.get(&meta.job_id).await.expect("get"), Some(started.clone()));
    started
}

/// A compare-and-set applies once per guard; of a job that does not exist it is `Missing`.
pub async fn compare_and_set(s: &dyn JobStore) {
    started(s, &job(0)).await;
    let missing = job(0);
    assert_eq!(s.compare_and_set(missing.guard(), &missing).await.expect("cas"), CasOutcome::Missing);
}

/// Starts `meta` and records progress under the right guard; refused under a stale one. The job as
/// read back.
async fn with_progress(s: &dyn JobStore, meta: &JobMeta) -> (JobMeta, Progress) {
    let started = started(s, meta).await;
    let mut progress = Progress::start(25_000);
    progress.domain = Some(Domain::Rejects);
    progress.records_written = 12_345;
    progress.set_ids_done(5_000);
    let renewed = Utc::now() - Span::seconds(5);
    assert_eq!(
        s.update_progress(&meta.job_id, started.guard(), &progress, Some(renewed)).await.expect("progress"),
        CasOutcome::Applied
    );
    let read = s.get(&meta.job_id).await.expect("get").expect("exists");
    assert_eq!(read.progress, progress);
    assert_eq!(read.heartbeat_at, Some(renewed), "the lease's renewal as given");
    // Progress alone does not renew the lease.
    let mut more = progress.clone();
    more.records_written += 1;
    assert_eq!(
        s.update_progress(&meta.job_id, started.guard(), &more, None).await.expect("progress"),
        CasOutcome::Applied
    );
    let again = s.get(&meta.job_id).await.expect("get").expect("exists");
    assert_eq!((again.progress.records_written, again.heartbeat_at), (more.records_written, Some(renewed)));
    assert_eq!(
        s.update_progress(&meta.job_id, started.guard(), &progress, None).await.expect("progress"),
        CasOutcome::Applied
    );
    let read = s.get(&meta.job_id).await.expect("get").expect("exists");
    assert!(matches!(
        s.update_progress(&meta.job_id, meta.guard(), &progress, None).await.expect("progress"),
        CasOutcome::Conflict(_)
    ));
    assert_eq!(
        s.update_progress(&JobId::new(), started.guard(), &progress, Some(Utc::now()))
            .await
            .expect("progress"),
        CasOutcome::Missing
    );
    (read, progress)
}

/// Progress is recorded under the job's guard only.
pub async fn progress_under_its_guard(s: &dyn JobStore) {
    with_progress(s, &job(0)).await;
}

/// Starts and cancels `meta`: a cancel makes the worker's next progress update fail (that is how it
/// learns to stop).
async fn cancelled(s: &dyn JobStore, meta: &JobMeta) {
    let (read, progress) = with_progress(s, meta).await;
    let started_guard = read.guard();
    let cancelled = read.transitioned(JobStatus::Cancelled, Utc::now(), None).expect("allowed");
    assert_eq!(s.compare_and_set(read.guard(), &cancelled).await.expect("cas"), CasOutcome::Applied);
    match s.update_progress(&meta.job_id, started_guard, &progress, Some(Utc::now())).await.expect("progress")
    {
        CasOutcome::Conflict(current) => assert_eq!(current.status, JobStatus::Cancelled),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// After a cancel, progress updates conflict.
pub async fn a_cancel_stops_progress(s: &dyn JobStore) {
    cancelled(s, &job(0)).await;
}

/// Creates `other` and fails it: failed keeps its error.
async fn failed(s: &dyn JobStore, other: &JobMeta) {
    s.create(other, TTL).await.expect("create");
    let error = JobError { code: "JOB_TIMEOUT".into(), message: "ran 900 s".into() };
    let failed = other.transitioned(JobStatus::Failed, Utc::now(), Some(error.clone())).expect("allowed");
    assert_eq!(s.compare_and_set(other.guard(), &failed).await.expect("cas"), CasOutcome::Applied);
    assert_eq!(s.get(&other.job_id).await.expect("get").expect("exists").error, Some(error));
}

/// A failed job keeps its error.
pub async fn failed_keeps_its_error(s: &dyn JobStore) {
    failed(s, &job(5)).await;
}

/// History: newest first, filtered, limited (a cancelled, a failed and a queued job).
pub async fn history_newest_first(s: &dyn JobStore) {
    let (meta, other, third) = (job(0), job(5), job(10));
    cancelled(s, &meta).await;
    failed(s, &other).await;
    s.create(&third, TTL).await.expect("create");
    let recent: Vec<_> =
        s.list_recent(None, None, 10).await.expect("list").into_iter().map(|m| m.job_id).collect();
    assert_eq!(recent, [third.job_id, other.job_id, meta.job_id]);
    let queued: Vec<_> = s
        .list_recent(None, Some(JobStatus::Queued), 10)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.job_id)
        .collect();
    assert_eq!(queued, [third.job_id]);
    assert_eq!(s.list_recent(None, None, 2).await.expect("list").len(), 2);
    assert!(s.list_recent(None, Some(JobStatus::Finished), 10).await.expect("list").is_empty());
}

/// A job's owner and tenant read back as created, and no later change (a start, progress, a cancel)
/// gives the job to anyone else, even when the new state names another owner.
pub async fn owner_and_tenant_round_trip(s: &dyn JobStore) {
    let alice = Principal::new("arn:aws:iam::123456789012:user/alice", Some("123456789012".into()));
    let meta = owned_job(0, &alice);
    s.create(&meta, TTL).await.expect("create");
    let read = s.get(&meta.job_id).await.expect("get").expect("exists");
    assert_eq!((read.owner.as_str(), read.tenant.as_deref()), (alice.id(), alice.tenant()));
    let untenanted = owned_job(0, &Principal::new("key:bob", None));
    s.create(&untenanted, TTL).await.expect("create");
    let read = s.get(&untenanted.job_id).await.expect("get").expect("exists");
    assert_eq!((read.owner.as_str(), read.tenant), ("key:bob", None));

    let mut started = meta.transitioned(JobStatus::Started, Utc::now(), None).expect("allowed");
    started.owner = "key:mallory".into();
    started.tenant = None;
    assert_eq!(s.compare_and_set(meta.guard(), &started).await.expect("cas"), CasOutcome::Applied);
    let progress = Progress::start(25_000);
    assert_eq!(
        s.update_progress(&meta.job_id, started.guard(), &progress, None).await.expect("progress"),
        CasOutcome::Applied
    );
    let read = s.get(&meta.job_id).await.expect("get").expect("exists");
    assert_eq!(read.status, JobStatus::Started);
    assert_eq!((read.owner.as_str(), read.tenant.as_deref()), (alice.id(), alice.tenant()));
    assert_eq!(ids(s.list_recent(Some("key:mallory"), None, 10).await.expect("list")), []);
}

/// The history of an owner shows only its jobs, newest first, filtered and limited like the whole
/// history; an owner without jobs has an empty one.
pub async fn the_history_of_an_owner_shows_only_its_jobs(s: &dyn JobStore) {
    let (alice, bob) = (Principal::new("key:alice", None), Principal::new("key:bob", Some("acme".into())));
    let a1 = owned_job(0, &alice);
    let b1 = owned_job(5, &bob);
    let a2 = owned_job(10, &alice);
    let b2 = owned_job(15, &bob);
    for meta in [&a1, &b1, &a2, &b2] {
        s.create(meta, TTL).await.expect("create");
    }
    let cancelled = a2.transitioned(JobStatus::Cancelled, Utc::now(), None).expect("allowed");
    assert_eq!(s.compare_and_set(a2.guard(), &cancelled).await.expect("cas"), CasOutcome::Applied);
    // A job split into shards: its shards' records read back as written, and are never listed.
    let a3 = owned_job(20, &alice).split_into(3);
    s.create(&a3, TTL).await.expect("create");
    let shard = a3.shard_record(2, 8_000);
    s.create(&shard, TTL).await.expect("create a shard's record");
    let read = s.get(&a3.job_id.shard(2)).await.expect("get").expect("the shard's record");
    assert_eq!((read.parent, read.cid_count, read.owner.as_str()), (Some(a3.job_id), 8_000, alice.id()));
    assert_eq!(s.get(&a3.job_id).await.expect("get").expect("the job").shards, 3);
    let mine = ids(s.list_recent(Some(alice.id()), None, 10).await.expect("list"));
    assert_eq!(mine, [a3.job_id, a2.job_id, a1.job_id], "shard records are not jobs of the history");
    assert!(ids(s.list_recent(None, None, 100).await.expect("list")).iter().all(|id| *id != shard.job_id));
    s.compare_and_set(a3.guard(), &a3.transitioned(JobStatus::Cancelled, Utc::now(), None).expect("allowed"))
        .await
        .expect("cas");

    assert_eq!(ids(s.list_recent(Some(bob.id()), None, 10).await.expect("list")), [b2.job_id, b1.job_id]);
    assert_eq!(ids(s.list_recent(Some(alice.id()), None, 1).await.expect("list")), [a3.job_id]);
    assert_eq!(
        ids(s.list_recent(Some(alice.id()), Some(JobStatus::Queued), 10).await.expect("list")),
        [a1.job_id]
    );
    assert_eq!(ids(s.list_recent(Some(bob.id()), Some(JobStatus::Cancelled), 10).await.expect("list")), []);
    assert_eq!(ids(s.list_recent(Some("key:carol"), None, 10).await.expect("list")), []);
    // An owner's id is matched exactly, never as a prefix or a pattern.
    assert_eq!(ids(s.list_recent(Some("key:ali"), None, 10).await.expect("list")), []);
    assert_eq!(ids(s.list_recent(Some(""), None, 10).await.expect("list")), []);
}

/// The history without an owner (an admin's) shows every owner's jobs, newest first.
pub async fn an_admin_s_history_shows_all(s: &dyn JobStore) {
    let (alice, bob) = (Principal::new("key:alice", None), Principal::new("key:bob", None));
    let system = Principal::new("system:backfill", None);
    let a = owned_job(0, &alice);
    let b = owned_job(5, &bob);
    let c = owned_job(10, &system);
    for meta in [&a, &b, &c] {
        s.create(meta, TTL).await.expect("create");
    }
    assert_eq!(ids(s.list_recent(None, None, 10).await.expect("list")), [c.job_id, b.job_id, a.job_id]);
    assert_eq!(ids(s.list_recent(None, None, 2).await.expect("list")), [c.job_id, b.job_id]);
}

/// Jobs expire after their TTL, a refresh restarts it, and expired jobs leave the history.
pub async fn ttl(s: &dyn JobStore) {
    let short = job(0);
    let kept = job(1);
    s.create(&short, Duration::from_secs(1)).await.expect("create");
    s.create(&kept, Duration::from_secs(1)).await.expect("create");
    assert!(s.refresh_ttl(&kept.job_id, Duration::from_secs(60)).await.expect("refresh"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get(&short.job_id).await.expect("get"), None, "job outlived its TTL");
    assert!(s.get(&kept.job_id).await.expect("get").is_some(), "refreshed job expired");
    assert!(!s.refresh_ttl(&short.job_id, TTL).await.expect("refresh"));
    let listed: Vec<_> =
        s.list_recent(None, None, 10).await.expect("list").into_iter().map(|m| m.job_id).collect();
    assert_eq!(listed, [kept.job_id]);
    // The owner's history too keeps the refreshed job, and only it.
    assert_eq!(ids(s.list_recent(Some(OWNER), None, 10).await.expect("list")), [kept.job_id]);
}

/// Of `contenders` concurrent `queued → started` transitions with the same guard, exactly one
/// applies; repeated `rounds` times.
pub async fn exactly_one_starts(s: Arc<dyn JobStore>, rounds: usize, contenders: usize) {
    for round in 0..rounds {
        let meta = job(0);
        s.create(&meta, TTL).await.expect("create");
        let tasks: Vec<_> = (0..contenders)
            .map(|_| {
                let (s, meta) = (s.clone(), meta.clone());
                tokio::spawn(async move {
                    let next = meta.transitioned(JobStatus::Started, Utc::now(), None).expect("allowed");
                    s.compare_and_set(meta.guard(), &next).await.expect("cas")
                })
            })
            .collect();
        let mut applied = 0;
        for t in tasks {
            if t.await.expect("task") == CasOutcome::Applied {
                applied += 1;
            }
        }
        assert_eq!(applied, 1, "round {round}: {applied} of {contenders} transitions applied");
        let stored = s.get(&meta.job_id).await.expect("get").expect("exists");
        assert_eq!((stored.status, stored.attempt), (JobStatus::Started, 1));
    }
}
