//! Jobs split into shards on the local stack (the function binaries as processes on SQS/S3, Redis and
//! PostgreSQL): the result read as a stream and as pages is line for line the same job's run whole,
//! with a shard's worker killed mid-run and its shard taken over; the MSD aggregation of a sharded job
//! equals the SQL oracle.

use std::time::Duration;

use serde_json::{json, Value};
use trace_core::Domain;
use trace_integration::checks::{assert_matches_database, check_stream, env, ids};
use trace_integration::system::{Options, System};

use crate::faults::{assert_invariants, submit_five, wait_ids_done, FIVE};
use crate::functions_e2e::assert_aggregation_matches_sql;

/// Every record of `domain` read as result pages of 5,000.
async fn pages(system: &System, job: &str, domain: Domain) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let path = format!("/api/trace/job/{job}/result?domain={domain}&offset={}&limit=5000", out.len());
        let (code, page) = system.get_stream(&path).await;
        assert_eq!(code, 200, "{page}");
        let data = page["results"][domain.as_str()]["data"].as_array().cloned().unwrap_or_default();
        if data.is_empty() {
            return out;
        }
        out.extend(data);
    }
}

/// Lines of the stream, the `meta` line without its job id.
fn comparable(mut lines: Vec<Value>) -> Vec<Value> {
    if let Some(meta) = lines.first_mut() {
        meta.as_object_mut().map(|m| m.remove("job_id"));
    }
    lines
}

/// Worker log lines of `system` containing `text`.
fn log_lines(system: &System, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(system.log_dir()).expect("log dir").flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(log.lines().filter(|l| l.contains(text)).map(str::to_owned));
    }
    out
}

/// A 30,000-id job split into 4 shards, one of whose workers is killed (SIGKILL) mid-run; two other
/// workers run the shards in whatever order they come, the killed shard taken over from its
/// checkpoint. Its stream and its pages equal, line for line, the same request run as one shard, and
/// the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_job_with_a_killed_shard_streams_and_pages_the_lines_of_the_job_run_whole() {
    let ids = ids(30_000);
    let once =
        System::start(Options { env: env(&[("TRACE_DB_ID_BATCH_SIZE", "100")]), ..Default::default() }).await;
    let reference = submit_five(&once, &ids).await;
    let status = once.wait_terminal(&reference, Duration::from_secs(600)).await;
    assert_eq!(
        (status["status"].as_str(), status["shards"].as_u64()),
        (Some("finished"), Some(1)),
        "{status}"
    );

    let mut system = System::start(Options {
        env: env(&[
            ("TRACE_MAX_SHARDS", "4"),
            ("TRACE_SHARD_MIN_IDS", "7500"),
            ("TRACE_LIGHT_WORKER_CONCURRENCY", "4"),
            ("TRACE_WORKER_VISIBILITY_SECONDS", "6"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2"),
            ("TRACE_CHECKPOINT_SECONDS", "1"),
            ("TRACE_DB_ID_BATCH_SIZE", "100"),
        ]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let victim = system.spawn_worker("light", &[]);
    let job = submit_five(&system, &ids).await;
    wait_ids_done(&system, &job, 2_000, Duration::from_secs(300)).await;
    let (_, s) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(s["shards"], 4, "{s}");
    system.kill(victim);
    system.spawn_worker("light", &[]);
    system.spawn_worker("light", &[]);
    let status = assert_invariants(&system, &job, &ids, &FIVE, Duration::from_secs(600)).await;
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!((status["shards"].as_u64(), status["shards_done"].as_u64()), (Some(4), Some(4)), "{status}");
    assert!(
        !log_lines(&system, "taking over a job whose worker stopped").is_empty(),
        "no shard was taken over"
    );
    eprintln!(
        "shards finished: {:?}",
        log_lines(&system, "shard finished")
            .iter()
            .map(|l| l.split("shard=").nth(1).unwrap_or("").split(' ').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    );

    let ((_, _, ours), (_, _, theirs)) =
        (system.stream_lines(&job).await, once.stream_lines(&reference).await);
    assert_eq!(ours.len(), theirs.len(), "stream lines");
    assert!(
        comparable(ours) == comparable(theirs),
        "the sharded job's stream differs from the job run whole"
    );
    for domain in [Domain::History, Domain::Holds] {
        let (a, b) = (pages(&system, &job, domain).await, pages(&once, &reference, domain).await);
        assert_eq!(a.len(), b.len(), "{domain} pages");
        assert!(a == b, "{domain}: pages differ");
    }
}

/// An MSD job split into 3 shards on the heavy queue: its records equal the database and its
/// aggregation, merged from the shards' parts, equals the SQL `GROUP BY` oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_msd_job_aggregates_as_the_sql_oracle() {
    let system = System::start(Options {
        env: env(&[
            ("TRACE_ASYNC_CID_THRESHOLD", "100"),
            ("TRACE_MAX_SHARDS", "3"),
            ("TRACE_SHARD_MIN_IDS", "3000"),
            ("TRACE_HEAVY_WORKER_CONCURRENCY", "3"),
        ]),
        ..Default::default()
    })
    .await;
    let ids = ids(9_000);
    let views = [Domain::UpstreamHistory, Domain::DownstreamRejects];
    let request = json!({ "container_ids": ids, "profile": "msd", "domains": ["upstream_history", "downstream_rejects"] });
    let (code, accepted) = system.submit(&request).await;
    assert_eq!(code, 202, "{accepted}");
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    let status = system.wait_terminal(&job, Duration::from_secs(600)).await;
    assert_eq!(
        (status["status"].as_str(), status["shards"].as_u64()),
        (Some("finished"), Some(3)),
        "{status}"
    );
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &views, true);
    assert_matches_database(&records, &ids).await;
    let agg = &lines.iter().find(|l| l["type"] == "aggregation").expect("aggregation line")["data"];
    assert_aggregation_matches_sql(agg, &ids).await;
}
