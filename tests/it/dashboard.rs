//! The dashboard's own front end, played against the function processes on the local stack.
//!
//! The production dashboard (a Vue composable, `useTraceProgress`) submits a trace, polls the job's
//! `status_url` every few hundred milliseconds, then reads `stream_url` (or `status_url + "/result"`)
//! and rebuilds per-domain `data` arrays with `total` from `domain_start`. It reads fields by type:
//! `progress` as text, `error` as text or null, `created_at` and `elapsed_seconds` as numbers, and
//! error bodies by `error.message || error || message` and `error.code || code`. This module does the
//! same, checks every body's field types on the way, and compares what it rebuilt with the database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trace_core::Domain;
use trace_dataset::container_id;
use trace_integration::database::{digest_db, digest_json};
use trace_integration::pg_pool;
use trace_integration::system::{Options, System};

/// What the dashboard keeps of a finished trace.
#[derive(Debug, Default)]
struct Rebuilt {
    /// Per domain: the records, in order.
    data: BTreeMap<String, Vec<Value>>,
    /// Per domain: `total` of its `domain_start` line (async) or `count` (inline).
    totals: BTreeMap<String, u64>,
    /// The MSD aggregation's `data`, when sent.
    aggregation: Option<Value>,
}

/// The error text and code as the dashboard reads them from an error body.
fn dashboard_error(body: &Value) -> (String, String) {
    let message = body["error"]["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .or_else(|| body["message"].as_str())
        .unwrap_or_default();
    let code = body["error"]["code"].as_str().or_else(|| body["code"].as_str()).unwrap_or_default();
    (message.to_owned(), code.to_owned())
}

/// Every status body, every poll: the field types the dashboard relies on.
fn check_status_types(body: &Value) {
    let is = |field: &str, ok: bool| assert!(ok, "status field {field} has the wrong type: {body}");
    is("job_id", body["job_id"].is_string());
    is("status", body["status"].is_string());
    is("profile", body["profile"].is_string());
    is("cid_count", body["cid_count"].is_u64());
    is("domains", body["domains"].as_array().is_some_and(|d| d.iter().all(Value::is_string)));
    is("progress", body["progress"].is_string());
    is("created_at", body["created_at"].is_number());
    is("elapsed_seconds", body["elapsed_seconds"].is_number());
    is("error", body["error"].is_string() || body["error"].is_null());
    let created = body["created_at"].as_f64().unwrap_or_default();
    assert!(created > 1.7e9 && created < 4.1e9, "created_at is epoch seconds: {body}");
}

/// Plays the dashboard: submit, then either the inline answer or status polling and the stream.
async fn trace(system: &System, request: &Value) -> Result<Rebuilt, (String, String)> {
    let (code, body) = system.submit(request).await;
    match code {
        200 => {
            assert_eq!(body["stage"], "events", "{body:.300}");
            return Ok(from_inline(&body));
        }
        202 => {}
        _ => return Err(dashboard_error(&body)),
    }
    assert_eq!((body["async"].as_bool(), body["stage"].as_str()), (Some(true), Some("events")));
    let status_url = body["status_url"].as_str().expect("status_url").to_owned();
    let stream_url = body["stream_url"].as_str().expect("stream_url").to_owned();
    let status = poll(system, &status_url).await;
    match status["status"].as_str() {
        Some("finished") => Ok(from_stream(system, &stream_url).await),
        Some("failed") => Err((
            status["error"].as_str().expect("a failed job's error is text").to_owned(),
            "JOB_FAILED".to_owned(),
        )),
        other => panic!("job ended {other:?}"),
    }
}

/// Polls `status_url` every 300 ms, checking each body, until `finished` or `failed`.
async fn poll(system: &System, status_url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut progress_seen = Vec::new();
    loop {
        let (code, body) = system.get_status(status_url).await;
        assert_eq!(code, 200, "{body}");
        check_status_types(&body);
        let text = body["progress"].as_str().unwrap_or_default().to_owned();
        if progress_seen.last() != Some(&text) {
            progress_seen.push(text);
        }
        if matches!(body["status"].as_str(), Some("finished" | "failed")) {
            eprintln!("progress texts seen: {progress_seen:?}");
            return body;
        }
        assert!(Instant::now() < deadline, "still polling: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn from_inline(body: &Value) -> Rebuilt {
    let mut out = Rebuilt::default();
    for (domain, result) in body["results"].as_object().expect("results") {
        let data = result["data"].as_array().expect("data").clone();
        out.totals.insert(domain.clone(), result["count"].as_u64().expect("count"));
        out.data.insert(domain.clone(), data);
    }
    out.aggregation = Some(body["aggregation"].clone()).filter(|a| !a.is_null());
    out
}

/// Reads the NDJSON stream line by line as the dashboard does: known line types only, others (and
/// lines it cannot parse) skipped.
async fn from_stream(system: &System, stream_url: &str) -> Rebuilt {
    let r = system.http.get(format!("{}{stream_url}", system.stream)).send().await.expect("stream");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("stream body");
    let mut out = Rebuilt::default();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<Value>(line) else { continue };
        let domain = line["domain"].as_str().unwrap_or_default().to_owned();
        match line["type"].as_str() {
            Some("domain_start") => {
                out.totals.insert(domain.clone(), line["total"].as_u64().expect("total"));
                out.data.entry(domain).or_default();
            }
            Some("records") => {
                out.data.entry(domain).or_default().extend(line["data"].as_array().expect("data").clone())
            }
            Some("aggregation") => out.aggregation = Some(line["data"].clone()),
            Some("warning") => panic!("unexpected warning line: {line}"),
            _ => {}
        }
    }
    out
}

/// The rebuilt result equals the database, domain by domain, and each `total` is its record count.
async fn assert_equals_database(rebuilt: &Rebuilt, domains: &[Domain], ids: &[String]) {
    let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
    assert_eq!(rebuilt.data.keys().map(String::as_str).collect::<Vec<_>>().len(), names.len());
    for (domain, records) in &rebuilt.data {
        assert_eq!(rebuilt.totals[domain], records.len() as u64, "{domain}: total");
    }
    let got = digest_json(domains.iter().flat_map(|d| rebuilt.data[d.as_str()].iter().map(move |r| (*d, r))));
    let want = digest_db(&pg_pool(), domains, ids).await;
    assert_eq!(got, want, "records equal the database");
}

fn ids(n: u64) -> Vec<String> {
    (1..=n).map(container_id).collect()
}

async fn system() -> System {
    System::start(Options::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_an_inline_and_an_async_trace() {
    let system = system().await;
    // Inline: a small request, as the dashboard sends it (extra fields, padded ids, junk entries).
    let small = ids(300);
    let mut sent: Vec<Value> = small.iter().map(|id| json!(format!("  {id} "))).collect();
    sent.extend([json!(""), json!(7), json!(null)]);
    let request = json!({
        "profile": "query_tool", "container_ids": sent, "domains": ["history", "holds"],
        "params": {}, "cache_key": "dash-1", "seed_container_ids": [small[0]],
        "lineage": { "ancestors": {}, "children_map": {}, "seed_roots": [] }
    });
    let rebuilt = trace(&system, &request).await.expect("inline trace");
    assert_equals_database(&rebuilt, &[Domain::History, Domain::Holds], &small).await;

    // Async: above the threshold, followed through status and stream.
    let many = ids(25_000);
    let request =
        json!({ "profile": "query_tool", "container_ids": many, "domains": ["materials", "holds"] });
    let rebuilt = trace(&system, &request).await.expect("async trace");
    assert_equals_database(&rebuilt, &[Domain::Materials, Domain::Holds], &many).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_msd_page_runs_backward_and_forward_traces() {
    let system = system().await;
    let many = ids(21_000);
    for domains in
        [[Domain::UpstreamHistory, Domain::Materials], [Domain::UpstreamHistory, Domain::DownstreamRejects]]
    {
        let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
        let request = json!({ "profile": "mid_section_defect", "container_ids": many, "domains": names });
        let rebuilt = trace(&system, &request).await.expect("msd trace");
        assert_equals_database(&rebuilt, &domains, &many).await;
        let aggregation = rebuilt.aggregation.expect("MSD sends its aggregation");
        assert!(aggregation["group_count"].as_u64().unwrap_or_default() > 0, "{aggregation}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_and_a_refused_request_read_as_text() {
    // A job whose source fails on its only delivery: the workers' database is unreachable.
    let mut system = System::start(Options {
        env: vec![
            ("TRACE_ASYNC_CID_THRESHOLD", "1".into()),
            ("TRACE_MAX_RECEIVE_COUNT", "1".into()),
            ("TRACE_RETRY_WINDOW_SECONDS", "1".into()),
        ],
        no_workers: true,
        ..Options::default()
    })
    .await;
    system.spawn_worker("light", &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/trace")]);
    let request = json!({ "container_ids": ids(3), "domains": ["holds"] });
    let (message, code) = trace(&system, &request).await.expect_err("the job fails");
    assert_eq!(code, "JOB_FAILED");
    assert!(!message.is_empty() && !message.contains("[object"), "readable reason: {message}");

    // Refused requests: code and message where the dashboard looks for them.
    for (request, want) in [
        (json!({ "container_ids": [] }), "EMPTY_CONTAINER_IDS"),
        (json!({ "container_ids": ["A"], "domains": ["nope"] }), "UNKNOWN_DOMAIN"),
        (json!({ "container_ids": ids(50_001), "domains": ["holds"] }), "CID_LIMIT_EXCEEDED"),
    ] {
        let (message, code) = trace(&system, &request).await.expect_err("refused");
        assert_eq!(code, want);
        assert!(!message.is_empty(), "{want}: a message");
    }
}
