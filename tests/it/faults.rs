//! The fault-injection suite: one test per fault, on the local stack (real SQS/S3 emulator, Redis,
//! PostgreSQL, the function binaries as processes), each asserting the same invariants
//! ([`assert_invariants`]): the job ends within a bound; if finished, its records equal the database
//! with no duplicate; the manifest lists exactly the stored chunks; a message is in the dead-letter
//! queue only if the job failed.
//!
//! README's "Reliability" section lists each fault with what happens and the test here that proves it.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use trace_core::layout::{self, Manifest};
use trace_core::ports::{ChunkStore, JobQueue};
use trace_core::Domain;
use trace_integration::checks::{
    assert_chunks_match_database, assert_matches_database, check_stream, env, ids, wait_running,
};
use trace_integration::lambda::LambdaFunction;
use trace_integration::system::{Options, System};

/// The invariants of every fault: the job is terminal within `within` (its status is returned); if
/// finished, its stream equals the database with no duplicate and its manifest lists exactly the
/// chunks stored; its message is in the light queue's dead-letter queue only if it failed.
pub(crate) async fn assert_invariants(
    system: &System,
    job: &str,
    ids: &[String],
    domains: &[Domain],
    within: Duration,
) -> Value {
    let status = system.wait_terminal(job, within).await;
    if status["status"] == "finished" && ids.len() > 20_000 {
        // Too large to hold as JSON values: checked chunk by chunk.
        assert_chunks_match_database(&system.store, job, ids, domains).await;
    } else if status["status"] == "finished" {
        let (code, _, lines) = system.stream_lines(job).await;
        assert_eq!(code, 200, "stream of a finished job");
        let records = check_stream(job, &lines, domains, false);
        assert_matches_database(&records, ids).await;
    }
    if status["status"] == "finished" {
        let job_id = job.parse().expect("job id");
        let manifest: Manifest = serde_json::from_slice(
            &system.store.get(&layout::manifest_key(&job_id)).await.expect("manifest"),
        )
        .expect("manifest JSON");
        let listed: BTreeSet<String> =
            manifest.domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.clone())).collect();
        let stored: BTreeSet<String> = system
            .store
            .list(&layout::result_prefix(&job_id))
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(listed, stored, "the manifest lists exactly the stored chunks");
    }
    let dead =
        system.light.1.receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.expect("dlq");
    let ours = dead.iter().any(|d| d.attributes.get("job_id").map(String::as_str) == Some(job));
    assert!(!ours || status["status"] == "failed", "a message of a {} job is in the DLQ", status["status"]);
    status
}

/// The job's message from the light queue's dead-letter queue, within `within`. The queue moves a
/// message over its receive count only when someone receives from the queue, so this receives from
/// it too (putting back at once anything it gets); a receive of a stopped worker still pending in
/// the emulator may hide the message for one visibility timeout first (30 s).
async fn dead_letter(system: &System, job: &str, within: Duration) -> trace_core::ports::Delivery {
    let deadline = std::time::Instant::now() + within;
    loop {
        let main =
            system.light.0.receive(1, Duration::from_secs(1), Duration::from_secs(30)).await.expect("queue");
        for d in main {
            system.light.0.extend_visibility(&d.receipt, Duration::ZERO).await.expect("put back");
        }
        let dead =
            system.light.1.receive(1, Duration::from_secs(1), Duration::from_secs(30)).await.expect("dlq");
        if let Some(d) =
            dead.into_iter().find(|d| d.attributes.get("job_id").map(String::as_str) == Some(job))
        {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "the message never reached the DLQ");
    }
}

/// Submits a light history job of `n` ids; its id.
async fn submit(system: &System, ids: &[String]) -> String {
    let (code, accepted) = system.submit(&json!({ "container_ids": ids, "domains": ["history"] })).await;
    assert_eq!(code, 202, "{accepted}");
    accepted["job_id"].as_str().expect("job_id").to_owned()
}

fn small_jobs() -> Options {
    Options { env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]), no_workers: true, ..Default::default() }
}

/// Redis loses a queued job before any worker claimed it: status answers it from the object store
/// (queued), and the delivery runs it instead of dropping its message as "unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loses_a_job_before_its_claim() {
    let mut system = System::start(small_jobs()).await;
    let ids = ids(2_000);
    let job = submit(&system, &ids).await;
    system.forget_job(&job).await;
    let (code, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!((code, status["status"].as_str()), (200, Some("queued")), "{status}");
    system.spawn_worker("light", &[]);
    let status = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(120)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// Redis loses a running job: its worker puts it back from its lease at the next heartbeat (or a
/// status read rebuilds it as queued first and the worker takes it back), and the run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loses_a_job_mid_run() {
    let mut system = System::start(Options {
        env: env(&[("TRACE_WORKER_HEARTBEAT_SECONDS", "1"), ("TRACE_WORKER_VISIBILITY_SECONDS", "10")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let job = submit(&system, &ids).await;
    wait_running(&system, &job).await;
    system.forget_job(&job).await;
    let status = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(300)).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(1)),
        "{status}"
    );
}

/// Redis loses a finished job: status answers finished from the manifest, with its records, and the
/// result is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loses_a_finished_job() {
    let system =
        System::start(Options { env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]), ..Default::default() })
            .await;
    let ids = ids(3_000);
    let job = submit(&system, &ids).await;
    let before = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(before["status"], "finished", "{before}");
    system.forget_job(&job).await;
    let after = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(10)).await;
    assert_eq!(after["status"], "finished");
    assert_eq!(after["progress_detail"]["records_written"], before["progress_detail"]["records_written"]);
}

/// Redis loses a cancelled job: it stays cancelled (the outcome recorded beside its input), and a
/// worker never runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loses_a_cancelled_job() {
    let mut system = System::start(small_jobs()).await;
    let ids = ids(500);
    let job = submit(&system, &ids).await;
    let cancel =
        system.http.delete(format!("{}/api/trace/job/{job}", system.status)).send().await.expect("cancel");
    assert_eq!(cancel.status().as_u16(), 200);
    system.forget_job(&job).await;
    system.spawn_worker("light", &[]);
    let status = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(10)).await;
    assert_eq!(status["status"], "cancelled", "{status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(status["status"], "cancelled", "a worker ran a cancelled job: {status}");
}

/// A job whose database is down on every delivery fails on its last one, its message in the DLQ.
/// Returns the system (no worker left running) and the job.
async fn a_job_failed_into_the_dlq(ids: &[String]) -> (System, String) {
    let mut system = System::start(Options {
        env: env(&[
            ("TRACE_ASYNC_CID_THRESHOLD", "1"),
            ("TRACE_MAX_RECEIVE_COUNT", "2"),
            ("TRACE_RETRY_WINDOW_SECONDS", "1"),
        ]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let broken = system.spawn_worker("light", &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/trace")]);
    let job = submit(&system, ids).await;
    let status = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(
        (status["status"].as_str(), status["error_code"].as_str()),
        (Some("failed"), Some("SOURCE_ERROR"))
    );
    system.terminate(broken, Duration::from_secs(10));
    (system, job)
}

/// `POST /api/trace/job/{id}/retry` queues the failed job again (202, queued); once the database is
/// back a worker finishes it; a second retry of a job that has not failed is 409 `JOB_NOT_RETRYABLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_retried_through_the_api_finishes() {
    let ids = ids(1_500);
    let (mut system, job) = a_job_failed_into_the_dlq(&ids).await;
    let retry = format!("{}/api/trace/job/{job}/retry", system.status);
    let answer = system.http.post(&retry).send().await.expect("retry");
    assert_eq!(answer.status().as_u16(), 202);
    let body: Value = answer.json().await.expect("json");
    assert_eq!((body["status"].as_str(), body["error_code"].as_str()), (Some("queued"), None), "{body}");
    let again = system.http.post(&retry).send().await.expect("retry");
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(again.json::<Value>().await.expect("json")["code"], "JOB_NOT_RETRYABLE");
    system.spawn_worker("light", &[]);
    let status = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "finished", "{status}");
    // The old message reaches the DLQ all the same (the job finished: a redrive of it does nothing).
    let dead = dead_letter(&system, &job, Duration::from_secs(90)).await;
    system.light.1.delete(&dead.receipt).await.expect("delete");
    assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(10)).await;
}

/// The failed job's message moved from the DLQ back to its queue (what SQS's redrive does) runs the
/// job again: it finishes, equal to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_redrive_runs_the_failed_job_again() {
    let ids = ids(1_500);
    let (mut system, job) = a_job_failed_into_the_dlq(&ids).await;
    let dead = dead_letter(&system, &job, Duration::from_secs(90)).await;
    system.light.0.send(&dead.body, &[("job_id", &job), ("shard", "0")]).await.expect("redrive");
    system.light.1.delete(&dead.receipt).await.expect("delete from the DLQ");
    system.spawn_worker("light", &[]);
    // The job is terminal (failed) until the worker takes the redriven message.
    // (A receive of the stopped worker still pending in the emulator may hide the message for one
    // visibility timeout, 30 s.)
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
        if status["attempt"].as_u64() > Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the redriven message was not run: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(120)).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(3)),
        "{status}"
    );
}

/// The five domains of the checkpoint tests (not MSD: its runs always start from the first id).
pub(crate) const FIVE: [Domain; 5] =
    [Domain::History, Domain::Materials, Domain::Rejects, Domain::Holds, Domain::Jobs];

/// Submits a job of `ids` over [`FIVE`]; its id.
pub(crate) async fn submit_five(system: &System, ids: &[String]) -> String {
    let domains: Vec<&str> = FIVE.iter().map(|d| d.as_str()).collect();
    let (code, accepted) = system.submit(&json!({ "container_ids": ids, "domains": domains })).await;
    assert_eq!(code, 202, "{accepted}");
    accepted["job_id"].as_str().expect("job_id").to_owned()
}

/// Each domain's stored chunks, in result order: (place in the result — shard, chunk — records, NDJSON
/// bytes, CRC-32, the stored object's bytes). Not the attempt their keys name: a resumed run keeps
/// the chunks earlier attempts stored and names its own.
async fn stored_chunks(system: &System, job: &str) -> Vec<(Domain, (u32, u32), u64, u64, u32, bytes::Bytes)> {
    let job_id = job.parse().expect("job id");
    let manifest: Manifest =
        serde_json::from_slice(&system.store.get(&layout::manifest_key(&job_id)).await.expect("manifest"))
            .expect("manifest JSON");
    let mut out = Vec::new();
    for d in &manifest.domains {
        for c in &d.chunks {
            let slot = layout::chunk_slot(&c.key).expect("a chunk key");
            let body = system.store.get(&c.key).await.expect("chunk");
            out.push((d.domain, (slot.shard, slot.chunk), c.records, c.bytes, c.crc32, body));
        }
    }
    out
}

/// Rows the workers read from the database for `job`, from their logs (the engine's debug line per
/// id batch, `rows_read`), and the number of runs that read any.
fn rows_read(system: &System, job: &str) -> u64 {
    let mut rows = 0;
    for entry in std::fs::read_dir(system.log_dir()).expect("log dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(job) && l.contains("id batch read")) {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            rows += v["rows_read"].as_u64().unwrap_or(0);
        }
    }
    rows
}

/// Waits until `job` is started with at least `point` ids done (as status says), within `within`;
/// it must not finish before.
pub(crate) async fn wait_ids_done(system: &System, job: &str, point: u64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (_, s) = system.get_status(&format!("/api/trace/job/{job}")).await;
        let (status, done) =
            (s["status"].as_str().unwrap_or_default(), s["progress_detail"]["ids_done"].as_u64());
        if status == "started" && done >= Some(point) {
            return;
        }
        assert_ne!(status, "finished", "finished before {point} ids");
        assert!(std::time::Instant::now() < deadline, "never reached {point} ids: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job whose worker is killed (SIGKILL) three times at random points finishes, each takeover
/// resuming from the last checkpoint: its chunks are byte for byte those of an uninterrupted run of
/// the same request, and all its runs together read at most 1.5x the rows of that one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_three_times_resumes_from_its_checkpoints_byte_identical() {
    let options = || Options {
        env: env(&[
            ("TRACE_WORKER_VISIBILITY_SECONDS", "6"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2"),
            ("TRACE_CHECKPOINT_SECONDS", "2"),
            ("TRACE_EVENTS_CID_LIMIT", "200000"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,trace_service::engine=debug"),
        ]),
        no_workers: true,
        ..Default::default()
    };
    let ids = ids(trace_integration::seeded_ids());
    let total = ids.len() as u64;
    let queue = if total > 40_000 { "heavy" } else { "light" };

    // The uninterrupted run, in a system of its own (a stopped worker's pending receive would take a
    // delivery of the other job's message).
    let mut once = System::start(options()).await;
    once.spawn_worker(queue, &[]);
    let reference = submit_five(&once, &ids).await;
    let status = once.wait_terminal(&reference, Duration::from_secs(900)).await;
    assert_eq!(status["status"], "finished", "{status}");
    let one_run = rows_read(&once, &reference);
    assert!(one_run > 0, "no rows_read lines in the worker logs");

    let mut system = System::start(options()).await;
    let job = submit_five(&system, &ids).await;
    // Three random points of the job, in order (random per run; printed to reproduce).
    let seed = uuid::Uuid::new_v4().as_u128();
    let mut points: Vec<u64> =
        (0..3).map(|i| (10 + ((seed >> (i * 16)) & 0xffff) as u64 * 80 / 0x1_0000) * total / 100).collect();
    points.sort_unstable();
    eprintln!("killing the worker at ids {points:?} of {total}");
    for point in &points {
        let worker = system.spawn_worker(queue, &[]);
        wait_ids_done(&system, &job, *point, Duration::from_secs(900)).await;
        system.kill(worker);
    }
    system.spawn_worker(queue, &[]);
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(900)).await;
    assert_eq!(status["status"], "finished", "{status}");

    let (ours, theirs) = (stored_chunks(&system, &job).await, stored_chunks(&once, &reference).await);
    assert_eq!(ours.len(), theirs.len(), "chunk count");
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(a == b, "chunk {:?} {:?} differs from the uninterrupted run's {:?} {:?}", a.0, a.1, b.0, b.1);
    }
    let read = rows_read(&system, &job);
    eprintln!(
        "rows read: {read} over 4 runs with 3 kills, {one_run} in one uninterrupted run: {:.3}x",
        read as f64 / one_run as f64
    );
    assert!(read * 2 <= one_run * 3, "{read} rows read, more than 1.5x {one_run}");
}

/// The worker in Lambda under a 20 s function timeout (the Runtime API emulator's deadline header; an
/// answer after it fails as `Sandbox.Timedout`, as in AWS) runs a job that takes longer than one
/// invocation: each invocation checkpoints and answers in time, sending a continuation message, and
/// the job finishes (never `JOB_TIMEOUT`) with a result equal to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_invocation_finishes_through_continuations() {
    let system = System::start(Options {
        // Id batches of 100 ids: a run of the whole dataset takes longer than one 20 s invocation.
        env: env(&[("TRACE_EVENTS_CID_LIMIT", "200000"), ("TRACE_DB_ID_BATCH_SIZE", "100")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let ids = ids(trace_integration::seeded_ids());
    let heavy = ids.len() > 40_000;
    let job = submit_five(&system, &ids).await;
    let queue = if heavy { &system.heavy.0 } else { &system.light.0 };
    let kind = if heavy { "heavy" } else { "light" };
    let mut worker = LambdaFunction::start(&system, "worker", &[("TRACE_WORKER_QUEUE", kind)]).await;
    worker.runtime.set_timeout(Duration::from_secs(20));
    let mut invocations = 0u32;
    loop {
        let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
        if status["status"] == "finished" {
            break;
        }
        assert!(status["status"] == "queued" || status["status"] == "started", "{status}");
        let mut got =
            queue.receive(1, Duration::from_secs(5), Duration::from_secs(60)).await.expect("receive");
        let Some(delivery) = got.pop() else { continue };
        let message = trace_core::message::ShardMessage::parse(&delivery.body).expect("shard message");
        assert_eq!(message.continuation, invocations, "one continuation per invocation");
        let mut record = crate::lambda_events::event("worker-sqs.json")["Records"][0].clone();
        record["messageId"] = json!(delivery.message_id);
        record["receiptHandle"] = json!(delivery.receipt);
        record["body"] = json!(delivery.body);
        record["attributes"]["ApproximateReceiveCount"] = json!(delivery.receive_count.to_string());
        record["messageAttributes"]["job_id"]["stringValue"] = json!(job);
        record.as_object_mut().expect("record").remove("md5OfBody");
        let answer = worker.invoke(json!({ "Records": [record] }), Duration::from_secs(60)).await.json();
        assert_eq!(answer, json!({"batchItemFailures": []}), "log: {}", worker.log().display());
        invocations += 1;
        assert!(invocations < 60, "still not finished after {invocations} invocations");
    }
    eprintln!("finished in {invocations} invocations of at most 20 s");
    assert!(invocations >= 2, "the job fitted one invocation: make it longer to test continuations");
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(10)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// `DATABASE_URL` with an `application_name` of its own, so a test can find (and break) only its
/// worker's connections.
fn database_url_named(name: &str) -> String {
    let url = trace_integration::required("DATABASE_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// Terminates the server processes of the connections named `name`; how many.
async fn terminate_connections(name: &str) -> i64 {
    let conn = trace_integration::pg_pool().get().await.expect("connect");
    let row = conn
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("terminate");
    row.get(0)
}

/// The database kills the worker's connections mid-fetch, again and again for 3 s: each read fails,
/// the run retries within its delivery (back-off, from its last checkpoint) and the job finishes on
/// its first attempt, equal to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_killed_mid_fetch_are_retried_within_the_delivery() {
    let mut system = System::start(Options {
        env: env(&[("TRACE_CHECKPOINT_SECONDS", "1"), ("TRACE_DB_ID_BATCH_SIZE", "100")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let name = format!("fault-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    system.spawn_worker("light", &[("DATABASE_URL", &database_url_named(&name))]);
    let ids = ids(30_000);
    let job = submit_five(&system, &ids).await;
    wait_running(&system, &job).await;
    let mut killed = 0;
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        killed += terminate_connections(&name).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(killed > 0, "no connection of the worker was found to kill");
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(300)).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(1)),
        "{status}"
    );
}

/// A table locked for 6 s while the worker reads it, with a 1 s statement timeout: each read times out
/// (instead of hanging), the run retries within its delivery, and the job finishes once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_times_out_and_is_retried_until_it_is_free() {
    let mut system = System::start(Options {
        env: env(&[("TRACE_DB_STATEMENT_TIMEOUT_SECONDS", "1"), ("TRACE_ASYNC_CID_THRESHOLD", "1")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let pool = trace_integration::pg_pool();
    let mut locker = pool.get().await.expect("connect");
    let tx = locker.transaction().await.expect("begin");
    tx.batch_execute("LOCK TABLE holds IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    system.spawn_worker("light", &[]);
    let ids = ids(2_000);
    let (code, accepted) = system.submit(&json!({ "container_ids": ids, "domains": ["holds"] })).await;
    assert_eq!(code, 202, "{accepted}");
    let job = accepted["job_id"].as_str().expect("job_id").to_owned();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_ne!(status["status"], "finished", "read through a lock: {status}");
    tx.rollback().await.expect("unlock");
    let status = assert_invariants(&system, &job, &ids, &[Domain::Holds], Duration::from_secs(120)).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(1)),
        "{status}"
    );
}

/// Runs `trace <args>` against `system` with `key`; (exit code, stdout, stderr).
fn trace_cli(system: &System, key: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(trace_integration::system::binary("trace"))
        .args(["--url", &system.submit, "--status-url", &system.status, "--stream-url", &system.stream])
        .args(args)
        .env_remove("TRACE_API_URL")
        .env("TRACE_API_KEY", key)
        .output()
        .expect("run trace");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `trace dlq list` (an administrator's key) shows the failed job's dead-lettered message with the
/// job's status and code; another key is refused (403 `ADMIN_ONLY`); `trace dlq redrive` moves it
/// back and, the database back, the job runs again and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_dlq_lists_and_redrives_a_failed_job_s_message() {
    let ids = ids(1_500);
    let (mut system, job) = a_job_failed_into_the_dlq(&ids).await;
    let admin = trace_integration::system::ADMIN_API_KEY;
    // The queue moves the message on a receive past its count: wait until the listing shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let listed: Vec<Value> = loop {
        // A receive on the light queue (what a worker would do) moves an over-count message.
        let _ = system.light.0.receive(1, Duration::from_secs(1), Duration::from_secs(1)).await;
        let (code, out, err) = trace_cli(&system, admin, &["dlq", "list"]);
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        if lines.iter().any(|l| l["job_id"] == job.as_str()) {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "the message never showed in `trace dlq list`: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ours = listed.iter().find(|l| l["job_id"] == job.as_str()).expect("our message");
    assert_eq!(
        (ours["queue"].as_str(), ours["job_status"].as_str()),
        (Some("light"), Some("failed")),
        "{ours}"
    );
    assert_eq!(ours["error_code"], "SOURCE_ERROR");
    let (code, _, err) = trace_cli(&system, trace_integration::system::API_KEY, &["dlq", "list"]);
    assert_eq!(code, Some(1), "a caller's key is refused: {err}");
    assert!(err.contains("ADMIN_ONLY"), "{err}");

    system.spawn_worker("light", &[]);
    let (code, out, err) = trace_cli(&system, admin, &["dlq", "redrive"]);
    assert_eq!(code, Some(0), "{err}");
    let moved: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert!(moved["light"].as_u64() >= Some(1), "{moved}");
    // Failed (terminal) until the worker takes the redriven message: wait for its new attempt. (A
    // receive of the stopped worker still pending in the emulator may hide it for 30 s.)
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
        if status["attempt"].as_u64() > Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the redriven message was not run: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = assert_invariants(&system, &job, &ids, &[Domain::History], Duration::from_secs(120)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// A Redis of the test's own (no persistence: a restart comes back empty, as a failover without
/// persistence does), which the test stops and starts.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = trace_integration::system::free_port();
        let dir = std::env::temp_dir().join(format!("trace-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = PrivateRedis { port, dir, child: None };
        redis.up();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (empty) and waits until it answers.
    fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by infra/local-stack.sh)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server: every connection drops at once.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis is killed mid-run (connections dropped) and comes back empty after `down`: the worker's
/// calls fail, it retries within its delivery, puts the job it holds back from its lease (status reads
/// rebuild it from the object store meanwhile) and finishes it, equal to the database.
async fn redis_down_mid_run(down: Duration) {
    let mut redis = PrivateRedis::start();
    let mut system = System::start(Options {
        env: vec![
            ("REDIS_URL", redis.url()),
            ("TRACE_DB_ID_BATCH_SIZE", "100".to_owned()),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2".to_owned()),
            ("TRACE_WORKER_VISIBILITY_SECONDS", "20".to_owned()),
            ("TRACE_REDIS_TIMEOUT_SECONDS", "2".to_owned()),
            ("TRACE_CONNECT_TIMEOUT_SECONDS", "2".to_owned()),
        ],
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let job = submit_five(&system, &ids).await;
    wait_running(&system, &job).await;
    redis.kill();
    tokio::time::sleep(down).await;
    redis.up();
    // Reads answer a clear 503 while the processes reconnect, then the job's status again.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (code, body) = system.get_status(&format!("/api/trace/job/{job}")).await;
        match code {
            200 if matches!(body["status"].as_str(), Some("finished" | "failed" | "cancelled")) => break,
            200 => {}
            503 => assert!(
                matches!(body["code"].as_str(), Some("RATE_LIMIT_UNAVAILABLE" | "SERVICE_UNAVAILABLE")),
                "{body}"
            ),
            _ => panic!("status answered {code}: {body}"),
        }
        assert!(std::time::Instant::now() < deadline, "job {job} not over: {code} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// Redis down 3 s mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_3_s_mid_run_and_back_empty() {
    redis_down_mid_run(Duration::from_secs(3)).await;
}

/// Redis down 40 s mid-run (longer than a visibility timeout and than the first retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_40_s_mid_run_and_back_empty() {
    redis_down_mid_run(Duration::from_secs(40)).await;
}

/// Submits `n` jobs of two ids each (`CID 2i-1`, `2i`) over `domains`, `in_flight` at once: the
/// accepted ones (i, job id) and how many were refused with 503 and one of `refusals`; any other
/// answer fails the test.
async fn submit_pairs(
    system: &System,
    n: u64,
    in_flight: usize,
    domains: &[&str],
    refusals: &[&str],
) -> (Vec<(u64, String)>, usize) {
    let answers: Vec<(u64, u16, Value)> = futures::stream::iter(1..=n)
        .map(|i| async move {
            // Two ids: above an async threshold of 1, a job.
            let ids = [trace_dataset::container_id(2 * i - 1), trace_dataset::container_id(2 * i)];
            let (code, answer) = system.submit(&json!({ "container_ids": ids, "domains": domains })).await;
            (i, code, answer)
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for (i, code, body) in &answers {
        match code {
            202 => accepted.push((*i, body["job_id"].as_str().expect("job_id").to_owned())),
            503 => {
                assert!(refusals.contains(&body["code"].as_str().unwrap_or_default()), "{body}");
                refused += 1;
            }
            _ => panic!("a submit answered {code}: {body}"),
        }
    }
    (accepted, refused)
}

/// The S3/SQS emulator behind a fault proxy answering 503 to 30% of SendMessage calls and of chunk
/// PUTs, and to the first three manifest PUTs, while 1,000 jobs are submitted at once (32 in flight):
/// each submit answers 202 or a clear 503 (`SERVICE_UNAVAILABLE`, its job marked failed with
/// `QUEUE_SEND_FAILED` when the SDK's retries all failed), every accepted job finishes, and none is
/// left queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_submits_while_s3_and_sqs_answer_503_lose_no_job() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use trace_integration::fault_proxy::FaultProxy;
    let (sends, puts, manifests) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let proxy = FaultProxy::start(&trace_integration::required("AWS_ENDPOINT_URL"), move |seen| {
        if seen.target == Some("AmazonSQS.SendMessage") {
            return sends.fetch_add(1, Ordering::SeqCst) % 10 < 3;
        }
        if seen.method == axum::http::Method::PUT && seen.path.contains("/result/") {
            return puts.fetch_add(1, Ordering::SeqCst) % 10 < 3;
        }
        if seen.method == axum::http::Method::PUT && seen.path.ends_with("/manifest.json") {
            return manifests.fetch_add(1, Ordering::SeqCst) < 3;
        }
        false
    })
    .await;
    let mut system = System::start(Options {
        env: vec![("AWS_ENDPOINT_URL", proxy.url.clone()), ("TRACE_ASYNC_CID_THRESHOLD", "1".to_owned())],
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    system.spawn_worker("light", &[]);
    let (accepted, refused) =
        submit_pairs(&system, 1_000, 32, &["holds", "history"], &["SERVICE_UNAVAILABLE"]).await;
    eprintln!("{} accepted, {refused} refused; the proxy failed {} requests", accepted.len(), proxy.failed());
    assert!(proxy.failed() > 300, "the proxy injected {} faults", proxy.failed());
    for (_, job) in &accepted {
        let status = system.wait_terminal(job, Duration::from_secs(600)).await;
        assert_eq!(status["status"], "finished", "{status}");
    }
    let (_, queued) = system.get_status("/api/trace/jobs?status=queued&limit=200").await;
    assert_eq!(queued["count"], 0, "jobs left queued: {queued}");
    let (_, failed) = system.get_status("/api/trace/jobs?status=failed&limit=200").await;
    let failed = failed["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(failed.len(), refused, "a refused submit's job is failed, no other");
    assert!(failed.iter().all(|j| j["error_code"] == "QUEUE_SEND_FAILED"), "{failed:?}");
    // A few accepted jobs' results, against the database.
    for (i, job) in accepted.iter().take(5) {
        let ids = vec![trace_dataset::container_id(2 * i - 1), trace_dataset::container_id(2 * i)];
        assert_invariants(&system, job, &ids, &[Domain::Holds, Domain::History], Duration::from_secs(10))
            .await;
    }
}

/// The S3/SQS emulator stops answering for `down` mid-run (a fault proxy holds every request, as a
/// SIGSTOP of the emulator would): the calls wait or time out (`TRACE_AWS_ATTEMPT_TIMEOUT_SECONDS`) and
/// are retried; the job finishes, equal to the database.
async fn object_store_and_queue_stopped_mid_run(down: Duration) {
    use trace_integration::fault_proxy::FaultProxy;
    let proxy = FaultProxy::start(&trace_integration::required("AWS_ENDPOINT_URL"), |_| false).await;
    let mut system = System::start(Options {
        env: vec![
            ("AWS_ENDPOINT_URL", proxy.url.clone()),
            ("TRACE_DB_ID_BATCH_SIZE", "100".to_owned()),
            ("TRACE_AWS_ATTEMPT_TIMEOUT_SECONDS", "10".to_owned()),
        ],
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let job = submit_five(&system, &ids).await;
    wait_running(&system, &job).await;
    proxy.stop_for(down);
    tokio::time::sleep(down).await;
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(400)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// The S3/SQS emulator stopped 10 s mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_and_queue_stopped_10_s_mid_run() {
    object_store_and_queue_stopped_mid_run(Duration::from_secs(10)).await;
}

/// The S3/SQS emulator stopped 90 s mid-run (longer than the SDK's attempts: the run's own retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_and_queue_stopped_90_s_mid_run() {
    object_store_and_queue_stopped_mid_run(Duration::from_secs(90)).await;
}

/// Redis stalls (`CLIENT PAUSE 3000 ALL` on a private server) while 200 jobs are submitted, 16 at a
/// time, with a 1 s Redis timeout: each submit answers 202 or a clear 503; a job whose create timed
/// out (and which the paused server may still apply afterwards) is recorded failed with
/// `JOB_STORE_ERROR`, never left queued without a message; every accepted job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_during_submits_leaves_no_job_queued() {
    let redis = PrivateRedis::start();
    let mut system = System::start(Options {
        env: vec![
            ("REDIS_URL", redis.url()),
            ("TRACE_ASYNC_CID_THRESHOLD", "1".to_owned()),
            ("TRACE_REDIS_TIMEOUT_SECONDS", "1".to_owned()),
        ],
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    let url = redis.url();
    let pause = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(3000)
            .arg("ALL")
            .query_async(&mut conn)
            .await
            .expect("pause");
    });
    let refusals = ["SERVICE_UNAVAILABLE", "RATE_LIMIT_UNAVAILABLE"];
    let (accepted, refused) = submit_pairs(&system, 200, 16, &["holds"], &refusals).await;
    pause.await.expect("pause task");
    eprintln!("{} accepted, {refused} refused while Redis was paused", accepted.len());
    assert!(refused > 0, "the pause refused no submit: it did not reach the submits");
    assert!(!accepted.is_empty(), "no submit accepted");
    for (_, job) in &accepted {
        let status = system.wait_terminal(job, Duration::from_secs(300)).await;
        assert_eq!(status["status"], "finished", "{status}");
    }
    // A refused submit's job, if the paused server created it after all, is failed: none is queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, queued) = system.get_status("/api/trace/jobs?status=queued&limit=200").await;
        if queued["count"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "jobs left queued: {queued}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, failed) = system.get_status("/api/trace/jobs?status=failed&limit=200").await;
    let failed = failed["jobs"].as_array().cloned().unwrap_or_default();
    eprintln!("{} jobs created by refused submits, recorded failed", failed.len());
    assert!(failed.len() <= refused, "{} failed jobs for {refused} refused submits", failed.len());
    assert!(failed.iter().all(|j| j["error_code"] == "JOB_STORE_ERROR"), "{failed:?}");
    for (i, job) in accepted.iter().take(5) {
        let ids = vec![trace_dataset::container_id(2 * i - 1), trace_dataset::container_id(2 * i)];
        assert_invariants(&system, job, &ids, &[Domain::Holds], Duration::from_secs(10)).await;
    }
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The result's stored chunk keys and the manifest's, sorted.
async fn stored_and_listed(system: &System, job: &str) -> (Vec<String>, Vec<String>) {
    let job_id = job.parse().expect("job id");
    let manifest: Manifest =
        serde_json::from_slice(&system.store.get(&layout::manifest_key(&job_id)).await.expect("manifest"))
            .expect("manifest JSON");
    let mut listed: Vec<String> =
        manifest.domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.clone())).collect();
    let mut stored: Vec<String> = system
        .store
        .list(&layout::result_prefix(&job_id))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    listed.sort();
    stored.sort();
    (stored, listed)
}

/// A worker stopped (SIGSTOP) mid-run past its lease: the next delivery takes the job over (attempt 2)
/// from the checkpoint and finishes it; the stopped worker, continued (SIGCONT) afterwards, is a zombie
/// whose writes land on keys of its own attempt, and when it learns it lost the job it stops and
/// removes them: the result stays the new owner's, equal to the database, the stored chunks exactly
/// the manifest's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_lease_wakes_as_a_zombie_and_changes_nothing() {
    let mut system = System::start(Options {
        env: env(&[
            ("TRACE_WORKER_VISIBILITY_SECONDS", "6"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2"),
            ("TRACE_CHECKPOINT_SECONDS", "1"),
            ("TRACE_DB_ID_BATCH_SIZE", "100"),
            ("TRACE_CHUNK_RECORDS", "5000"),
        ]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let zombie = system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let job = submit_five(&system, &ids).await;
    wait_ids_done(&system, &job, 6_000, Duration::from_secs(300)).await;
    signal(zombie, "STOP");
    system.spawn_worker("light", &[]);
    let status = system.wait_terminal(&job, Duration::from_secs(300)).await;
    assert_eq!(status["status"], "finished", "{status}");
    assert!(status["attempt"].as_u64() >= Some(2), "not taken over: {status}");
    let before = stored_and_listed(&system, &job).await;
    signal(zombie, "CONT");
    // The zombie runs on until its next lease check, then removes what it wrote meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (stored, listed) = stored_and_listed(&system, &job).await;
        assert_eq!(listed, before.1, "the manifest changed");
        if stored == listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strays left: {:?}",
            stored.iter().filter(|k| !listed.contains(k)).collect::<Vec<_>>()
        );
    }
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(10)).await;
    assert_eq!(status["status"], "finished", "{status}");
}

/// The database stops answering for 20 s mid-run (a TCP proxy in front of it holds every byte and
/// every new connection, as a SIGSTOP of the server would): the open fetch waits, new connections time
/// out and are retried within the delivery, and the job finishes on its first attempt, equal to the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_20_s_mid_run() {
    use trace_integration::tcp_proxy::TcpProxy;
    let url = reqwest::Url::parse(&trace_integration::required("DATABASE_URL")).expect("DATABASE_URL");
    let upstream = (url.host_str().expect("host"), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream).await.expect("resolve").next().expect("an address");
    let proxy = TcpProxy::start(upstream).await;
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.addr.port())).expect("port");
    let mut system = System::start(Options {
        env: vec![
            ("DATABASE_URL", proxied.to_string()),
            ("TRACE_DB_ID_BATCH_SIZE", "100".to_owned()),
            ("TRACE_CONNECT_TIMEOUT_SECONDS", "2".to_owned()),
        ],
        no_workers: true,
        ..Default::default()
    })
    .await;
    system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let job = submit_five(&system, &ids).await;
    wait_running(&system, &job).await;
    proxy.stop_for(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(300)).await;
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(status["attempt"], 1, "retried within its delivery: {status}");
}
