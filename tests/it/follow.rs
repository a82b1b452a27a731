//! The live tail on the local stack (the function binaries as processes on SQS/S3, Redis and
//! PostgreSQL): a job split into shards, followed from the moment it is accepted, sends its first
//! domain's records while it runs and ends with the very lines of its finished stream.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use trace_core::layout;
use trace_core::ports::ChunkStore;
use trace_integration::checks::{env, ids};
use trace_integration::system::{Options, System};

use crate::faults::{submit_five, FIVE};

/// Lines of a response body as they arrive, each with when.
async fn timed_lines(response: reqwest::Response) -> Vec<(Instant, f64, Value)> {
    let mut body = response.bytes_stream();
    let (mut lines, mut partial) = (Vec::new(), Vec::<u8>::new());
    while let Some(piece) = body.next().await {
        partial.extend_from_slice(&piece.expect("followed stream body"));
        while let Some(at) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=at).collect();
            let value = serde_json::from_slice(&line).unwrap_or_else(|e| panic!("a bad NDJSON line: {e}"));
            let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
            lines.push((Instant::now(), epoch.as_secs_f64(), value));
        }
    }
    assert!(partial.is_empty(), "the stream ends with a whole line");
    lines
}

/// A 30,000-id job over five domains in 2 shards of 5,000-record chunks, followed from its
/// acceptance: the first `records` line arrives while the job runs (how long after the first chunk
/// was stored is printed), and the followed lines equal the finished stream's, line for line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_sharded_job_sends_records_while_it_runs_and_ends_as_its_finished_stream() {
    let ids = ids(30_000);
    let system = System::start(Options {
        env: env(&[
            ("TRACE_MAX_SHARDS", "2"),
            ("TRACE_SHARD_MIN_IDS", "7500"),
            ("TRACE_LIGHT_WORKER_CONCURRENCY", "2"),
            ("TRACE_CHUNK_RECORDS", "5000"),
            ("TRACE_STREAM_BATCH_SIZE", "1000"),
            ("TRACE_DB_ID_BATCH_SIZE", "100"),
        ]),
        ..Default::default()
    })
    .await;
    let job = submit_five(&system, &ids).await;
    let job_id = job.parse().expect("job id");

    // When the result's first chunk (the first domain's, shard 0's) appears in the object store, and
    // when the job's count does (looked for every 20 ms).
    let store = system.store.clone();
    let first_chunk = tokio::spawn(async move {
        let first = format!("{}0000-000000-", layout::domain_prefix(&job_id, FIVE[0]));
        let (mut chunk, mut counted) = (None, None);
        while chunk.is_none() || counted.is_none() {
            if chunk.is_none() && !store.list(&first).await.expect("list").is_empty() {
                chunk = Some(Instant::now());
            }
            if counted.is_none() && store.get(&layout::count_key(&job_id)).await.is_ok() {
                counted = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (chunk.expect("chunk"), counted.expect("counts"))
    });
    let url = format!("{}/api/trace/job/{job}/stream?follow=true", system.stream);
    let response = system.http.get(url).send().await.expect("follow");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().get("x-trace-stream-bytes").is_none(), "no size before the job's end");
    let followed = timed_lines(response).await;
    let (first_chunk, counted) = first_chunk.await.expect("watcher");

    let status = system.wait_terminal(&job, Duration::from_secs(600)).await;
    assert_eq!(
        (status["status"].as_str(), status["shards"].as_u64()),
        (Some("finished"), Some(2)),
        "{status}"
    );
    let (code, _, finished) = system.stream_lines(&job).await;
    assert_eq!(code, 200);
    let lines: Vec<&Value> = followed.iter().map(|(_, _, l)| l).collect();
    assert_eq!(lines.len(), finished.len(), "as many lines as the finished stream");
    for (i, (got, want)) in lines.iter().zip(&finished).enumerate() {
        assert!(*got == want, "line {i} differs: {:.200} / {:.200}", got.to_string(), want.to_string());
    }
    assert_eq!(lines.iter().filter(|l| l["type"] == "domain_start").count(), FIVE.len());

    // Records before the job's end (`completed_at`, epoch seconds; a second's margin).
    let completed = status["completed_at"].as_f64().expect("completed_at");
    let records: Vec<&(Instant, f64, Value)> =
        followed.iter().filter(|(_, _, l)| l["type"] == "records").collect();
    let early = records.iter().filter(|(_, at, _)| *at < completed - 1.0).count();
    assert!(early > 0, "records lines arrived while the job ran: {status}");
    eprintln!(
        "first records line {} ms after the result's first chunk was stored ({} ms after the count); \
         {early} of {} records lines came more than 1 s before the job finished",
        records[0].0.saturating_duration_since(first_chunk).as_millis(),
        records[0].0.saturating_duration_since(counted).as_millis(),
        records.len()
    );
}
