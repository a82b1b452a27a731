//! Issue 3's acceptance, black-box over HTTP: the submit, status, stream and worker binaries run as
//! local processes on SQS/S3 (LocalStack or moto), Redis and PostgreSQL; results are checked against
//! the database itself.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trace_core::message::ShardMessage;
use trace_core::ports::{ChunkStore, JobQueue, StoreError};
use trace_core::{Domain, JobId, Profile};
use trace_integration::checks::{assert_matches_database, check_stream, env, ids, wait_running};
use trace_integration::database::{count, msd_by_sql};
use trace_integration::pg_pool;
use trace_integration::system::{
    http_client, sigv4_request, Options, System, OTHER_API_KEY, SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25k_job_runs_async_and_streams_exactly_the_database_rows() {
    let system = System::start(Options::default()).await;
    let ids = ids(25_000);
    let (code, accepted) = system.submit(&json!({ "container_ids": ids, "profile": "query_tool" })).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["async"], true);
    assert_eq!(accepted["stage"], "events");
    assert_eq!(accepted["queue"], "light");
    let job = accepted["job_id"].as_str().expect("job_id").to_owned();
    for (field, suffix) in [("status_url", ""), ("result_url", "/result"), ("stream_url", "/stream")] {
        assert_eq!(accepted[field], format!("/api/trace/job/{job}{suffix}"));
    }
    let status = system.wait_terminal(&job, Duration::from_secs(600)).await;
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(status["progress_detail"]["percent"], 100.0);
    assert_eq!(status["progress_detail"]["ids_done"], 25_000);
    assert_eq!(status["cid_count"], 25_000);
    assert!(status["completed_at"].is_f64() && status["started_at"].is_f64());
    assert_eq!(status["progress"], "complete");
    assert!(status["elapsed_seconds"].as_f64().expect("elapsed") > 0.0);

    let (code, ctype, lines) = system.stream_lines(&job).await;
    assert_eq!((code, ctype.as_str()), (200, "application/x-ndjson"));
    let records = check_stream(&job, &lines, &Domain::BASE, false);
    let total: usize = records.values().map(Vec::len).sum();
    assert_eq!(status["progress_detail"]["records_written"].as_u64(), Some(total as u64));
    assert_matches_database(&records, &ids).await;

    // Chunks are stored gzip-compressed (the default), well under their NDJSON size.
    let stored = system.store.list(&format!("jobs/{job}/result/")).await.expect("list");
    assert!(!stored.is_empty() && stored.iter().all(|o| o.key.ends_with(".ndjson.gz")), "{stored:?}");
    let stored_bytes: u64 = stored.iter().map(|o| o.size).sum();
    let ndjson_bytes: usize = lines
        .iter()
        .filter(|l| l["type"] == "records")
        .flat_map(|l| l["data"].as_array())
        .flatten()
        .map(|r| r.to_string().len() + 1)
        .sum();
    assert!(
        stored_bytes * 3 < ndjson_bytes as u64,
        "{stored_bytes} bytes stored for {ndjson_bytes} of NDJSON"
    );

    // A damaged chunk is never served: the stream ends with an error line, the page is a 500.
    let victim = stored.iter().find(|o| o.key.contains("/holds/")).expect("a holds chunk");
    let mut body = system.store.get(&victim.key).await.expect("chunk").to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 0x20;
    system.store.put(&victim.key, body.into()).await.expect("put");
    let (_, _, lines) = system.stream_lines(&job).await;
    let last = lines.last().expect("lines");
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("CHUNK_CORRUPT")),
        "{last}"
    );
    assert!(lines.iter().all(|l| l["type"] != "complete"));
    let (code, page) =
        system.get_stream(&format!("/api/trace/job/{job}/result?domain=holds&limit=5000")).await;
    assert_eq!((code, page["code"].as_str()), (500, Some("INTERNAL_ERROR")), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_answer_has_exactly_the_records_of_the_async_path() {
    let mut system = System::start(Options::default()).await;
    let ids = ids(500);
    let request = json!({ "container_ids": ids });
    let (code, inline) = system.submit(&request).await;
    assert_eq!(code, 200, "500 ids run inline");
    assert_eq!(inline["stage"], "events");
    assert_eq!(inline["aggregation"], Value::Null);
    // The same request through a submit whose threshold makes it a job.
    let async_submit = system.spawn_http("submit", &[("TRACE_ASYNC_CID_THRESHOLD", "100")]).await;
    let r = system
        .http
        .post(format!("{async_submit}/api/trace/events"))
        .json(&request)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 202);
    let job = r.json::<Value>().await.expect("json")["job_id"].as_str().expect("job").to_owned();
    assert_eq!(system.wait_terminal(&job, Duration::from_secs(300)).await["status"], "finished");
    let (_, _, lines) = system.stream_lines(&job).await;
    let streamed = check_stream(&job, &lines, &Domain::BASE, false);
    let pool = pg_pool();
    for d in Domain::BASE {
        let data = inline["results"][d.as_str()]["data"].as_array().expect("inline data");
        assert_eq!(inline["results"][d.as_str()]["count"].as_u64(), Some(data.len() as u64));
        assert_eq!(data.len() as u64, count(&pool, d, &ids).await, "{d}: inline vs SQL");
        assert_eq!(data, &streamed[&d], "{d}: inline records differ from the async path's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_inline_answer_becomes_a_job_instead() {
    let system =
        System::start(Options { env: env(&[("TRACE_INLINE_MAX_BYTES", "200000")]), ..Default::default() })
            .await;
    let (code, body) = system.submit(&json!({ "container_ids": ids(2_000), "domains": ["history"] })).await;
    assert_eq!(code, 202, "an answer over the byte budget runs as a job: {body}");
    let job = body["job_id"].as_str().expect("job");
    assert_eq!(system.wait_terminal(job, Duration::from_secs(300)).await["status"], "finished");
    let (code, small) = system.submit(&json!({ "container_ids": ids(20), "domains": ["holds"] })).await;
    assert_eq!(code, 200, "{small}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cid_limit_refuses_non_msd_and_msd_bypasses_it_with_a_correct_aggregation() {
    let system = System::start(Options::default()).await;
    let ids = ids(60_000);
    let (code, refused) = system.submit(&json!({ "container_ids": ids, "profile": "query_tool" })).await;
    assert_eq!(code, 413);
    assert_eq!(refused["code"], "CID_LIMIT_EXCEEDED");
    assert_eq!((refused["cid_count"].as_u64(), refused["limit"].as_u64()), (Some(60_000), Some(50_000)));

    let (code, accepted) = system
        .submit(&json!({ "container_ids": ids, "profile": "mid_section_defect", "domains": ["rejects"] }))
        .await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["queue"], "heavy");
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    assert_eq!(system.wait_terminal(&job, Duration::from_secs(600)).await["status"], "finished");
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &[Domain::Rejects], true);
    assert_matches_database(&records, &ids).await;

    let agg = &lines.iter().find(|l| l["type"] == "aggregation").expect("aggregation line")["data"];
    assert_aggregation_matches_sql(agg, &ids).await;
}

/// The MSD aggregation of a job (its `aggregation` line's `data`) equals the SQL oracle's.
pub(crate) async fn assert_aggregation_matches_sql(agg: &Value, ids: &[String]) {
    let (groups, lots) = msd_by_sql(&pg_pool(), ids).await;
    assert_eq!(agg["group_count"].as_u64(), Some(groups.len() as u64));
    assert_eq!(agg["total_reject_qty"].as_i64(), Some(groups.values().map(|g| g.0).sum::<i64>()));
    assert_eq!(agg["reject_lot_count"].as_i64(), Some(lots));
    let top = agg["groups"].as_array().expect("groups");
    assert_eq!(top.len(), groups.len().min(100));
    let mut expected: Vec<_> = groups.iter().collect();
    expected.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
    for (g, ((wc, rc), (reject_qty, lots, qty_in))) in top.iter().zip(expected) {
        assert_eq!(
            (g["workcenter"].as_str(), g["reason_code"].as_str()),
            (Some(wc.as_str()), Some(rc.as_str()))
        );
        assert_eq!(
            (g["reject_qty"].as_i64(), g["lots"].as_i64(), g["qty_in"].as_i64()),
            (Some(*reject_qty), Some(*lots), Some(*qty_in)),
            "{wc}/{rc}"
        );
        let rate = g["defect_rate"].as_f64().expect("rate");
        assert!((rate - *reject_qty as f64 / *qty_in as f64).abs() < 1e-12);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msd_job_over_the_msd_views_aggregates_as_the_sql_oracle() {
    let system =
        System::start(Options { env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "100")]), ..Default::default() })
            .await;
    let ids = ids(10_000);
    let views = [Domain::UpstreamHistory, Domain::DownstreamRejects];
    let request = json!({ "container_ids": ids, "profile": "msd", "domains": ["upstream_history", "downstream_rejects"] });
    let (code, accepted) = system.submit(&request).await;
    assert_eq!(code, 202, "{accepted}");
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    assert_eq!(system.wait_terminal(&job, Duration::from_secs(600)).await["status"], "finished");
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &views, true);
    assert_eq!(records[&Domain::UpstreamHistory].len(), 197_906);
    assert_eq!(records[&Domain::DownstreamRejects].len(), 20_063);
    assert_matches_database(&records, &ids).await;
    let agg = &lines.iter().find(|l| l["type"] == "aggregation").expect("aggregation line")["data"];
    assert_aggregation_matches_sql(agg, &ids).await;

    // Without domains an MSD request traces backward (upstream_history, materials), here inline.
    let small = ids[..50].to_vec();
    let (code, inline) = system.submit(&json!({ "container_ids": small, "profile": "msd" })).await;
    assert_eq!(code, 200, "{inline}");
    let mut domains: Vec<&str> =
        inline["results"].as_object().expect("results").keys().map(String::as_str).collect();
    domains.sort_unstable();
    assert_eq!(domains, ["materials", "upstream_history"]);
    assert_aggregation_matches_sql(&inline["aggregation"], &small).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_across_chunk_boundaries_concatenate_to_the_whole_domain() {
    // Plain chunks here (the other tests store gzip): every encoding is read the same way.
    let system = System::start(Options {
        env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "100"), ("TRACE_CHUNK_ENCODING", "plain")]),
        ..Default::default()
    })
    .await;
    let (code, accepted) =
        system.submit(&json!({ "container_ids": ids(1_500), "domains": ["history", "holds"] })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    assert_eq!(system.wait_terminal(&job, Duration::from_secs(300)).await["status"], "finished");
    let (_, _, lines) = system.stream_lines(&job).await;
    let streamed = check_stream(&job, &lines, &[Domain::History, Domain::Holds], false);
    let total = streamed[&Domain::History].len();
    assert!(total > 3 * 5000, "the domain spans several chunks ({total})");
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let (code, page) = system
            .get_stream(&format!("/api/trace/job/{job}/result?domain=history&offset={offset}&limit=1234"))
            .await;
        assert_eq!(code, 200, "{page}");
        let h = &page["results"]["history"];
        assert_eq!(h["total"].as_u64(), Some(total as u64));
        let data = h["data"].as_array().expect("data").clone();
        assert_eq!(h["count"].as_u64(), Some(data.len() as u64));
        if data.is_empty() {
            break;
        }
        offset += data.len();
        paged.extend(data);
    }
    assert_eq!(paged, streamed[&Domain::History], "pages concatenated differ from the stream");
    let stored = system.store.list(&format!("jobs/{job}/result/")).await.expect("list");
    assert!(stored.iter().all(|o| o.key.ends_with(".ndjson")), "{stored:?}");
    // Without a domain: the job's first; bad parameters: 400 with a code.
    let (code, first) = system.get_stream(&format!("/api/trace/job/{job}/result?limit=3")).await;
    assert_eq!(code, 200);
    assert_eq!(first["results"]["history"]["data"].as_array().map(Vec::len), Some(3));
    for (query, code) in [
        ("limit=0", "INVALID_PARAMETER"),
        ("limit=5001", "INVALID_PARAMETER"),
        ("offset=-1", "INVALID_PARAMETER"),
        ("domain=nope", "UNKNOWN_DOMAIN"),
        ("domain=jobs", "INVALID_PARAMETER"),
    ] {
        let (status, body) = system.get_stream(&format!("/api/trace/job/{job}/result?{query}")).await;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
}

#[tokio::test]
async fn status_errors_and_unfinished_results_have_their_codes() {
    let system = System::start(Options {
        no_workers: true,
        env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]),
        ..Default::default()
    })
    .await;
    let (code, body) = system.get_status("/api/trace/job/not-a-uuid").await;
    assert_eq!((code, body["code"].as_str()), (400, Some("INVALID_PARAMETER")));
    let unknown = JobId::new();
    let (code, body) = system.get_status(&format!("/api/trace/job/{unknown}")).await;
    assert_eq!((code, body["code"].as_str()), (404, Some("JOB_NOT_FOUND")));
    let (code, body) = system.get_stream(&format!("/api/trace/job/{unknown}/stream")).await;
    assert_eq!((code, body["code"].as_str()), (404, Some("JOB_NOT_FOUND")));
    let (code, body) = system.get_status("/api/trace/jobs?status=running").await;
    assert_eq!((code, body["code"].as_str()), (400, Some("INVALID_PARAMETER")));

    // A queued job: stream is 409 with its status; history lists it.
    let (_, accepted) = system.submit(&json!({ "container_ids": ["CID-0000001", "CID-0000002"] })).await;
    let job = accepted["job_id"].as_str().expect("job");
    let (code, body) = system.get_stream(&format!("/api/trace/job/{job}/stream")).await;
    assert_eq!(
        (code, body["code"].as_str(), body["status"].as_str()),
        (409, Some("JOB_NOT_COMPLETE"), Some("queued"))
    );
    let (code, list) = system.get_status("/api/trace/jobs?status=queued&limit=5").await;
    assert_eq!(code, 200);
    assert_eq!(list["jobs"][0]["job_id"], job);

    // Malformed bodies.
    for (body, code) in [
        (json!({ "container_ids": [] }), "EMPTY_CONTAINER_IDS"),
        (json!({ "container_ids": ["ok", "bad\u{1}id"] }), "INVALID_CONTAINER_ID"),
        (json!({ "container_ids": ["", "  ", 7] }), "EMPTY_CONTAINER_IDS"),
        (json!({ "container_ids": ["A"], "domains": ["x"] }), "UNKNOWN_DOMAIN"),
        (json!({ "container_ids": ["A"], "profile": "x" }), "UNKNOWN_PROFILE"),
        (json!({ "ids": ["A"] }), "INVALID_REQUEST"),
    ] {
        let (status, answer) = system.submit(&body).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some(code)), "{body}");
    }
    let r = system
        .http
        .post(format!("{}/api/trace/events", system.submit))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "INVALID_JSON");
    let huge = format!(r#"{{"container_ids":["{}"]}}"#, "A".repeat(9 * 1024 * 1024));
    let r = system
        .http
        .post(format!("{}/api/trace/events", system.submit))
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn the_61st_status_request_and_the_16th_submit_in_a_minute_are_refused() {
    let system = System::start(Options {
        no_workers: true,
        env: env(&[("TRACE_RATE_LIMIT_REQUESTS", "60"), ("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "15")]),
        ..Default::default()
    })
    .await;
    let path = format!("/api/trace/job/{}", JobId::new());
    for i in 1..=60 {
        let (code, _) = system.get_status(&path).await;
        assert_eq!(code, 404, "request {i}");
    }
    let r = system.http.get(format!("{}{path}", system.status)).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 429);
    let retry_after: u64 = r.headers()["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "TOO_MANY_REQUESTS");
    assert_eq!(body["retry_after_seconds"].as_u64(), Some(retry_after));
    // A caller rotating junk keys gets 401 each time, not a fresh window; the real caller stays limited.
    for i in 0..20 {
        let junk = http_client(Some(&format!("junk-{i}")));
        let r = junk.get(format!("{}{path}", system.status)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 401, "junk key {i}");
        let r =
            junk.post(format!("{}/api/trace/events", system.submit)).body("{}").send().await.expect("post");
        assert_eq!(r.status().as_u16(), 401, "junk key {i} on submit");
    }
    let (code, _) = system.get_status(&path).await;
    assert_eq!(code, 429, "the junk keys gave the limited caller no new window");
    // Another authenticated caller has its own count.
    let r =
        http_client(Some(OTHER_API_KEY)).get(format!("{}{path}", system.status)).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 404);
    // Submits count apart from the reads (the 60 reads above do not use them up): 15, then 429.
    for i in 1..=15 {
        let (code, body) = system.submit(&json!({ "container_ids": [] })).await;
        assert_eq!((code, body["code"].as_str()), (400, Some("EMPTY_CONTAINER_IDS")), "submit {i}");
    }
    let (code, body) = system.submit(&json!({ "container_ids": ["CID-0000001"] })).await;
    assert_eq!((code, body["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")), "{body}");
    assert!(body["meta"]["retry_after_seconds"].as_u64().is_some_and(|s| (1..=60).contains(&s)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_run_leaves_a_cancelled_job_and_no_manifest() {
    let system = System::start(Options::default()).await;
    let (code, accepted) = system.submit(&json!({ "container_ids": ids(40_000) })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    wait_running(&system, &job).await;
    let r =
        system.http.delete(format!("{}/api/trace/job/{job}", system.status)).send().await.expect("cancel");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "cancelled");
    // The worker stops at its next batch and removes what it wrote; no manifest ever appears.
    let job_id: JobId = job.parse().expect("id");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = system.store.list(&format!("jobs/{job}/result/")).await.expect("list");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} result chunks still there", left.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = system.store.get(&trace_core::layout::manifest_key(&job_id)).await;
    assert!(matches!(manifest, Err(StoreError::NotFound(_))), "a cancelled job has a manifest");
    let (_, s) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(s["status"], "cancelled");
    let (code, body) = system.get_stream(&format!("/api/trace/job/{job}/stream")).await;
    assert_eq!((code, body["status"].as_str()), (409, Some("cancelled")));
    let r =
        system.http.delete(format!("{}/api/trace/job/{job}", system.status)).send().await.expect("cancel");
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "JOB_NOT_CANCELLABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_gives_one_result_counted_once() {
    let system = System::start(Options {
        env: env(&[
            ("TRACE_ASYNC_CID_THRESHOLD", "100"),
            ("TRACE_WORKER_VISIBILITY_SECONDS", "6"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2"),
        ]),
        workers_per_queue: 2,
        ..Default::default()
    })
    .await;
    let ids = ids(5_000);
    let (code, accepted) =
        system.submit(&json!({ "container_ids": ids, "domains": ["materials", "holds"] })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    let job_id: JobId = job.parse().expect("id");
    // The duplicate: the same shard message again, as SQS's at-least-once delivery may do.
    let duplicate =
        ShardMessage::whole(job_id, Profile::QueryTool, vec![Domain::Materials, Domain::Holds], 5_000);
    system
        .light
        .0
        .send(&duplicate.to_body(), &[("job_id", &job), ("shard", "0")])
        .await
        .expect("send duplicate");
    let status = system.wait_terminal(&job, Duration::from_secs(300)).await;
    assert_eq!(status["status"], "finished");
    // Both deliveries get consumed, and neither runs the job a second time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while system.light.0.approximate_counts().await.expect("counts") != (0, 0) {
        assert!(Instant::now() < deadline, "the duplicate was never consumed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(1)),
        "{status}"
    );
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &[Domain::Materials, Domain::Holds], false);
    assert_matches_database(&records, &ids).await;
    let chunks = system.store.list(&format!("jobs/{job}/result/")).await.expect("list");
    let manifest: Value = serde_json::from_slice(
        &system.store.get(&format!("jobs/{job}/manifest.json")).await.expect("manifest"),
    )
    .expect("json");
    let listed: usize = manifest["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .map(|d| d["chunks"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(chunks.len(), listed, "stored chunks vs manifest");
    assert_eq!(status["progress_detail"]["records_written"], manifest["total_records"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_ends_in_the_dead_letter_queue_and_its_job_fails() {
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
    // A worker whose database is unreachable: every delivery fails.
    system.spawn_worker("light", &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/trace")]);
    let (code, accepted) = system.submit(&json!({ "container_ids": ["CID-0000001", "CID-0000002"] })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    let status = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error_code"], "SOURCE_ERROR");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let got =
            system.light.1.receive(1, Duration::from_secs(2), Duration::from_secs(30)).await.expect("dlq");
        if let Some(d) = got.into_iter().next() {
            break d;
        }
        assert!(Instant::now() < deadline, "the message never reached the dead-letter queue");
    };
    assert_eq!(dead.attributes.get("job_id"), Some(&job));
    assert_eq!(ShardMessage::parse(&dead.body).expect("shard message").job_id.to_string(), job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_job_releases_it_and_another_finishes_it() {
    let mut system = System::start(Options {
        env: env(&[("TRACE_WORKER_VISIBILITY_SECONDS", "8"), ("TRACE_WORKER_HEARTBEAT_SECONDS", "2")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let first = system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let (code, accepted) =
        system.submit(&json!({ "container_ids": ids, "domains": ["history", "jobs"] })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    wait_running(&system, &job).await;
    // SIGTERM: the worker releases the job (back to queued, message visible) and exits cleanly.
    let exit = system.terminate(first, Duration::from_secs(30)).expect("worker exits after SIGTERM");
    assert!(exit.success(), "worker exit status {exit:?}");
    let (_, s) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!((s["status"].as_str(), s["attempt"].as_u64()), (Some("queued"), Some(1)), "{s}");
    // A new worker picks it up from the start and finishes it.
    system.spawn_worker("light", &[]);
    let status = system.wait_terminal(&job, Duration::from_secs(600)).await;
    assert_eq!((status["status"].as_str(), status["attempt"].as_u64()), (Some("finished"), Some(2)));
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &[Domain::History, Domain::Jobs], false);
    assert_matches_database(&records, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The next delivery after the lease expired takes the job over: with two deliveries allowed, the
/// second must (it used to find the dead worker's progress write fresher than the message's visibility,
/// bounce as "busy", and leave the job `started` with its message in the dead-letter queue).
async fn a_crashed_worker_s_job_is_taken_over_by_the_next_delivery() {
    let mut system = System::start(Options {
        env: env(&[
            ("TRACE_WORKER_VISIBILITY_SECONDS", "6"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "2"),
            ("TRACE_MAX_RECEIVE_COUNT", "2"),
            ("TRACE_RETRY_WINDOW_SECONDS", "1"),
        ]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let first = system.spawn_worker("light", &[]);
    let ids = ids(30_000);
    let (_, accepted) = system.submit(&json!({ "container_ids": ids, "domains": ["history"] })).await;
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    wait_running(&system, &job).await;
    let _ = std::process::Command::new("kill").arg("-KILL").arg(first.to_string()).status();
    system.spawn_worker("light", &[]);
    let status = system.wait_terminal(&job, Duration::from_secs(300)).await;
    assert_eq!(
        (status["status"].as_str(), status["attempt"].as_u64()),
        (Some("finished"), Some(2)),
        "{status}"
    );
    let (_, _, lines) = system.stream_lines(&job).await;
    let records = check_stream(&job, &lines, &[Domain::History], false);
    assert_matches_database(&records, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_fails_with_job_timeout_and_no_result() {
    let system =
        System::start(Options { env: env(&[("TRACE_JOB_TIMEOUT_SECONDS", "2")]), ..Default::default() })
            .await;
    let (code, accepted) = system.submit(&json!({ "container_ids": ids(45_000) })).await;
    assert_eq!(code, 202);
    let job = accepted["job_id"].as_str().expect("job").to_owned();
    let status = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["error_code"], "JOB_TIMEOUT");
    let elapsed = status["elapsed_seconds"].as_f64().expect("elapsed");
    assert!(elapsed >= 2.0, "failed after {elapsed} s, before its timeout");
    let job_id: JobId = job.parse().expect("id");
    assert!(matches!(
        system.store.get(&trace_core::layout::manifest_key(&job_id)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        system.store.list(&format!("jobs/{job}/result/")).await.expect("list").is_empty(),
        "partial result left"
    );
}

#[tokio::test]
async fn without_credentials_every_route_but_health_answers_401() {
    let system = System::start(Options { no_workers: true, ..Default::default() }).await;
    let job = JobId::new();
    let anonymous = http_client(None);
    let junk = http_client(Some("not-a-key"));
    let routes = [
        ("POST", format!("{}/api/trace/events", system.submit)),
        ("GET", format!("{}/api/trace/job/{job}", system.status)),
        ("DELETE", format!("{}/api/trace/job/{job}", system.status)),
        ("GET", format!("{}/api/trace/jobs", system.status)),
        ("GET", format!("{}/api/trace/job/{job}/stream", system.stream)),
        ("GET", format!("{}/api/trace/job/{job}/result", system.stream)),
    ];
    for (method, url) in &routes {
        for (who, client) in [("no credentials", &anonymous), ("a junk key", &junk)] {
            let r = client
                .request(method.parse().expect("method"), url)
                .body(r#"{"container_ids":["CID-0000001"]}"#)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 401, "{method} {url} with {who}");
            assert!(r.headers().contains_key("www-authenticate"), "{method} {url}");
            let body: Value = r.json().await.expect("JSON");
            assert_eq!(body["code"], "UNAUTHORIZED", "{method} {url}: {body}");
        }
    }
    for base in [&system.submit, &system.status, &system.stream] {
        let r = anonymous.get(format!("{base}/health")).send().await.expect("health");
        assert_eq!(r.status().as_u16(), 200, "{base}/health stays open");
    }
}

#[tokio::test]
async fn a_request_signed_with_sigv4_is_accepted_and_a_forged_expired_or_unknown_one_refused() {
    let system = System::start(Options { no_workers: true, ..Default::default() }).await;
    let client = trace_integration::system::http_client(None);
    let url = format!("{}/api/trace/events", system.submit);
    let body =
        serde_json::to_vec(&json!({ "container_ids": ["CID-0000001"], "domains": ["holds"] })).expect("JSON");
    let now = std::time::SystemTime::now();
    let keys = (SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY);
    let send = |request: reqwest::Request| {
        let client = client.clone();
        async move {
            let r = client.execute(request).await.expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, answer) = send(sigv4_request(&client, "POST", &url, body.clone(), keys, now)).await;
    assert_eq!(status, 200, "a signed submit runs inline: {answer}");
    let read = format!("{}/api/trace/jobs", system.status);
    assert_eq!(send(sigv4_request(&client, "GET", &read, Vec::new(), keys, now)).await.0, 200);
    // The body changed after signing.
    let mut forged = sigv4_request(&client, "POST", &url, body.clone(), keys, now);
    *forged.body_mut() = Some(br#"{"container_ids":["CID-0000002"],"domains":["holds"]}"#.to_vec().into());
    assert_eq!(send(forged).await.0, 401);
    // Signed six minutes ago.
    let old = now - Duration::from_secs(6 * 60);
    let (status, answer) = send(sigv4_request(&client, "POST", &url, body.clone(), keys, old)).await;
    assert_eq!((status, answer["code"].as_str()), (401, Some("UNAUTHORIZED")), "{answer}");
    // The wrong secret, and an unknown access key.
    assert_eq!(
        send(sigv4_request(&client, "GET", &read, Vec::new(), (SIGV4_ACCESS_KEY, "wrong"), now)).await.0,
        401
    );
    assert_eq!(
        send(sigv4_request(&client, "GET", &read, Vec::new(), ("AKIDUNKNOWN", SIGV4_SECRET_KEY), now))
            .await
            .0,
        401
    );
}
