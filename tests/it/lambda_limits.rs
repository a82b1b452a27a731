//! Lambda's payload limits, in Lambda mode against the Runtime API emulator (which enforces them:
//! 6,291,556 bytes buffered, 200 MB streamed; see `trace_integration::lambda::over_limit`).
//!
//! - The stream route knows its size before the first byte: a result over `TRACE_STREAM_MAX_BYTES` is
//!   refused up front (413 `RESULT_TOO_LARGE_FOR_STREAM`, naming the chunks route), a result that fits
//!   only compressed is sent gzip to a caller that accepts it.
//! - The inline answer at the edge of `TRACE_INLINE_MAX_BYTES`, counted as `lambda_http` sends it
//!   (escaped), is delivered; just over, it becomes a job; a budget set above Lambda's limit is clamped.

use std::time::Duration;

use serde_json::{json, Value};
use trace_core::api::json_string_overhead;
use trace_core::layout::{self, Manifest};
use trace_core::ports::ChunkStore;
use trace_core::stream_size;
use trace_integration::lambda::{HttpAnswer, Invocation, LambdaFunction, MAX_BUFFERED_BYTES};
use trace_integration::system::{Options, System};

use crate::lambda_events::{async_submit, cids, create_job, event, event_for, ANSWER};

/// The stream event of `job` with the caller's `Accept-Encoding` (none: the header removed).
fn stream_event(job: &str, accept_encoding: Option<&str>) -> Value {
    let mut e = event_for("stream.json", job);
    let headers = e["headers"].as_object_mut().expect("headers");
    headers.remove("accept-encoding");
    if let Some(value) = accept_encoding {
        headers.insert("accept-encoding".into(), json!(value));
    }
    e
}

/// Streams `job` through `function`; the HTTP answer, streamed.
async fn stream(function: &mut LambdaFunction, job: &str, accept_encoding: Option<&str>) -> HttpAnswer {
    let answer = function.invoke(stream_event(job, accept_encoding), ANSWER).await.http();
    assert!(answer.streamed, "the stream function answers with a streamed response");
    answer
}

/// Checks a 413 answer: the error alone (no NDJSON byte before or after it), with its fields.
fn assert_refused(answer: &HttpAnswer, job: &str, plain: u64, limit: u64) {
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("content-encoding"), None, "an error is never compressed");
    let text = answer.text();
    assert_eq!(text.lines().count(), 1, "the body is the error alone: {text:.500}");
    let body = answer.json();
    assert!(body.get("type").is_none(), "no stream line: {body}");
    assert_eq!(body["code"], "RESULT_TOO_LARGE_FOR_STREAM", "{body}");
    assert_eq!(body["error"]["code"], "RESULT_TOO_LARGE_FOR_STREAM", "{body}");
    assert_eq!((body["bytes"].as_u64(), body["limit"].as_u64()), (Some(plain), Some(limit)), "{body}");
    let chunks = format!("/api/trace/job/{job}/chunks");
    assert_eq!(body["chunks_url"].as_str(), Some(chunks.as_str()));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("GET {chunks}")), "{message}");
}

async fn manifest(system: &System, job: &str) -> Manifest {
    let key = layout::manifest_key(&job.parse().expect("job id"));
    let bytes = system.store.get(&key).await.expect("manifest");
    serde_json::from_slice(&bytes).expect("manifest JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_the_cap_is_refused_before_its_first_byte_or_sent_compressed() {
    let mut system = System::start(Options::default()).await;
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let submit = async_submit(&mut system).await;
    let job = create_job(&submit, &cids(1..=400), &["holds", "history"]).await;
    let done = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "finished", "{done}");

    // No limit set: Lambda's own (200 MiB minus the margin). Plain without Accept-Encoding; gzip with it.
    let mut unlimited = LambdaFunction::start(&system, "stream", &[]).await;
    let plain = stream(&mut unlimited, &job, None).await;
    assert_eq!((plain.status, plain.header("content-type")), (200, Some("application/x-ndjson")));
    assert_eq!(plain.header("content-encoding"), None, "plain when gzip is not accepted");
    let plain_bytes = plain.body.len() as u64;
    assert_eq!(plain.header("x-trace-stream-bytes"), Some(plain_bytes.to_string().as_str()));
    let lines = plain.ndjson();
    assert_eq!(lines.last().map(|l| l["type"].clone()), Some(json!("complete")));
    let (_, _, local) = system.stream_lines(&job).await;
    assert_eq!(local, lines, "the plain Lambda stream is the local process's");

    let gzip = stream(&mut unlimited, &job, Some("gzip, deflate")).await;
    assert_eq!((gzip.status, gzip.header("content-encoding")), (200, Some("gzip")));
    assert_eq!(gzip.header("vary"), Some("accept-encoding"));
    assert_eq!(gzip.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(gzip.header("x-trace-stream-bytes"), Some(plain_bytes.to_string().as_str()));
    assert_eq!(gzip.decoded(), plain.body, "the decoded body is the plain stream, byte for byte");
    assert_eq!(gzip.ndjson(), lines);
    let compressed = gzip.body.len() as u64;
    let m = manifest(&system, &job).await;
    let estimate = stream_size::gzip_estimate(&m, 5000);
    let stored: u64 =
        m.domains.iter().flat_map(|d| &d.chunks).map(|c| c.stored_bytes.unwrap_or(c.bytes)).sum();
    let (num, den) = stream_size::GZIP_OVER_STORED;
    eprintln!(
        "stream of {} records: plain {plain_bytes} B, gzip {compressed} B (ratio {:.2}), stored chunks {stored} B \
         (gzip/stored {:.3}), estimate {estimate} B (safety factor {num}/{den})",
        m.total_records,
        plain_bytes as f64 / compressed as f64,
        compressed as f64 / stored as f64
    );
    assert!(compressed <= estimate, "the estimate ({estimate}) is not below the real size ({compressed})");
    assert!(
        estimate * den <= compressed * num + 4096 * den,
        "the estimate ({estimate}) is within the safety factor of the real size ({compressed})"
    );

    // (a) A small cap, below even the compressed size: refused up front, with or without gzip.
    let small = plain_bytes / 10;
    let mut capped =
        LambdaFunction::start(&system, "stream", &[("TRACE_STREAM_MAX_BYTES", &small.to_string())]).await;
    for accept in [None, Some("gzip")] {
        let refused = stream(&mut capped, &job, accept).await;
        assert_refused(&refused, &job, plain_bytes, small);
    }

    // (b) A cap the result fits only compressed: gzip to a caller that accepts it, refused otherwise.
    let half = plain_bytes / 2;
    assert!(estimate + 1024 < half, "the test's result compresses well enough ({estimate} of {plain_bytes})");
    let mut capped =
        LambdaFunction::start(&system, "stream", &[("TRACE_STREAM_MAX_BYTES", &half.to_string())]).await;
    let served = stream(&mut capped, &job, Some("br;q=1.0, gzip;q=0.5")).await;
    assert_eq!(
        (served.status, served.header("content-encoding")),
        (200, Some("gzip")),
        "{:.300}",
        served.text()
    );
    assert!((served.body.len() as u64) <= half);
    assert_eq!(served.ndjson(), lines, "line for line the plain stream");
    for accept in [None, Some("identity"), Some("gzip;q=0")] {
        let refused = stream(&mut capped, &job, accept).await;
        assert_refused(&refused, &job, plain_bytes, half);
    }
}

/// An inline answer for `ids` through a submit process that answers everything inline: its size as
/// `lambda_http` sends it (the JSON escaped as a string).
async fn escaped_size(system: &System, submit: &str, ids: &[String]) -> usize {
    let r = system
        .http
        .post(format!("{submit}/api/trace/events"))
        .json(&json!({ "container_ids": ids, "domains": ["history"] }))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 200, "inline answer");
    let body = r.bytes().await.expect("body");
    body.len() + json_string_overhead(&body)
}

/// The largest `n` in `low..=high` with `size(ids 1..=n) <= target` (sizes grow with `n`), and its size.
async fn largest_under(system: &System, submit: &str, target: usize, low: u32, high: u32) -> (u32, usize) {
    let (mut low, mut high) = (low, high);
    let mut best = (0, 0);
    while low <= high {
        let mid = low + (high - low) / 2;
        let size = escaped_size(system, submit, &cids(1..=mid)).await;
        if size <= target {
            best = (mid, size);
            low = mid + 1;
        } else {
            high = mid - 1;
        }
    }
    best
}

/// The submit event with `ids` over history.
fn submit_event(ids: &[String]) -> Value {
    let body = json!({ "container_ids": ids, "domains": ["history"] }).to_string();
    let mut e = event("submit.json");
    e["headers"]["content-length"] = json!(body.len().to_string());
    e["body"] = json!(body);
    e
}

/// The escaped body size of a buffered HTTP answer, as carried in the invoke response.
fn carried(answer: &Value) -> usize {
    serde_json::to_vec(answer).map_or(0, |v| v.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_answers_at_lambda_s_edge_are_delivered_and_over_it_become_jobs() {
    let mut system = System::start(Options { no_workers: true, ..Default::default() }).await;
    // Sizes first, on a local submit process that answers every request inline.
    let sizer = system.spawn_http("submit", &[("TRACE_INLINE_MAX_BYTES", "50000000")]).await;
    // The default budget; the frame around the records counts a little more than the answer's own bytes.
    let budget = 5_800_000usize;
    let (under, under_size) = largest_under(&system, &sizer, budget - 512, 1, 20_000).await;
    assert!(under > 0 && under < 20_000, "{under} ids");
    assert!(
        under_size >= budget * 98 / 100,
        "{under} ids answer {under_size} escaped bytes: within 2% under the budget of {budget}"
    );
    let mut over = under + 1;
    while escaped_size(&system, &sizer, &cids(1..=over)).await <= budget + 512 {
        over += 1;
    }
    eprintln!("inline edge: {under} ids → {under_size} escaped bytes (budget {budget}); {over} ids over it");

    // (c) In Lambda mode, the default budget: just under → delivered, just over → a job.
    let mut submit = LambdaFunction::start(&system, "submit", &[]).await;
    let delivered = submit.invoke(submit_event(&cids(1..=under)), ANSWER).await;
    let Invocation::Buffered(raw) = &delivered else {
        panic!("the emulator refused the answer: {delivered:?}")
    };
    let size = carried(raw);
    assert!(size <= MAX_BUFFERED_BYTES, "{size} bytes carried");
    let answer = delivered.clone().http();
    assert_eq!(answer.status, 200, "{:.300}", answer.text());
    let body = answer.json();
    let records = body["results"]["history"]["count"].as_u64().unwrap_or_default();
    assert!(
        records > 0 && body["results"]["history"]["data"].as_array().map(Vec::len) == Some(records as usize)
    );
    let accepted = submit.invoke(submit_event(&cids(1..=over)), ANSWER).await.http();
    assert_eq!(accepted.status, 202, "{:.300}", accepted.text());
    assert!(accepted.json()["job_id"].is_string());

    // (d) A budget set above Lambda's limit (an operator mistake) and an answer between the two.
    let (big, big_size) = largest_under(&system, &sizer, 6_900_000, over, 20_000).await;
    assert!(big_size > MAX_BUFFERED_BYTES + 100_000, "{big} ids answer {big_size} escaped bytes");
    eprintln!("over Lambda's limit: {big} ids → {big_size} escaped bytes");
    let too_high = [("TRACE_INLINE_MAX_BYTES", "7000000")];
    // Unclamped: the answer is built, and Lambda refuses it — the invocation fails, as in AWS.
    let mut unclamped =
        LambdaFunction::start(&system, "submit", &[too_high[0], ("TRACE_INLINE_LAMBDA_CLAMP", "false")])
            .await;
    match unclamped.invoke(submit_event(&cids(1..=big)), ANSWER).await {
        Invocation::Error(e) => {
            assert_eq!(e.error_type, "Function.ResponseSizeTooLarge", "{e:?}");
        }
        other => {
            panic!("an answer over 6,291,556 bytes must fail the invocation: {:.300}", format!("{other:?}"))
        }
    }
    // Clamped (the default): the same request becomes a job.
    let mut clamped = LambdaFunction::start(&system, "submit", &too_high).await;
    let accepted = clamped.invoke(submit_event(&cids(1..=big)), ANSWER).await.http();
    assert_eq!(accepted.status, 202, "{:.300}", accepted.text());
    assert!(accepted.json()["job_id"].is_string());
}
