//! The stream consumer against a fake stream function (no service stack): an interrupted stream,
//! cut at every byte position, resumes from result pages into exactly the uninterrupted sequence;
//! malformed lines, `error` lines and 429 answers give their typed errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use trace_client::{Client, ClientConfig, ClientError, StreamLine};
use trace_core::{Domain, JobId, Profile};

/// How the fake serves the next stream request.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The whole stream.
    None,
    /// The first `n` bytes, then a clean end of the body.
    End(usize),
    /// The first `n` bytes, then a body error (a reset connection).
    Error(usize),
}

struct Fake {
    job: JobId,
    domains: Vec<(Domain, Vec<Value>)>,
    aggregation: Option<Value>,
    chunk: usize,
    /// Applies to the next stream request only.
    cut: Mutex<Cut>,
    /// Replaces the whole stream body when set.
    raw: Mutex<Option<String>>,
    /// Replaces the stream body of every request after the first when set.
    raw_later: Mutex<Option<String>>,
    stream_requests: AtomicUsize,
    page_requests: AtomicUsize,
    /// 429 answers still to give on status.
    limited: AtomicUsize,
    status_requests: AtomicUsize,
}

impl Fake {
    fn lines(&self) -> Vec<StreamLine> {
        let mut lines = vec![StreamLine::Meta {
            job_id: self.job,
            profile: Profile::MidSectionDefect,
            domains: self.domains.iter().map(|(d, _)| *d).collect(),
        }];
        let mut total = 0;
        for (domain, records) in &self.domains {
            lines.push(StreamLine::DomainStart { domain: *domain, total: records.len() as u64 });
            for (batch, chunk) in records.chunks(self.chunk).enumerate() {
                lines.push(StreamLine::Records {
                    domain: *domain,
                    batch: batch as u64,
                    count: chunk.len() as u64,
                    data: chunk.to_vec(),
                });
            }
            lines.push(StreamLine::DomainEnd { domain: *domain, count: records.len() as u64 });
            total += records.len() as u64;
        }
        if let Some(data) = &self.aggregation {
            lines.push(StreamLine::Aggregation { data: data.clone() });
        }
        lines.push(StreamLine::Complete { total_records: total });
        lines
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in self.lines() {
            line.write_to(&mut out);
        }
        out
    }
}

async fn stream(State(fake): State<Arc<Fake>>, Path(_id): Path<String>) -> Response {
    let earlier = fake.stream_requests.fetch_add(1, Ordering::SeqCst);
    let later = if earlier > 0 { fake.raw_later.lock().unwrap().clone() } else { None };
    let body = match later.or_else(|| fake.raw.lock().unwrap().clone()) {
        Some(raw) => raw.into_bytes(),
        None => fake.body(),
    };
    let cut = std::mem::replace(&mut *fake.cut.lock().unwrap(), Cut::None);
    // Several small pieces, so cuts fall between and inside body chunks.
    let (n, fail) = match cut {
        Cut::None => (body.len(), false),
        Cut::End(n) => (n.min(body.len()), false),
        Cut::Error(n) => (n.min(body.len()), true),
    };
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        body[..n].chunks(97).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let pieces = futures::stream::iter(pieces);
    let body = if fail {
        // The error comes a moment later, so what was sent before it reaches the client (an error at
        // once makes hyper drop the unsent buffer).
        let reset = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err(std::io::Error::other("connection reset"))
        });
        Body::from_stream(pieces.chain(reset))
    } else {
        Body::from_stream(pieces)
    };
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn page(State(fake): State<Arc<Fake>>, Path(_id): Path<String>, RawQuery(q): RawQuery) -> Response {
    fake.page_requests.fetch_add(1, Ordering::SeqCst);
    let q = q.unwrap_or_default();
    let param = |name: &str| {
        q.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
    };
    let domain: Domain = match param("domain") {
        Some(d) => d.parse().unwrap(),
        None => fake.domains[0].0,
    };
    let offset: usize = param("offset").map_or(0, |o| o.parse().unwrap());
    let limit: usize = param("limit").map_or(5000, |l| l.parse().unwrap());
    assert!((1..=5000).contains(&limit));
    let records = &fake.domains.iter().find(|(d, _)| *d == domain).unwrap().1;
    let data: Vec<Value> = records.iter().skip(offset).take(limit).cloned().collect();
    let body = json!({
        "stage": "events",
        "results": { domain.as_str(): {
            "data": data, "count": data.len(), "total": records.len(), "offset": offset, "limit": limit
        }},
        "aggregation": fake.aggregation,
    });
    axum::Json(body).into_response()
}

async fn status(State(fake): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    fake.status_requests.fetch_add(1, Ordering::SeqCst);
    if fake.limited.load(Ordering::SeqCst) > 0 {
        fake.limited.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({"code":"TOO_MANY_REQUESTS","message":"slow down","retry_after_seconds":1})),
        )
            .into_response();
    }
    axum::Json(json!({
        "job_id": id, "status": "finished", "profile": "query_tool", "cid_count": 1, "domains": ["holds"],
        "progress": "complete",
        "progress_detail": {"domain": null, "records_written": 0, "ids_done": 1, "ids_total": 1, "percent": 100.0},
        "queue": "light", "created_at": 1767225600.0, "started_at": null, "completed_at": null,
        "elapsed_seconds": 1.5, "error": null, "error_code": null, "attempt": 1
    }))
    .into_response()
}

async fn serve(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route("/api/trace/job/{id}", get(status))
        .route("/api/trace/job/{id}/stream", get(stream))
        .route("/api/trace/job/{id}/result", get(page))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn records(domain: Domain, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"domain": domain.as_str(), "i": i, "text": format!("r{i}, \"q\"")})).collect()
}

fn fake() -> Arc<Fake> {
    Arc::new(Fake {
        job: JobId::new(),
        domains: vec![
            (Domain::History, records(Domain::History, 12)),
            (Domain::Holds, Vec::new()),
            (Domain::Jobs, records(Domain::Jobs, 7)),
        ],
        aggregation: Some(json!({"groups": [{"workcenter": "W1", "reject_qty": 3}]})),
        chunk: 5,
        cut: Mutex::new(Cut::None),
        raw: Mutex::new(None),
        raw_later: Mutex::new(None),
        stream_requests: AtomicUsize::new(0),
        page_requests: AtomicUsize::new(0),
        limited: AtomicUsize::new(0),
        status_requests: AtomicUsize::new(0),
    })
}

fn client(base: &str, configure: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig::new(base);
    // Pages of the server's chunk size, so resumed batches are the stream's batches.
    config.page_limit = 5;
    configure(&mut config);
    Client::new(config).unwrap()
}

async fn collect(client: &Client, job: &JobId) -> (Vec<Result<StreamLine, ClientError>>, u32) {
    drain(client.stream(job)).await
}

/// Every item of `stream`, and how often it resumed.
async fn drain(mut stream: trace_client::LineStream) -> (Vec<Result<StreamLine, ClientError>>, u32) {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item);
    }
    (out, stream.resumes())
}

#[tokio::test]
async fn a_stream_cut_at_any_byte_resumes_into_exactly_the_whole_sequence() {
    let fake = fake();
    let base = serve(fake.clone()).await;
    let client = client(&base, |_| {});
    let expected = fake.lines();
    let (whole, resumes) = collect(&client, &fake.job).await;
    let whole: Vec<StreamLine> = whole.into_iter().map(Result::unwrap).collect();
    assert_eq!(whole, expected);
    assert_eq!(resumes, 0);
    let body = fake.body();
    let len = body.len();
    let meta_len = body.iter().position(|b| *b == b'\n').unwrap() + 1;
    // Every byte after the meta line (a cut before it re-opens the stream after a pause, so those
    // positions are sampled); a reset connection at every fifth position, a clean end at every one.
    let positions = (0..meta_len).step_by(17).chain([meta_len - 1]).chain(meta_len..len);
    for n in positions {
        let cuts = if n % 5 == 0 { vec![Cut::End(n), Cut::Error(n)] } else { vec![Cut::End(n)] };
        for cut in cuts {
            *fake.cut.lock().unwrap() = cut;
            let (got, resumes) = collect(&client, &fake.job).await;
            let got: Vec<StreamLine> =
                got.into_iter().map(|r| r.unwrap_or_else(|e| panic!("{cut:?}: {e}"))).collect();
            assert_eq!(got, expected, "cut {cut:?} of {len} bytes");
            assert_eq!(resumes, 1, "cut {cut:?}");
        }
    }
}

#[tokio::test]
async fn without_resumption_an_interruption_says_where_it_stopped() {
    let fake = fake();
    let base = serve(fake.clone()).await;
    let client = client(&base, |c| c.max_resumes = 0);
    let body = fake.body();
    // Cut inside the second records line of history: 5 records of it were delivered.
    let lines: Vec<&[u8]> = body.split_inclusive(|b| *b == b'\n').collect();
    let n = lines[..3].iter().map(|l| l.len()).sum::<usize>() + 10;
    *fake.cut.lock().unwrap() = Cut::Error(n);
    let (got, _) = collect(&client, &fake.job).await;
    assert_eq!(got.len(), 4, "meta, domain_start, records, then the error");
    match got.last().unwrap() {
        Err(ClientError::StreamInterrupted { after_domain, after_records, .. }) => {
            assert_eq!((*after_domain, *after_records), (Some(Domain::History), 5));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.page_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_malformed_line_is_reported_with_its_number_and_an_error_line_as_a_stream_error() {
    let fake = fake();
    let base = serve(fake.clone()).await;
    let client = client(&base, |_| {});
    let job = fake.job;
    *fake.raw.lock().unwrap() = Some(format!(
        "{{\"type\":\"meta\",\"job_id\":\"{job}\",\"profile\":\"query_tool\",\"domains\":[\"holds\"]}}\n\
         \n\
         {{\"type\":\"domain_start\",\"domain\":\"holds\",\"total\":1}}\n\
         {{\"type\":\"records\",\"domain\":\"holds\",\"batch\":0,\"count\":1,\"data\":[{{\"a\":1}}]\n\
         {{\"type\":\"complete\",\"total_records\":1}}\n"
    ));
    let (got, _) = collect(&client, &job).await;
    assert_eq!(got.len(), 3);
    match &got[2] {
        Err(ClientError::MalformedLine { line_no, snippet, .. }) => {
            assert_eq!(*line_no, 4, "blank lines count");
            assert!(snippet.starts_with("{\"type\":\"records\""), "{snippet}");
        }
        other => panic!("{other:?}"),
    }
    *fake.raw.lock().unwrap() = Some(format!(
        "{{\"type\":\"meta\",\"job_id\":\"{job}\",\"profile\":\"query_tool\",\"domains\":[\"holds\"]}}\n\
         {{\"type\":\"error\",\"code\":\"CHUNK_MISSING\",\"message\":\"gone\"}}\n"
    ));
    let (got, _) = collect(&client, &job).await;
    assert!(matches!(&got[1], Err(ClientError::StreamError { code, .. }) if code == "CHUNK_MISSING"));
    assert_eq!(got.len(), 2);
    // A line over the limit.
    let client = self::client(&base, |c| c.max_line_bytes = 64);
    *fake.raw.lock().unwrap() = None;
    let (got, _) = collect(&client, &job).await;
    assert!(matches!(got[0], Err(ClientError::MalformedLine { line_no: 1, .. })), "{:?}", got[0]);
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_then_reported() {
    let fake = fake();
    let base = serve(fake.clone()).await;
    let job = fake.job;
    fake.limited.store(2, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let info = client(&base, |_| {}).status(&job).await.expect("retried until answered");
    assert_eq!(info.job_id, job);
    assert!(started.elapsed() >= Duration::from_secs(2), "waited Retry-After twice");
    assert_eq!(fake.status_requests.load(Ordering::SeqCst), 3);
    fake.limited.store(5, Ordering::SeqCst);
    let err = client(&base, |c| c.rate_limit_retries = 1).status(&job).await.unwrap_err();
    assert!(matches!(err, ClientError::RateLimited { retry_after } if retry_after == Duration::from_secs(1)));
    assert_eq!(fake.status_requests.load(Ordering::SeqCst), 5);
}

/// A followed stream (`Client::follow`) cut anywhere is opened again and the lines already delivered
/// skipped: exactly the whole sequence. Opened again with other lines where some were delivered (the
/// result changed under the follow), it ends with `RESULT_CHANGED` instead of splicing two results.
#[tokio::test]
async fn a_followed_stream_opened_again_skips_what_it_delivered_and_notices_a_changed_result() {
    let fake = fake();
    let base = serve(fake.clone()).await;
    let client = client(&base, |_| {});
    let expected = fake.lines();
    let follow = |client: &Client| drain(client.follow(&fake.job, |_| {}));
    let body = String::from_utf8(fake.body()).unwrap();
    let ends: Vec<usize> = body.match_indices('\n').map(|(at, _)| at + 1).collect();
    for &n in ends.iter().take(ends.len() - 1).chain([ends[2] + 7].iter()) {
        *fake.cut.lock().unwrap() = Cut::End(n);
        let (got, resumes) = follow(&client).await;
        let got: Vec<StreamLine> =
            got.into_iter().map(|r| r.unwrap_or_else(|e| panic!("cut at {n}: {e}"))).collect();
        assert_eq!((got, resumes), (expected.clone(), 1), "cut at {n}");
    }
    // History's first record changes between the two openings; the first three lines (meta,
    // domain_start, the records line holding it) were delivered.
    let changed = body.replacen("\"text\":\"r0, ", "\"text\":\"R0, ", 1);
    assert_ne!(changed, body);
    fake.stream_requests.store(0, Ordering::SeqCst);
    *fake.raw_later.lock().unwrap() = Some(changed);
    *fake.cut.lock().unwrap() = Cut::End(ends[2]);
    let (got, _) = follow(&client).await;
    let delivered: Vec<&StreamLine> = got.iter().map_while(|r| r.as_ref().ok()).collect();
    assert_eq!(delivered, expected.iter().take(3).collect::<Vec<_>>());
    match got.last() {
        Some(Err(ClientError::StreamError { code, .. })) => assert_eq!(code, "RESULT_CHANGED"),
        other => panic!("{other:?}"),
    }
    assert_eq!(got.len(), 4);
}
