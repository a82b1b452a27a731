//! The client (`trace-client`) and its `trace` command against the functions running as processes
//! on the local service stack: following a job with progress writes exactly the database's records;
//! a stream cut by a proxy resumes from result pages with no gap and no duplicate; a malformed line,
//! a 429, a failed job, a poll timeout and Ctrl-C give their errors and exit codes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trace_client::{Client, ClientConfig, ClientError, StreamLine};
use trace_core::{Domain, JobId};
use trace_dataset::container_id;
use trace_integration::database::{count, digest_db, digest_json, Digest};
use trace_integration::system::{binary, Options, System, API_KEY};
use trace_integration::{pg_pool, unique};

fn ids(n: u64) -> Vec<String> {
    (1..=n).map(container_id).collect()
}

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("trace-client-tests").join(unique(name));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_ids(dir: &Path, ids: &[String]) -> PathBuf {
    let path = dir.join("ids.txt");
    std::fs::write(&path, ids.join("\n") + "\n").expect("ids file");
    path
}

/// `--url …` arguments pointing the command at a system (a separate URL per function).
fn urls(system: &System) -> Vec<String> {
    ["--url", &system.submit, "--status-url", &system.status, "--stream-url", &system.stream]
        .map(str::to_owned)
        .to_vec()
}

/// What a run of the command gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(binary("trace"));
    cmd.args(args);
    for var in ["TRACE_API_URL", "TRACE_SUBMIT_URL", "TRACE_STATUS_URL", "TRACE_STREAM_URL"] {
        cmd.env_remove(var);
    }
    // The systems under test authenticate callers; the command sends the test caller's key.
    cmd.env("TRACE_API_KEY", API_KEY);
    cmd
}

/// Runs `trace args…` to its end (stdout to `stdout_file` when given, else captured).
async fn trace(args: Vec<String>, stdin: Option<Vec<u8>>, stdout_file: Option<PathBuf>) -> Run {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut cmd = command(&args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stderr(Stdio::piped());
        match &stdout_file {
            Some(path) => cmd.stdout(std::fs::File::create(path).expect("stdout file")),
            None => cmd.stdout(Stdio::piped()),
        };
        let mut child = cmd.spawn().expect("spawn trace");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(&input).expect("write stdin");
        }
        let out = child.wait_with_output().expect("trace output");
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!("trace {} → {:?} in {:?}\n{}", args.join(" "), run.code, run.took, run.stderr);
        run
    })
    .await
    .expect("join")
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Stream lines read back from NDJSON text, checked for the documented order; the records' digest
/// per domain (computed line by line, never holding all records) and the lines themselves when
/// `keep` is set.
struct Checked {
    digest: BTreeMap<Domain, Digest>,
    counts: BTreeMap<Domain, u64>,
    lines: Vec<StreamLine>,
    job: Option<JobId>,
}

fn check_lines(reader: impl BufRead, keep: bool) -> Checked {
    let mut checked =
        Checked { digest: BTreeMap::new(), counts: BTreeMap::new(), lines: Vec::new(), job: None };
    let mut open: Option<(Domain, u64, u64)> = None; // domain, total, next batch
    let mut total = 0;
    let mut complete = false;
    for (i, text) in reader.lines().enumerate() {
        let text = text.expect("read line");
        assert!(!complete, "line {} after complete", i + 1);
        let line: StreamLine =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("line {}: {e}: {text:.200}", i + 1));
        match &line {
            StreamLine::Meta { job_id, .. } => {
                assert_eq!(i, 0, "meta is the first line");
                checked.job = Some(*job_id);
            }
            StreamLine::DomainStart { domain, total } => {
                assert!(open.is_none(), "domain_start inside a domain");
                open = Some((*domain, *total, 0));
                checked.counts.insert(*domain, 0);
            }
            StreamLine::Records { domain, batch, count, data } => {
                let (d, _, next) = open.as_mut().expect("records inside a domain");
                assert_eq!((*d, *batch), (*domain, *next), "batches count from 0 without gaps");
                assert_eq!(*count, data.len() as u64);
                *next += 1;
                *checked.counts.get_mut(domain).expect("counted") += count;
                total += count;
                for (d, part) in digest_json(data.iter().map(|r| (*domain, r))) {
                    let acc = checked.digest.entry(d).or_default();
                    acc.count += part.count;
                    acc.sum = acc.sum.wrapping_add(part.sum);
                    acc.xor ^= part.xor;
                }
            }
            StreamLine::DomainEnd { domain, count } => {
                let (d, announced, _) = open.take().expect("domain_end inside a domain");
                assert_eq!(d, *domain);
                assert_eq!(checked.counts[domain], *count, "{domain}: domain_end count");
                assert_eq!(announced, *count, "{domain}: domain_start total");
            }
            StreamLine::Complete { total_records } => {
                assert_eq!(*total_records, total, "complete's total");
                complete = true;
            }
            StreamLine::Aggregation { .. } | StreamLine::Warning { .. } => {}
            StreamLine::Error { code, message } => panic!("error line {code}: {message}"),
        }
        if keep {
            checked.lines.push(line);
        }
    }
    assert!(complete, "no complete line");
    checked
}

async fn assert_database(checked: &Checked, domains: &[Domain], ids: &[String]) {
    let pool = pg_pool();
    let expected = digest_db(&pool, domains, ids).await;
    for d in domains {
        let got = checked.digest.get(d).copied().unwrap_or_default();
        assert_eq!(got.count, count(&pool, *d, ids).await, "{d}: records vs SQL count");
        assert_eq!(got, expected[d], "{d}: checksum of the records vs the database");
        assert_eq!(checked.counts.get(d), Some(&got.count), "{d}: domain present");
    }
    let got: Vec<Domain> = checked.counts.keys().copied().collect();
    let mut want = domains.to_vec();
    want.sort();
    assert_eq!(got, want, "domains written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_25k_job_prints_progress_and_writes_exactly_the_database_records() {
    let system = System::start(Options::default()).await;
    let dir = scratch("follow");
    let ids = ids(25_000);
    let file = write_ids(&dir, &ids);
    let out = dir.join("stdout.ndjson");
    let mut a = urls(&system);
    a.extend(args(&["submit", file.to_str().expect("path"), "--follow", "--interval", "1s"]));
    let run = trace(a, None, Some(out.clone())).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Progress: the job accepted, polls with status, percent, domain, records and elapsed time, and
    // one line per streamed domain.
    let job = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("trace: job ").and_then(|r| r.strip_suffix(" accepted (light queue)")))
        .unwrap_or_else(|| panic!("no accepted line: {}", run.stderr))
        .to_owned();
    let polls: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with(&format!("job {job} "))).collect();
    assert!(polls.len() >= 2, "at least two progress lines: {}", run.stderr);
    let last = polls.last().expect("a poll");
    for part in ["finished", "100.0%", "records", "ids 25000/25000", "elapsed"] {
        assert!(last.contains(part), "{part:?} in {last:?}");
    }
    for d in Domain::BASE {
        assert!(
            run.stderr.lines().any(|l| l.starts_with("streamed") && l.contains(d.as_str())),
            "a streamed line for {d}: {}",
            run.stderr
        );
    }

    let checked = check_lines(BufReader::new(std::fs::File::open(&out).expect("stdout")), false);
    assert_eq!(checked.job.map(|j| j.to_string()), Some(job.clone()));
    assert_database(&checked, &Domain::BASE, &ids).await;
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    let written: u64 = checked.counts.values().sum();
    assert_eq!(status["progress_detail"]["records_written"].as_u64(), Some(written));

    // The same result as one CSV file per domain.
    let csv = dir.join("csv");
    let mut a = urls(&system);
    a.extend(args(&["stream", &job, "--out-dir", csv.to_str().expect("path"), "--format", "csv", "-q"]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "files, not stdout");
    let pool = pg_pool();
    for d in Domain::BASE {
        let text = std::fs::read_to_string(csv.join(format!("{d}.csv"))).expect("csv file");
        let mut lines = text.lines();
        let header: Vec<&str> = d.columns().iter().map(|c| c.name).collect();
        assert_eq!(lines.next(), Some(header.join(",").as_str()));
        assert_eq!(lines.count() as u64, count(&pool, d, &ids).await, "{d}.csv rows");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_answer_is_printed_like_a_stream_and_result_pages_read_back_a_domain() {
    let system =
        System::start(Options { env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "1000")]), ..Default::default() })
            .await;
    let dir = scratch("inline");
    // 400 ids as a JSON array on stdin: answered inline.
    let small = ids(400);
    let mut a = urls(&system);
    a.extend(args(&["submit", "--domains", "holds,history"]));
    let run = trace(a, Some(serde_json::to_vec(&small).expect("json")), None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("answered inline"), "{}", run.stderr);
    let checked = check_lines(run.stdout.as_bytes(), true);
    assert_eq!(checked.job, None, "no job, no meta line");
    assert_database(&checked, &[Domain::Holds, Domain::History], &small).await;

    // 3,000 ids become a job; `submit` without --follow prints where it is.
    let big = ids(3_000);
    let file = write_ids(&dir, &big);
    let mut a = urls(&system);
    a.extend(args(&["submit", file.to_str().expect("path"), "--domains", "materials,holds"]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let accepted: Value = serde_json::from_str(run.stdout.trim()).expect("accepted JSON");
    let job = accepted["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(accepted["status_url"], format!("/api/trace/job/{job}"));
    let mut a = urls(&system);
    a.extend(args(&["wait", &job, "--interval", "500ms"]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let finished: Value = serde_json::from_str(run.stdout.trim()).expect("status JSON");
    assert_eq!(finished["status"], "finished");
    // Every record of one domain through pages of 1,234 (not the chunk size), one file.
    let pages = dir.join("pages");
    let mut a = urls(&system);
    a.extend(args(&[
        "result",
        &job,
        "--all",
        "--domain",
        "materials",
        "--limit",
        "1234",
        "--out-dir",
        pages.to_str().expect("path"),
    ]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let text = std::fs::read_to_string(pages.join("materials.ndjson")).expect("file");
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("record")).collect();
    let digest = digest_json(records.iter().map(|r| (Domain::Materials, r)));
    let expected = digest_db(&pg_pool(), &[Domain::Materials], &big).await;
    assert_eq!(digest.get(&Domain::Materials).copied().unwrap_or_default(), expected[&Domain::Materials]);
    // One page, the server's format.
    let mut a = urls(&system);
    a.extend(args(&["result", &job, "--domain", "holds", "--offset", "10", "--limit", "7"]));
    let run = trace(a, None, None).await;
    let page: Value = serde_json::from_str(run.stdout.trim()).expect("page JSON");
    assert_eq!(page["results"]["holds"]["count"], 7);
    assert_eq!(page["results"]["holds"]["offset"], 10);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP proxy in front of the stream function that closes the first `/stream` connection after a
/// number of response bytes (headers included), and counts what it forwarded.
struct Proxy {
    url: String,
    cut: Arc<Mutex<Option<usize>>>,
    cuts: Arc<AtomicUsize>,
    stream_bytes: Arc<AtomicUsize>,
}

async fn proxy(upstream: &str) -> Proxy {
    let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().expect("upstream address");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cut = Arc::new(Mutex::new(None::<usize>));
    let cuts = Arc::new(AtomicUsize::new(0));
    let stream_bytes = Arc::new(AtomicUsize::new(0));
    let (c, n, b) = (cut.clone(), cuts.clone(), stream_bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let (cut, cuts, stream_bytes) = (c.clone(), n.clone(), b.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let mut head = vec![0u8; 16 << 10];
                let Ok(n) = client_read.read(&mut head).await else { return };
                let is_stream = head[..n].windows(12).any(|w| w == b"/stream HTTP");
                let budget = if is_stream { cut.lock().expect("lock").take() } else { None };
                if is_stream {
                    stream_bytes.store(0, Ordering::SeqCst);
                }
                if server_write.write_all(&head[..n]).await.is_err() {
                    return;
                }
                let upload = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0usize;
                while let Ok(k) = server_read.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    let allowed = budget.map_or(k, |b| (b - sent).min(k));
                    if is_stream {
                        stream_bytes.fetch_add(allowed, Ordering::SeqCst);
                    }
                    if client_write.write_all(&buf[..allowed]).await.is_err() {
                        break;
                    }
                    sent += allowed;
                    if budget.is_some_and(|b| sent >= b) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
                upload.abort();
                // Dropping both halves closes the connection.
            });
        }
    });
    Proxy { url, cut, cuts, stream_bytes }
}

fn stream_client(url: &str, configure: impl FnOnce(&mut ClientConfig)) -> Client {
    // reqwest has no crypto provider of its own: the workspace's (aws-lc-rs).
    trace_adapters::tls::install_provider();
    let mut config = ClientConfig::new(url);
    config.auth = trace_client::Auth::api_key(API_KEY);
    configure(&mut config);
    Client::new(config).expect("client")
}

async fn read_all(client: &Client, job: &JobId) -> (Vec<StreamLine>, Option<ClientError>, u32) {
    let mut stream = client.stream(job);
    let mut lines = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(line) => lines.push(line),
            Err(e) => return (lines, Some(e), stream.resumes()),
        }
    }
    (lines, None, stream.resumes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_a_proxy_resumes_from_pages_without_gap_or_duplicate() {
    let system =
        System::start(Options { env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "100")]), ..Default::default() })
            .await;
    let ids = ids(3_000);
    let domains = ["history", "materials", "rejects", "holds", "jobs"];
    let (code, accepted) =
        system.submit(&json!({ "container_ids": ids, "profile": "msd", "domains": domains })).await;
    assert_eq!(code, 202, "{accepted}");
    let job: JobId = accepted["job_id"].as_str().expect("job").parse().expect("id");
    assert_eq!(system.wait_terminal(&job.to_string(), Duration::from_secs(300)).await["status"], "finished");

    // The whole stream through the proxy, uncut: the reference, checked against the database.
    let proxy = proxy(&system.stream).await;
    let (reference, error, resumes) = read_all(&stream_client(&proxy.url, |_| {}), &job).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(resumes, 0);
    tokio::time::sleep(Duration::from_millis(200)).await; // the proxy forwards the last bytes
    let total = proxy.stream_bytes.load(Ordering::SeqCst);
    let mut text = Vec::new();
    for line in &reference {
        line.write_to(&mut text);
    }
    let checked = check_lines(text.as_slice(), false);
    assert_database(&checked, &Domain::BASE, &ids).await;
    assert!(matches!(reference[reference.len() - 2], StreamLine::Aggregation { .. }));
    let records_lines = reference.iter().filter(|l| matches!(l, StreamLine::Records { .. })).count();
    assert!(records_lines > 10, "{records_lines} records lines: the cuts should fall inside records");

    // Cut in the headers, around the meta line, inside records of different domains, near the end.
    for cut in [100, 300, total / 3, total / 2 + 1234, total * 5 / 6, total - 200, total - 12] {
        *proxy.cut.lock().expect("lock") = Some(cut);
        let before = proxy.cuts.load(Ordering::SeqCst);
        let (lines, error, resumes) = read_all(&stream_client(&proxy.url, |_| {}), &job).await;
        assert!(error.is_none(), "cut at {cut} of {total}: {error:?}");
        assert_eq!(proxy.cuts.load(Ordering::SeqCst), before + 1, "the proxy cut at {cut}");
        assert_eq!(resumes, 1, "cut at {cut}");
        assert_eq!(lines.len(), reference.len(), "cut at {cut} of {total}: line count");
        assert!(lines == reference, "cut at {cut} of {total}: the lines differ from the uncut stream");
    }

    // Without resumption the error says where it stopped: after the records it delivered.
    *proxy.cut.lock().expect("lock") = Some(total / 2);
    let (lines, error, _) = read_all(&stream_client(&proxy.url, |c| c.max_resumes = 0), &job).await;
    let (domain, delivered) = lines
        .iter()
        .rev()
        .find_map(|l| match l {
            StreamLine::DomainStart { domain, .. } => Some(*domain),
            _ => None,
        })
        .map(|d| {
            let n: u64 = lines
                .iter()
                .filter_map(|l| match l {
                    StreamLine::Records { domain, count, .. } if *domain == d => Some(*count),
                    _ => None,
                })
                .sum();
            (d, n)
        })
        .expect("some domain started before half the stream");
    match error {
        Some(ClientError::StreamInterrupted { after_domain, after_records, .. }) => {
            assert_eq!((after_domain, after_records), (Some(domain), delivered));
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert!(lines.len() < reference.len() && lines[..] == reference[..lines.len()]);

    // The command through the proxy, reading the stream route (through chunk URLs the bytes would
    // not pass the proxy): same lines on stdout, the resumption told on stderr.
    *proxy.cut.lock().expect("lock") = Some(total / 2);
    let run =
        trace(args(&["--url", &proxy.url, "stream", &job.to_string(), "--via", "stream"]), None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("resuming"), "{}", run.stderr);
    let printed: Vec<StreamLine> =
        run.stdout.lines().map(|l| serde_json::from_str(l).expect("stream line")).collect();
    assert!(printed == reference, "the command's lines differ from the uncut stream");

    // --no-resume: exit code 4.
    *proxy.cut.lock().expect("lock") = Some(total / 2);
    let run = trace(
        args(&["--url", &proxy.url, "stream", &job.to_string(), "--no-resume", "--via", "stream"]),
        None,
        None,
    )
    .await;
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("stream interrupted after"), "{}", run.stderr);
}

/// A fake stream/status function: a stream with a broken third line, and a status that is always 429.
async fn fake_server(job: JobId) -> (String, Arc<AtomicUsize>) {
    let status_calls = Arc::new(AtomicUsize::new(0));
    let calls = status_calls.clone();
    let body = format!(
        "{{\"type\":\"meta\",\"job_id\":\"{job}\",\"profile\":\"query_tool\",\"domains\":[\"holds\"]}}\n\
         {{\"type\":\"domain_start\",\"domain\":\"holds\",\"total\":2}}\n\
         {{\"type\":\"records\",\"domain\":\"holds\",\"batch\":0,\"count\":2,\"data\":[{{\"a\":1}},{{\"a\":2}}]\n\
         {{\"type\":\"domain_end\",\"domain\":\"holds\",\"count\":2}}\n\
         {{\"type\":\"complete\",\"total_records\":2}}\n"
    );
    let app = axum::Router::new()
        .route(
            "/api/trace/job/{id}/stream",
            get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from(body)) }
            }),
        )
        .route(
            "/api/trace/job/{id}",
            get(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "1")],
                        axum::Json(
                            json!({"code":"TOO_MANY_REQUESTS","message":"slow down","retry_after_seconds":1}),
                        ),
                    )
                        .into_response()
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, status_calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_gives_its_line_number_and_a_429_is_retried_then_reported() {
    let job = JobId::new();
    let (url, status_calls) = fake_server(job).await;
    let client = stream_client(&url, |_| {});
    let (lines, error, resumes) = read_all(&client, &job).await;
    assert_eq!(lines.len(), 2, "meta and domain_start before the broken line");
    assert_eq!(resumes, 0, "a malformed line is not an interruption");
    match error {
        Some(ClientError::MalformedLine { line_no, snippet, .. }) => {
            assert_eq!(line_no, 3);
            assert!(snippet.starts_with("{\"type\":\"records\""), "{snippet}");
        }
        other => panic!("expected MalformedLine, got {other:?}"),
    }
    let run = trace(args(&["--url", &url, "stream", &job.to_string()]), None, None).await;
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("malformed stream line 3"), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 2, "the good lines were printed as they came");

    // 429 with Retry-After: 1 — retried twice (2 s), then RateLimited; the command exits 5.
    let started = Instant::now();
    let err = stream_client(&url, |c| c.rate_limit_retries = 2).status(&job).await.expect_err("429");
    assert!(matches!(err, ClientError::RateLimited { retry_after } if retry_after == Duration::from_secs(1)));
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for Retry-After");
    assert_eq!(status_calls.load(Ordering::SeqCst), 3);
    let run = trace(args(&["--url", &url, "status", &job.to_string(), "--retries", "1"]), None, None).await;
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("rate limited"), "{}", run.stderr);
    assert!(run.took >= Duration::from_secs(1));
    assert_eq!(status_calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_exits_2_with_the_server_s_code() {
    let mut system = System::start(Options {
        env: env(&[
            ("TRACE_ASYNC_CID_THRESHOLD", "1"),
            ("TRACE_MAX_RECEIVE_COUNT", "1"),
            ("TRACE_RETRY_WINDOW_SECONDS", "1"),
        ]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    // A worker whose database is unreachable: its only delivery fails the job.
    system.spawn_worker("light", &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/trace")]);
    let dir = scratch("failed");
    let file = write_ids(&dir, &ids(3));
    let mut a = urls(&system);
    a.extend(args(&[
        "submit",
        file.to_str().expect("path"),
        "--follow",
        "--interval",
        "1s",
        "--timeout",
        "5m",
    ]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("failed: SOURCE_ERROR"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing streamed: {}", run.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `trace args…` and returns it with a channel of its stderr lines.
fn spawn_trace(args: Vec<String>) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            eprintln!("trace: | {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits for a stderr line containing `part`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, part: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(part) => return line,
            Ok(_) => {}
            Err(e) => panic!("no stderr line with {part:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_timeout_exits_3_and_ctrl_c_cancels_only_on_request() {
    let system = System::start(Options {
        env: env(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]),
        no_workers: true,
        ..Default::default()
    })
    .await;
    let dir = scratch("timeout");
    let file = write_ids(&dir, &ids(5)).to_str().expect("path").to_owned();

    // No worker: the job stays queued, and --timeout 3s ends the wait with exit code 3.
    let mut a = urls(&system);
    a.extend(args(&["submit", &file, "--follow", "--interval", "1s", "--timeout", "3s"]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("still queued after"), "{}", run.stderr);
    assert!(run.took >= Duration::from_secs(3) && run.took < Duration::from_secs(30), "{:?}", run.took);
    let polls = run.stderr.lines().filter(|l| l.starts_with("job ") && l.contains(" queued ")).count();
    assert!((3..=5).contains(&polls), "a poll a second for 3 s: {polls}\n{}", run.stderr);

    // Ctrl-C while following with --cancel-on-interrupt: exit 130 and the job is cancelled.
    let mut a = urls(&system);
    a.extend(args(&["submit", &file, "--follow", "--interval", "1s", "--cancel-on-interrupt"]));
    let system_status = system.status.clone();
    let (code, job) = tokio::task::spawn_blocking(move || {
        let (mut child, rx) = spawn_trace(a);
        let accepted = wait_line(&rx, "accepted");
        let job = accepted.split_whitespace().nth(2).expect("job id").to_owned();
        wait_line(&rx, " queued ");
        let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
        wait_line(&rx, "interrupted");
        (child.wait().expect("wait").code(), job)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(130));
    let (_, status) = system.get_status(&format!("/api/trace/job/{job}")).await;
    assert_eq!(status["status"], "cancelled", "{status}");

    // A stream that cannot be followed (no stream URL given: the submit host has no such route) is
    // reported after the next status poll, not when the job ends (it would wait here for ever).
    let mut a = vec!["--url".to_owned(), system.submit.clone(), "--status-url".to_owned(), system_status];
    a.extend(args(&["submit", &file, "--follow", "--interval", "1s"]));
    let run = trace(a, None, None).await;
    assert!(run.stderr.contains("404") && run.stderr.contains("no such route"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
    assert_eq!(run.code, Some(1), "{}", run.stderr);

    // Without the flag the job goes on.
    let mut a = urls(&system);
    a.extend(args(&["submit", &file, "--follow", "--interval", "1s"]));
    let (code, job2) = tokio::task::spawn_blocking(move || {
        let (mut child, rx) = spawn_trace(a);
        let accepted = wait_line(&rx, "accepted");
        let job = accepted.split_whitespace().nth(2).expect("job id").to_owned();
        wait_line(&rx, " queued ");
        let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
        wait_line(&rx, "goes on");
        (child.wait().expect("wait").code(), job)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(130));
    let (_, status) = system.get_status(&format!("/api/trace/job/{job2}")).await;
    assert_eq!(status["status"], "queued", "{status}");

    // status, jobs, cancel from the command line.
    let mut a = urls(&system);
    a.extend(args(&["status", &job2]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let info: Value = serde_json::from_str(run.stdout.trim()).expect("status JSON");
    assert_eq!((info["job_id"].as_str(), info["status"].as_str()), (Some(job2.as_str()), Some("queued")));
    let mut a = urls(&system);
    a.extend(args(&["jobs", "--status", "cancelled"]));
    let run = trace(a, None, None).await;
    let listed: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect("job JSON")).collect();
    assert!(listed.iter().any(|j| j["job_id"] == job.as_str()), "{}", run.stdout);
    assert!(listed.iter().all(|j| j["status"] == "cancelled"));
    let mut a = urls(&system);
    a.extend(args(&["cancel", &job2]));
    let run = trace(a.clone(), None, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("\"cancelled\""), "{}", run.stdout);
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 409 JOB_NOT_CANCELLABLE"), "{}", run.stderr);
    let mut a = urls(&system);
    a.extend(args(&["status", &JobId::new().to_string()]));
    let run = trace(a, None, None).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("HTTP 404 JOB_NOT_FOUND"), "{}", run.stderr);
    let run = trace(args(&["submit", "--bogus"]), None, None).await;
    assert_eq!(run.code, Some(1), "usage errors exit 1: {}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
