//! Issue 14, item 2, black-box over HTTP: jobs belong to their owner. The functions run as local
//! processes on the stack with API-key authentication (`TRACE_AUTH=keys`): Alice and Bob are two
//! callers, root an admin. Bob reading, paging, streaming or cancelling Alice's job gets exactly the
//! answer of an unknown job id; each history shows its owner's jobs only; the admin sees and cancels
//! them all.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use trace_core::JobId;
use trace_dataset::container_id;
use trace_integration::system::{Options, System};

const ALICE: &str = "alice-key-6c1f0e5d";
const BOB: &str = "bob-key-93a7b2c4";
const ROOT: &str = "root-key-0d4e8f21";

/// A system with Alice, Bob and root (an admin) as API-key callers, and no workers yet.
async fn system() -> System {
    let entry = trace_core::auth::api_key_entry;
    let keys = format!("{},{},{}", entry("alice", ALICE), entry("bob", BOB), entry("root", ROOT));
    System::start(Options {
        no_workers: true,
        env: vec![
            ("TRACE_AUTH", "keys".into()),
            ("TRACE_API_KEYS", keys),
            ("TRACE_ADMIN_PRINCIPALS", "key:root".into()),
            // Two ids make a job.
            ("TRACE_ASYNC_CID_THRESHOLD", "1".into()),
        ],
        ..Default::default()
    })
    .await
}

/// `method base+path` with `key` (none: no credentials); (status, JSON body or null).
async fn call(
    system: &System,
    key: Option<&str>,
    method: Method,
    base: &str,
    path: &str,
) -> (StatusCode, Value) {
    let mut request = system.http.request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Submits a job of the first `n` seeded ids as `key`; its id.
async fn submit(system: &System, key: &str, n: u64) -> String {
    let ids: Vec<String> = (1..=n).map(container_id).collect();
    let response = system
        .http
        .post(format!("{}/api/trace/events", system.submit))
        .header("x-api-key", key)
        .json(&json!({ "container_ids": ids, "domains": ["history", "holds"] }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.expect("JSON");
    accepted["job_id"].as_str().expect("job_id").to_owned()
}

/// The job's status as `key` sees it.
async fn status_of(system: &System, key: &str, job: &str) -> Value {
    let (code, body) =
        call(system, Some(key), Method::GET, &system.status, &format!("/api/trace/job/{job}")).await;
    assert_eq!(code, StatusCode::OK, "status of {job}: {body}");
    body
}

/// Polls until the job is finished.
async fn wait_finished(system: &System, key: &str, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = status_of(system, key, job).await;
        match body["status"].as_str() {
            Some("finished") => return,
            Some("failed" | "cancelled") => panic!("job {job} ended {body}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "job {job} not finished in time: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A 404 body with the job id and the timestamp taken out: what must not differ between an unknown
/// job and another caller's.
fn shape(body: &Value, id: &str) -> Value {
    let mut shape: Value = serde_json::from_str(&body.to_string().replace(id, "{id}")).expect("JSON");
    // Every answer has its own time and request id.
    if let Some(meta) = shape["meta"].as_object_mut() {
        meta.remove("timestamp");
        meta.remove("request_id");
    }
    if let Some(top) = shape.as_object_mut() {
        top.remove("request_id");
    }
    shape
}

/// The job ids of a history, newest first.
async fn history(system: &System, key: &str, query: &str) -> Vec<String> {
    let (code, body) =
        call(system, Some(key), Method::GET, &system.status, &format!("/api/trace/jobs{query}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["job_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_caller_sees_only_its_own_jobs_and_an_admin_sees_all() {
    let mut system = system().await;
    let alice_first = submit(&system, ALICE, 5).await;
    let alice_second = submit(&system, ALICE, 3).await;
    let bob_job = submit(&system, BOB, 4).await;

    // Without credentials nothing is answered.
    let path = format!("/api/trace/job/{alice_first}");
    let (code, body) = call(&system, None, Method::GET, &system.status, &path).await;
    assert_eq!((code, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));

    // Queued: Bob cannot cancel Alice's job (and it stays queued); the admin cancels one of hers.
    let (code, body) = call(&system, Some(BOB), Method::DELETE, &system.status, &path).await;
    assert_eq!((code, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("JOB_NOT_FOUND")));
    assert_eq!(status_of(&system, ALICE, &alice_first).await["status"], "queued");
    let (code, body) =
        call(&system, Some(ROOT), Method::DELETE, &system.status, &format!("/api/trace/job/{alice_second}"))
            .await;
    assert_eq!((code, body["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{body}");
    assert_eq!(status_of(&system, ALICE, &alice_second).await["status"], "cancelled");

    system.spawn_worker("light", &[]);
    wait_finished(&system, ALICE, &alice_first).await;
    wait_finished(&system, BOB, &bob_job).await;

    // Every job route, as Bob: Alice's job answers exactly like an unknown id; Alice herself reads it.
    let unknown = JobId::new().to_string();
    let routes = [
        (Method::GET, &system.status, "/api/trace/job/{id}"),
        (Method::GET, &system.stream, "/api/trace/job/{id}/result"),
        (Method::GET, &system.stream, "/api/trace/job/{id}/result?domain=holds&offset=1&limit=2"),
        (Method::GET, &system.stream, "/api/trace/job/{id}/stream"),
        (Method::DELETE, &system.status, "/api/trace/job/{id}"),
    ];
    for (method, base, route) in &routes {
        let (code, body) =
            call(&system, Some(BOB), method.clone(), base, &route.replace("{id}", &alice_first)).await;
        assert_eq!(
            (code, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("JOB_NOT_FOUND")),
            "{method} {route}"
        );
        let (unknown_code, unknown_body) =
            call(&system, Some(BOB), method.clone(), base, &route.replace("{id}", &unknown)).await;
        assert_eq!(unknown_code, StatusCode::NOT_FOUND, "{method} {route}");
        assert_eq!(shape(&body, &alice_first), shape(&unknown_body, &unknown), "{method} {route}");
        let (code, _) =
            call(&system, Some(ALICE), method.clone(), base, &route.replace("{id}", &alice_first)).await;
        // The owner's cancel of a finished job is refused as such (409): the job is seen.
        let expected = if *method == Method::DELETE { StatusCode::CONFLICT } else { StatusCode::OK };
        assert_eq!(code, expected, "{method} {route} as the owner");
    }
    // The owner's stream and the admin's are the same result.
    let stream = |key| {
        let system = &system;
        let path = format!("/api/trace/job/{alice_first}/stream");
        async move {
            let response = system
                .http
                .get(format!("{}{path}", system.stream))
                .header("x-api-key", key)
                .send()
                .await
                .expect("stream");
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.expect("body")
        }
    };
    let (owners, admins) = (stream(ALICE).await, stream(ROOT).await);
    assert!(owners.lines().last().is_some_and(|l| l.contains("\"complete\"")), "{owners:.300}");
    assert_eq!(owners, admins);

    // Histories: each caller's own jobs; the admin's, everyone's.
    assert_eq!(history(&system, ALICE, "").await, [alice_second.clone(), alice_first.clone()]);
    assert_eq!(history(&system, ALICE, "?status=finished").await, std::slice::from_ref(&alice_first));
    assert_eq!(history(&system, BOB, "").await, std::slice::from_ref(&bob_job));
    assert_eq!(
        history(&system, ROOT, "").await,
        [bob_job.clone(), alice_second.clone(), alice_first.clone()]
    );
    for job in [&alice_first, &bob_job] {
        assert_eq!(status_of(&system, ROOT, job).await["status"], "finished");
    }
}
