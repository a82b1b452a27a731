//! The Lambda path of every function binary, fed the events of `events/`.
//!
//! Each test starts a [`System`] (per-test queues, bucket and Redis prefix on the local stack), then runs
//! the binary under test in Lambda mode against the Runtime API emulator of `trace_integration::lambda`
//! and checks its answers against the database and the local processes. Where an event names a job,
//! the placeholder id of `events/` is replaced by a real job's.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};
use trace_core::message::ShardMessage;
use trace_core::ports::JobQueue;
use trace_core::{Domain, Profile};
use trace_integration::database::{count, digest_db, digest_json};
use trace_integration::lambda::{Invocation, LambdaFunction};
use trace_integration::pg_pool;
use trace_integration::system::{sigv4_request, Options, System, SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY};

/// The job id the event files use.
pub(crate) const PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";
/// Where the event files are.
const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
/// Longest wait for one answer.
pub(crate) const ANSWER: Duration = Duration::from_secs(120);

/// An event file.
pub(crate) fn event(name: &str) -> Value {
    let path = format!("{EVENTS}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An event file with the placeholder job id replaced by `job_id`.
pub(crate) fn event_for(name: &str, job_id: &str) -> Value {
    let text = event(name).to_string();
    assert!(text.contains(PLACEHOLDER), "{name} has no placeholder job id");
    serde_json::from_str(&text.replace(PLACEHOLDER, job_id)).expect("JSON")
}

/// `CID-0000001`-style ids.
pub(crate) fn cids(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("CID-{i:07}")).collect()
}

/// Starts a submit process that turns every request of more than one id into a job; its base URL.
pub(crate) async fn async_submit(system: &mut System) -> String {
    system.spawn_http("submit", &[("TRACE_ASYNC_CID_THRESHOLD", "1")]).await
}

/// Creates a job through `submit_url`; its id.
pub(crate) async fn create_job(submit_url: &str, ids: &[String], domains: &[&str]) -> String {
    // Signed as the events' IAM caller (SigV4 against the local credentials file), so the job belongs to
    // the principal the Lambda events carry.
    let body = serde_json::to_vec(&json!({ "container_ids": ids, "domains": domains })).expect("JSON");
    let client = trace_integration::system::http_client(None);
    let request = sigv4_request(
        &client,
        "POST",
        &format!("{submit_url}/api/trace/events"),
        body,
        (SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY),
        std::time::SystemTime::now(),
    );
    let r = client.execute(request).await.expect("submit");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("submit answers JSON");
    assert_eq!(status, 202, "an async submit should queue a job: {body}");
    body["job_id"].as_str().expect("job_id").to_owned()
}

/// Every record of `results` (`{"<domain>": {"data": [...]}}`), with its domain.
fn result_records(results: &Value) -> Vec<(Domain, &Value)> {
    let mut out = Vec::new();
    for (name, part) in results.as_object().expect("results object") {
        let domain: Domain = name.parse().unwrap_or_else(|_| panic!("unknown domain {name}"));
        out.extend(part["data"].as_array().expect("data array").iter().map(|r| (domain, r)));
    }
    out
}

#[test]
fn events_are_realistic_aws_events() {
    let http_events = [
        ("submit.json", "POST", "/api/trace/events", "POST /api/trace/events", false),
        ("submit-invalid.json", "POST", "/api/trace/events", "POST /api/trace/events", false),
        ("status.json", "GET", "/api/trace/job/{PLACEHOLDER}", "ANY /api/trace/job/{id}", false),
        ("jobs.json", "GET", "/api/trace/jobs", "GET /api/trace/jobs", false),
        ("cancel.json", "DELETE", "/api/trace/job/{PLACEHOLDER}", "ANY /api/trace/job/{id}", false),
        ("health.json", "GET", "/health", "GET /health", false),
        ("stream.json", "GET", "/api/trace/job/{PLACEHOLDER}/stream", "$default", true),
        ("result.json", "GET", "/api/trace/job/{PLACEHOLDER}/result", "$default", true),
        (
            "result-api.json",
            "GET",
            "/api/trace/job/{PLACEHOLDER}/result",
            "GET /api/trace/job/{id}/result",
            false,
        ),
        (
            "chunks-api.json",
            "GET",
            "/api/trace/job/{PLACEHOLDER}/chunks",
            "GET /api/trace/job/{id}/chunks",
            false,
        ),
    ];
    let readme = std::fs::read_to_string(format!("{EVENTS}/README.md")).expect("events/README.md");
    for (file, method, path, route, function_url) in http_events {
        let path = path.replace("{PLACEHOLDER}", PLACEHOLDER);
        let e: ApiGatewayV2httpRequest =
            serde_json::from_value(event(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(e.version.as_deref(), Some("2.0"), "{file}");
        assert_eq!(e.raw_path.as_deref(), Some(path.as_str()), "{file}");
        assert_eq!(e.route_key.as_deref(), Some(route), "{file}");
        let ctx = &e.request_context;
        assert_eq!(ctx.http.method.as_str(), method, "{file}");
        assert_eq!(ctx.http.path.as_deref(), Some(path.as_str()), "{file}");
        assert!(ctx.http.source_ip.is_some() && ctx.http.user_agent.is_some(), "{file}");
        assert_eq!(ctx.stage.as_deref(), Some("$default"), "{file}");
        assert!(
            ctx.request_id.is_some() && ctx.time.is_some() && ctx.time_epoch > 1_700_000_000_000,
            "{file}"
        );
        assert!(ctx.account_id.is_some() && ctx.apiid.is_some(), "{file}");
        let domain = ctx.domain_name.as_deref().unwrap_or_default();
        assert_eq!(e.headers.get("host").and_then(|h| h.to_str().ok()), Some(domain), "{file}");
        if function_url {
            assert!(domain.ends_with(".lambda-url.us-east-1.on.aws"), "{file}: {domain}");
        } else {
            assert!(domain.ends_with(".execute-api.us-east-1.amazonaws.com"), "{file}: {domain}");
        }
        assert!(!e.is_base64_encoded, "{file}");
        if method == "POST" {
            let body = e.body.as_deref().unwrap_or_else(|| panic!("{file} has no body"));
            assert_eq!(
                e.headers.get("content-type").and_then(|h| h.to_str().ok()),
                Some("application/json"),
                "{file}"
            );
            let length = e.headers.get("content-length").and_then(|h| h.to_str().ok()).unwrap_or_default();
            assert_eq!(length, body.len().to_string(), "{file}: content-length");
        }
        assert!(readme.contains(&format!("`{file}`")), "events/README.md does not describe {file}");
    }
    let jobs: ApiGatewayV2httpRequest = serde_json::from_value(event("jobs.json")).unwrap();
    assert_eq!(jobs.raw_query_string.as_deref(), Some("limit=5"));
    assert_eq!(jobs.query_string_parameters.first("limit"), Some("5"));
    let result: ApiGatewayV2httpRequest = serde_json::from_value(event("result.json")).unwrap();
    assert_eq!(result.raw_query_string.as_deref(), Some("domain=holds&offset=0&limit=2"));

    let sqs: SqsEvent = serde_json::from_value(event("worker-sqs.json")).expect("worker-sqs.json");
    assert_eq!(sqs.records.len(), 1);
    let record = &sqs.records[0];
    let message =
        ShardMessage::parse(record.body.as_deref().unwrap_or_default()).expect("body is a ShardMessage");
    assert_eq!(message.job_id.to_string(), PLACEHOLDER);
    assert_eq!(record.attributes.get("ApproximateReceiveCount").map(String::as_str), Some("1"));
    assert_eq!(record.message_attributes["job_id"].string_value.as_deref(), Some(PLACEHOLDER));
    assert_eq!(record.message_attributes["shard"].string_value.as_deref(), Some("0"));
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert!(record.event_source_arn.as_deref().unwrap_or_default().starts_with("arn:aws:sqs:us-east-1:"));
    assert!(record.message_id.is_some() && record.receipt_handle.is_some() && record.aws_region.is_some());
    assert!(readme.contains("`worker-sqs.json`"));

    let schedule: EventBridgeEvent =
        serde_json::from_value(event("backfill-schedule.json")).expect("schedule");
    assert_eq!((schedule.detail_type.as_str(), schedule.source.as_str()), ("Scheduled Event", "aws.events"));
    assert!(schedule.resources.unwrap_or_default()[0].starts_with("arn:aws:events:us-east-1:"));
    assert!(readme.contains("`backfill-schedule.json`"));

    let env = event("env.json");
    for function in ["SubmitFunction", "StatusFunction", "StreamFunction", "WorkerLightFunction"] {
        assert!(env[function].is_object(), "env.json has no {function}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_in_lambda_answers_inline_invalid_and_health() {
    let mut system = System::start(Options { no_workers: true, ..Default::default() }).await;
    // The jobs are the events' IAM caller's: the test looks at them from outside as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    // The jobs are the events' IAM caller's: the test looks at them from outside as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let mut submit = LambdaFunction::start(&system, "submit", &[]).await;

    let answer = submit.invoke(event("submit.json"), ANSWER).await.http();
    assert!(!answer.streamed, "submit answers buffered");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["stage"], "events");
    assert_eq!(body["aggregation"], Value::Null);
    let results = &body["results"];
    let names: BTreeSet<&str> = results.as_object().expect("results").keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["holds", "rejects"]));
    let ids = cids(1..=3);
    let pool = pg_pool();
    let mut total = 0;
    for domain in [Domain::Holds, Domain::Rejects] {
        let expected = count(&pool, domain, &ids).await;
        total += expected;
        assert_eq!(results[domain.as_str()]["count"].as_u64(), Some(expected), "{domain}");
        assert_eq!(
            results[domain.as_str()]["data"].as_array().map(Vec::len),
            Some(expected as usize),
            "{domain}"
        );
    }
    assert!(total > 0, "the seeded database has records for CID-0000001..3");
    assert_eq!(
        digest_json(result_records(results)),
        digest_db(&pool, &[Domain::Holds, Domain::Rejects], &ids).await,
        "the records are the database's"
    );
    // The same request through the local process gives the same answer.
    let request: Value = serde_json::from_str(event("submit.json")["body"].as_str().unwrap()).unwrap();
    assert_eq!(system.submit(&request).await, (200, body));

    let invalid = submit.invoke(event("submit-invalid.json"), ANSWER).await.http();
    assert_eq!(invalid.status, 400, "{}", invalid.text());
    assert_eq!(invalid.header("content-type"), Some("application/json"));
    let error = invalid.json();
    assert_eq!(error["code"], "EMPTY_CONTAINER_IDS", "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");

    // An event that is no HTTP event at all is reported through the runtime's error endpoint...
    match submit.invoke(event("worker-sqs.json"), ANSWER).await {
        Invocation::Error(e) => {
            assert!(!e.error_type.is_empty(), "{e:?}");
            assert!(e.body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()), "{e:?}");
        }
        other => panic!("an SQS event given to submit should be an invocation error: {other:?}"),
    }
    // ...and the function goes on answering.
    let health = submit.invoke(event("health.json"), ANSWER).await.http();
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_lambda_answers_status_history_not_found_and_cancel() {
    // No workers: the jobs stay queued.
    let mut system = System::start(Options { no_workers: true, ..Default::default() }).await;
    // The jobs are the events' IAM caller's: the test looks at them from outside as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let submit = async_submit(&mut system).await;
    let first = create_job(&submit, &cids(1..=3), &["holds"]).await;
    let second = create_job(&submit, &cids(4..=9), &["holds", "rejects"]).await;
    let mut status = LambdaFunction::start(&system, "status", &[]).await;

    let answer = status.invoke(event_for("status.json", &first), ANSWER).await.http();
    assert!(!answer.streamed);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["job_id"], first.as_str());
    let vocabulary = ["queued", "started", "finished", "failed", "cancelled"];
    assert!(vocabulary.contains(&body["status"].as_str().unwrap_or_default()), "{body}");
    assert_eq!(body["status"], "queued", "no worker runs in this test");
    assert_eq!((body["cid_count"].as_u64(), &body["domains"]), (Some(3), &json!(["holds"])));
    assert_eq!(body["queue"], "light");

    let list = status.invoke(event("jobs.json"), ANSWER).await.http();
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let jobs = list["jobs"].as_array().unwrap_or_else(|| panic!("no jobs array: {list}"));
    let listed: BTreeSet<&str> = jobs.iter().map(|j| j["job_id"].as_str().unwrap_or_default()).collect();
    assert_eq!(listed, BTreeSet::from([first.as_str(), second.as_str()]), "this system's jobs: {list}");
    assert_eq!(list["count"].as_u64(), Some(2));

    let missing = status.invoke(event("status.json"), ANSWER).await.http();
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["code"], "JOB_NOT_FOUND");

    // Without the authorizer's context there is no caller: 401, before the job store is read.
    let mut anonymous = event_for("status.json", &first);
    anonymous["requestContext"].as_object_mut().expect("context").remove("authorizer");
    let refused = status.invoke(anonymous, ANSWER).await.http();
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["code"], "UNAUTHORIZED");

    let cancelled = status.invoke(event_for("cancel.json", &second), ANSWER).await.http();
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    let cancelled = cancelled.json();
    assert_eq!(
        (cancelled["job_id"].as_str(), cancelled["status"].as_str()),
        (Some(second.as_str()), Some("cancelled"))
    );
    let (code, now) = system.get_status(&format!("/api/trace/job/{second}")).await;
    assert_eq!((code, now["status"].as_str()), (200, Some("cancelled")), "the local status process sees it");
    let (_, untouched) = system.get_status(&format!("/api/trace/job/{first}")).await;
    assert_eq!(untouched["status"], "queued");

    let again = status.invoke(event_for("cancel.json", &second), ANSWER).await.http();
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["code"], "JOB_NOT_CANCELLABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_in_lambda_streams_ndjson_and_pages() {
    // Small chunks, each sent as several `records` lines: the stream has several lines per chunk and
    // several chunks per domain.
    let env = vec![("TRACE_CHUNK_RECORDS", "120".into()), ("TRACE_STREAM_BATCH_SIZE", "50".into())];
    let options = Options { env, ..Default::default() };
    let mut system = System::start(options).await;
    // The jobs are the events' IAM caller's: the test looks at them from outside as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let submit = async_submit(&mut system).await;
    let ids = cids(1..=200);
    let job = create_job(&submit, &ids, &["holds", "rejects"]).await;
    let done = system.wait_terminal(&job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "finished", "{done}");
    let mut stream = LambdaFunction::start(&system, "stream", &[]).await;

    let answer = stream.invoke(event_for("stream.json", &job), ANSWER).await.http();
    assert!(answer.streamed, "the stream function answers with a streamed response");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    let lines = answer.ndjson();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds.first(), Some(&"meta"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"complete"), "{kinds:?}");
    assert_eq!(lines[0]["job_id"], job.as_str());
    assert_eq!(lines[0]["domains"], json!(["holds", "rejects"]));
    let pool = pg_pool();
    let holds = count(&pool, Domain::Holds, &ids).await;
    let rejects = count(&pool, Domain::Rejects, &ids).await;
    assert!(holds > 50 && rejects > 50, "several chunks per domain ({holds}, {rejects})");
    let starts: Vec<(&str, u64)> = lines
        .iter()
        .filter(|l| l["type"] == "domain_start")
        .map(|l| (l["domain"].as_str().unwrap_or_default(), l["total"].as_u64().unwrap_or(u64::MAX)))
        .collect();
    assert_eq!(starts, vec![("holds", holds), ("rejects", rejects)]);
    let mut records = Vec::new();
    let mut next_batch = std::collections::HashMap::new();
    for line in lines.iter().filter(|l| l["type"] == "records") {
        let domain: Domain = line["domain"].as_str().unwrap_or_default().parse().expect("domain");
        let data = line["data"].as_array().expect("data");
        assert_eq!(line["count"].as_u64(), Some(data.len() as u64));
        assert!(data.len() <= 50, "a line holds at most TRACE_STREAM_BATCH_SIZE records");
        let batch = next_batch.entry(domain).or_insert(0u64);
        assert_eq!(line["batch"].as_u64(), Some(*batch), "batches run from 0 across a domain's chunks");
        *batch += 1;
        records.extend(data.iter().map(|r| (domain, r)));
    }
    assert!(kinds.iter().filter(|k| **k == "records").count() >= 4, "{kinds:?}");
    assert_eq!(lines.last().unwrap()["total_records"].as_u64(), Some(holds + rejects));
    assert_eq!(
        digest_json(records.iter().copied()),
        digest_db(&pool, &[Domain::Holds, Domain::Rejects], &ids).await,
        "the streamed records are the database's"
    );
    // Byte for byte what the local stream process sends.
    let (code, ctype, local) = system.stream_lines(&job).await;
    assert_eq!((code, ctype.as_str()), (200, "application/x-ndjson"));
    assert_eq!(local, lines, "Lambda and local streams differ");

    let page = stream.invoke(event_for("result.json", &job), ANSWER).await.http();
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), Some("application/json"));
    let page = page.json();
    let part = &page["results"]["holds"];
    assert_eq!(page["results"].as_object().map(|r| r.len()), Some(1), "{page}");
    assert_eq!((part["count"].as_u64(), part["total"].as_u64()), (Some(2), Some(holds)), "{page}");
    assert_eq!((part["offset"].as_u64(), part["limit"].as_u64()), (Some(0), Some(2)));
    let first_two: Vec<&Value> =
        records.iter().filter(|(d, _)| *d == Domain::Holds).map(|(_, r)| *r).take(2).collect();
    assert_eq!(part["data"].as_array().map(|d| d.iter().collect::<Vec<_>>()), Some(first_two));

    let missing = stream.invoke(event("stream.json"), ANSWER).await.http();
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["code"], "JOB_NOT_FOUND");

    // The same binary behind the HTTP API (ResultFunction): buffered answers, the same page.
    let mut result = LambdaFunction::start(&system, "stream", &[("TRACE_STREAM_RESPONSE", "buffered")]).await;
    let buffered = result.invoke(event_for("result-api.json", &job), ANSWER).await.http();
    assert!(!buffered.streamed, "behind the HTTP API the answer must be buffered");
    assert_eq!(buffered.status, 200, "{}", buffered.text());
    assert_eq!(buffered.json(), page, "HTTP API and Function URL pages differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_in_lambda_runs_the_sqs_record_and_reports_malformed_ones() {
    // No workers: the message waits in the light queue for the Lambda worker.
    let mut system = System::start(Options { no_workers: true, ..Default::default() }).await;
    // The jobs are the events' IAM caller's: the test looks at them from outside as the admin.
    system.http = trace_integration::system::http_client(Some(trace_integration::system::ADMIN_API_KEY));
    let submit = async_submit(&mut system).await;
    let ids = cids(1..=40);
    let job = create_job(&submit, &ids, &["holds", "rejects"]).await;
    let queue = &system.light.0;
    let delivery = {
        let mut got =
            queue.receive(1, Duration::from_secs(10), Duration::from_secs(120)).await.expect("receive");
        assert_eq!(got.len(), 1, "the job's message is on the light queue");
        got.remove(0)
    };
    assert_eq!(delivery.attributes.get("job_id"), Some(&job));
    let message = ShardMessage::parse(&delivery.body).expect("a shard message");
    assert_eq!(
        message,
        ShardMessage::whole(
            job.parse().unwrap(),
            Profile::QueryTool,
            vec![Domain::Holds, Domain::Rejects],
            40
        )
    );

    let mut record = event("worker-sqs.json")["Records"][0].clone();
    record["messageId"] = json!(delivery.message_id);
    record["receiptHandle"] = json!(delivery.receipt);
    record["body"] = json!(delivery.body);
    record["attributes"]["ApproximateReceiveCount"] = json!(delivery.receive_count.to_string());
    record["messageAttributes"]["job_id"]["stringValue"] = json!(job);
    record.as_object_mut().unwrap().remove("md5OfBody");
    let mut worker = LambdaFunction::start(&system, "worker", &[("TRACE_WORKER_QUEUE", "light")]).await;

    let answer = worker.invoke(json!({ "Records": [record.clone()] }), ANSWER).await.json();
    assert_eq!(answer, json!({"batchItemFailures": []}), "log: {}", worker.log().display());
    let (code, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!((code, status["status"].as_str()), (200, Some("finished")), "{status}");
    let pool = pg_pool();
    let expected = count(&pool, Domain::Holds, &ids).await + count(&pool, Domain::Rejects, &ids).await;
    let (code, _, lines) = system.stream_lines(&job).await;
    assert_eq!(code, 200);
    assert_eq!(
        lines.last().map(|l| (&l["type"], l["total_records"].as_u64())),
        Some((&json!("complete"), Some(expected)))
    );

    // A malformed message (a real one, so its visibility can change) next to a duplicate of the done one.
    queue.send("{\"job_id\": \"not-a-job\"", &[]).await.expect("send");
    let malformed = {
        let mut got =
            queue.receive(1, Duration::from_secs(10), Duration::from_secs(120)).await.expect("receive");
        assert_eq!(got.len(), 1, "the malformed message");
        got.remove(0)
    };
    let mut bad = record.clone();
    bad["messageId"] = json!(malformed.message_id);
    bad["receiptHandle"] = json!(malformed.receipt);
    bad["body"] = json!(malformed.body);
    bad["messageAttributes"] = json!({});
    let answer = worker.invoke(json!({ "Records": [bad, record] }), ANSWER).await.json();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": malformed.message_id}]}),
        "only the malformed record fails; log: {}",
        worker.log().display()
    );
    // Its retry delay is zero: it is visible again at once (and will reach the DLQ after maxReceiveCount).
    let again = queue.receive(10, Duration::from_secs(10), Duration::from_secs(120)).await.expect("receive");
    let back = again.iter().find(|d| d.message_id == malformed.message_id);
    assert_eq!(back.map(|d| d.receive_count), Some(2), "the malformed message is back: {again:?}");
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(status["status"], "finished", "the duplicate did not touch the job");
}
