//! The scheduled backfill on the local service stack: the `backfill` binary run as a local process
//! (`--window-end`) and in Lambda mode (fed `events/backfill-schedule.json`), against a [`System`]'s
//! per-test queues, bucket and Redis prefix and the seeded PostgreSQL database.
//!
//! The oracle of "changed" is the dataset's Rust twin (`trace_dataset`): the seeded containers
//! with a history row whose `move_out` is in the window.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use trace_core::message::ShardMessage;
use trace_core::ports::{ChunkStore, JobQueue};
use trace_core::{layout, Domain, JobId};
use trace_integration::lambda::{Invocation, LambdaFunction};
use trace_integration::system::{binary, Options, System};
use trace_integration::{contract, seeded_ids};

/// Where the event files are.
const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
/// Longest wait for one answer.
const ANSWER: Duration = Duration::from_secs(120);

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&Utc)
}

/// The seeded containers with a history row that moved out in `[start, end)`, sorted.
fn changed(start: DateTime<Utc>, end: DateTime<Utc>) -> BTreeSet<String> {
    contract::changed::expected(&(start..end), seeded_ids())
}

/// Runs `backfill --window-end end` as a local process with the system's environment plus `extra`;
/// its report.
async fn run_backfill(system: &System, end: &str, extra: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(binary("backfill"));
    cmd.env_remove("AWS_LAMBDA_RUNTIME_API").envs(system.env.iter().map(|(k, v)| (k, v)));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.args(["--window-end", end]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run backfill")).await.expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backfill --window-end {end} failed ({}):\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("backfill printed no JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Every job of the system's history (newest first).
async fn jobs(system: &System) -> Vec<Value> {
    let (code, body) = system.get_status("/api/trace/jobs?limit=200").await;
    assert_eq!(code, 200, "{body}");
    body["jobs"].as_array().expect("jobs").clone()
}

/// Receives and deletes every message of `queue`; the job ids they name, with how many messages each.
async fn drain(queue: &dyn JobQueue) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    loop {
        let batch =
            queue.receive(10, Duration::from_secs(1), Duration::from_secs(60)).await.expect("receive");
        if batch.is_empty() {
            return seen;
        }
        for d in batch {
            let message = ShardMessage::parse(&d.body).expect("a shard message");
            *seen.entry(message.job_id.to_string()).or_default() += 1;
            queue.delete(&d.receipt).await.expect("delete");
        }
    }
}

/// `(batch, job id)` of every batch of a report.
fn batch_jobs(report: &Value) -> Vec<(u64, Option<String>)> {
    report["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| (b["batch"].as_u64().expect("batch"), b["job_id"].as_str().map(str::to_owned)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_twice_over_a_window_submits_each_job_once() {
    // Batches of at most 300 ids, windows of a day: the first day of the dataset has ~850 changed
    // containers, so 3 jobs.
    let env = vec![
        ("TRACE_EVENTS_CID_LIMIT", "300".to_owned()),
        ("TRACE_BACKFILL_WINDOW_SECONDS", "86400".to_owned()),
    ];
    let mut system = System::start(Options { no_workers: true, env, ..Default::default() }).await;
    // The backfill's jobs are the system principal's: the test looks at them as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let (start, end) = (time("2025-01-01T00:00:00Z"), time("2025-01-02T00:00:00Z"));
    let expected = changed(start, end);
    assert!(expected.len() > 600, "the seeded database changes on its first day: {}", expected.len());
    let batches = expected.len().div_ceil(300);

    let first = run_backfill(&system, "2025-01-02T00:00:00Z", &[]).await;
    assert_eq!(first["window"]["start"], "2025-01-01T00:00:00Z", "{first}");
    assert_eq!(first["window"]["end"], "2025-01-02T00:00:00Z", "{first}");
    assert_eq!(first["changed_ids"].as_u64(), Some(expected.len() as u64), "{first}");
    assert_eq!(first["invalid_ids"], 0);
    assert_eq!(first["batch_limit"], 300);
    assert_eq!(first["submitted"].as_u64(), Some(batches as u64), "{first}");
    assert_eq!((first["already_submitted"].as_u64(), first["failed"].as_u64()), (Some(0), Some(0)));
    let sizes: Vec<u64> =
        first["batches"].as_array().unwrap().iter().map(|b| b["cid_count"].as_u64().unwrap()).collect();
    assert_eq!(sizes.len(), batches);
    assert!(
        sizes.iter().all(|s| *s <= 300) && sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );

    // Each batch is one job, queued once, whose input is the batch; together they are the changed ids.
    let listed = jobs(&system).await;
    assert_eq!(listed.len(), batches, "jobs after the first run: {listed:?}");
    let mut covered = BTreeSet::new();
    for (batch, job_id) in batch_jobs(&first) {
        let job_id = job_id.expect("a submitted batch names its job");
        let job = listed.iter().find(|j| j["job_id"] == job_id.as_str()).expect("the job is in the history");
        assert_eq!(job["status"], "queued");
        assert_eq!(job["queue"], "light");
        assert_eq!(job["profile"], "query_tool");
        assert_eq!(job["cid_count"].as_u64(), Some(sizes[batch as usize]));
        let id: JobId = job_id.parse().unwrap();
        let input: Value =
            serde_json::from_slice(&system.store.get(&layout::input_key(&id)).await.expect("input.json"))
                .expect("input JSON");
        assert_eq!(input["params"]["backfill"]["window_end"], "2025-01-02T00:00:00Z");
        assert_eq!(input["params"]["backfill"]["batch"].as_u64(), Some(batch));
        assert_eq!(input["domains"].as_array().map(Vec::len), Some(Domain::BASE.len()));
        for id in input["container_ids"].as_array().expect("ids") {
            assert!(covered.insert(id.as_str().unwrap().to_owned()), "{id} is in two batches");
        }
    }
    assert_eq!(covered, expected, "the jobs cover exactly the changed containers");

    // The same window again, named by a later time of the next day (truncated to the day): nothing
    // new, the same jobs named.
    let second = run_backfill(&system, "2025-01-02T07:30:00Z", &[]).await;
    assert_eq!(second["window"], first["window"]);
    assert_eq!(second["submitted"], 0, "{second}");
    assert_eq!(second["already_submitted"].as_u64(), Some(batches as u64), "{second}");
    assert_eq!(batch_jobs(&second), batch_jobs(&first));
    assert_eq!(jobs(&system).await.len(), batches, "the second run created no job");
    let messages = drain(&system.light.0).await;
    assert_eq!(messages.len(), batches, "one message per job: {messages:?}");
    assert!(messages.values().all(|n| *n == 1), "{messages:?}");
    assert!(drain(&system.heavy.0).await.is_empty());

    // Two runs of the next window at once: each batch is queued by exactly one of them.
    let (start2, end2) = (time("2025-01-02T00:00:00Z"), time("2025-01-03T00:00:00Z"));
    let expected2 = changed(start2, end2);
    let batches2 = expected2.len().div_ceil(300);
    let (a, b) = tokio::join!(
        run_backfill(&system, "2025-01-03T00:00:00Z", &[]),
        run_backfill(&system, "2025-01-03T00:00:00Z", &[])
    );
    assert_eq!(a["changed_ids"].as_u64(), Some(expected2.len() as u64));
    let submitted = a["submitted"].as_u64().unwrap() + b["submitted"].as_u64().unwrap();
    assert_eq!(submitted, batches2 as u64, "concurrent runs: {a} {b}");
    assert_eq!(jobs(&system).await.len(), batches + batches2);
    let messages = drain(&system.light.0).await;
    assert_eq!(messages.len(), batches2, "{messages:?}");
    assert!(messages.values().all(|n| *n == 1), "{messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_event_runs_the_backfill_in_lambda() {
    let mut system = System::start(Options { no_workers: true, ..Default::default() }).await;
    // The backfill's jobs are the system principal's: the test looks at them as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let mut backfill = LambdaFunction::start(&system, "backfill", &[]).await;

    // The schedule's event as EventBridge sends it: the window is the hour before its `time`.
    let text =
        std::fs::read_to_string(format!("{EVENTS}/backfill-schedule.json")).expect("backfill-schedule.json");
    let event: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(event["detail-type"], "Scheduled Event");
    let at = time(event["time"].as_str().expect("time"));
    let end = DateTime::from_timestamp(at.timestamp() / 3600 * 3600, 0).unwrap();
    let start = end - chrono::Duration::hours(1);
    let expected = changed(start, end);
    let report = backfill.invoke(event.clone(), ANSWER).await.json();
    assert_eq!(report["window"]["start"].as_str().map(time), Some(start), "{report}");
    assert_eq!(report["window"]["end"].as_str().map(time), Some(end), "{report}");
    assert_eq!(report["changed_ids"].as_u64(), Some(expected.len() as u64), "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    // The same event, scheduled inside the seeded data: the hour 05:00-06:00 of its first day.
    let mut early = event;
    early["time"] = Value::from("2025-01-01T06:20:00Z");
    let expected = changed(time("2025-01-01T05:00:00Z"), time("2025-01-01T06:00:00Z"));
    assert!(!expected.is_empty());
    let first = backfill.invoke(early.clone(), ANSWER).await.json();
    assert_eq!(first["window"]["start"], "2025-01-01T05:00:00Z", "{first}");
    assert_eq!(first["changed_ids"].as_u64(), Some(expected.len() as u64), "{first}");
    assert_eq!((first["submitted"].as_u64(), first["batches"].as_array().map(Vec::len)), (Some(1), Some(1)));
    let job_id = first["batches"][0]["job_id"].as_str().expect("job id").to_owned();
    let (code, job) = system.get_status(&format!("/api/trace/job/{job_id}")).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["cid_count"].as_u64(), Some(expected.len() as u64));

    // EventBridge delivers at least once (and Lambda retries failed runs): a repeat queues nothing.
    let again = backfill.invoke(early, ANSWER).await;
    let again = match again {
        Invocation::Buffered(v) => v,
        other => panic!("expected the report, got {other:?}"),
    };
    assert_eq!(
        (again["submitted"].as_u64(), again["already_submitted"].as_u64()),
        (Some(0), Some(1)),
        "{again}"
    );
    assert_eq!(again["batches"][0]["job_id"].as_str(), Some(job_id.as_str()));
    assert_eq!(jobs(&system).await.len(), 1);
    assert_eq!(drain(&system.light.0).await.len(), 1);
}
