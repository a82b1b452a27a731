//! The system under test: the function binaries started as local processes against the service
//! stack, each test with its own queues (and DLQs), bucket and Redis key prefix, so tests never share
//! state. Processes are killed when the [`System`] is dropped; their logs go to files named on start.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trace_adapters::aws;
use trace_adapters::queue::sqs::{create_queue_with_dlq, SqsQueue};
use trace_adapters::store::s3::S3Store;

use crate::{required, unique};

/// The API key every [`System`] request helper sends (principal `key:alice`).
pub const API_KEY: &str = "trk_test_alice_0123456789abcdef";
/// A second caller's key (principal `key:bob`).
pub const OTHER_API_KEY: &str = "trk_test_bob_0123456789abcdef";
/// An admin's key (principal `key:ops`, in `TRACE_ADMIN_PRINCIPALS`).
pub const ADMIN_API_KEY: &str = "trk_test_ops_0123456789abcdef";
/// The SigV4 access key of the system's credentials file (principal [`SIGV4_PRINCIPAL`]).
pub const SIGV4_ACCESS_KEY: &str = "AKIDTRACELOCALTEST";
/// Its secret.
pub const SIGV4_SECRET_KEY: &str = "trace/local/test/secret/key/EXAMPLE";
/// The principal of the SigV4 credentials: the caller of the IAM authorizer context in `events/`, so
/// jobs created locally with SigV4 belong to the caller of the Lambda events.
pub const SIGV4_PRINCIPAL: &str = "arn:aws:sts::123456789012:assumed-role/trace-dashboard/trace-dashboard";

/// The `TRACE_API_KEYS` entry of `key` under `name`.
pub fn api_key_entry(name: &str, key: &str) -> String {
    trace_core::auth::api_key_entry(name, key)
}

/// `method url` with `body`, signed with SigV4 by the `aws-sigv4` crate (service `execute-api`,
/// region `us-east-1`) with `access_key`/`secret` at `time`, as `trace --sigv4` signs for an IAM endpoint.
pub fn sigv4_request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Vec<u8>,
    (access_key, secret): (&str, &str),
    time: std::time::SystemTime,
) -> reqwest::Request {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let parsed = reqwest::Url::parse(url).expect("url");
    let host = match parsed.port() {
        Some(port) => format!("{}:{port}", parsed.host_str().expect("host")),
        None => parsed.host_str().expect("host").to_owned(),
    };
    let identity = aws_credential_types::Credentials::new(access_key, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let mut headers = vec![("host".to_owned(), host)];
    if !body.is_empty() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    let signable = SignableRequest::new(
        method,
        url.to_owned(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut request =
        client.request(method.parse().expect("method"), url).body(body.clone()).build().expect("request");
    for (k, v) in headers.iter().skip(1) {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    for (name, value) in instructions.headers() {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    request
}

/// An HTTP client that sends `api_key` (none: no credentials) with every request.
pub fn http_client(api_key: Option<&str>) -> reqwest::Client {
    // reqwest is built without a crypto provider of its own: the workspace's one (aws-lc-rs).
    trace_adapters::tls::install_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        headers.insert("x-api-key", reqwest::header::HeaderValue::from_str(key).expect("key"));
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Where the workspace's binaries are (next to the test executable's `deps` folder).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (infra/test.sh does)",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// How to start a system.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra environment for every process.
    pub env: Vec<(&'static str, String)>,
    /// Worker processes per queue (default 1).
    pub workers_per_queue: usize,
    /// Don't start workers (the test starts its own).
    pub no_workers: bool,
}

/// A running system.
pub struct System {
    /// Base URL of submit.
    pub submit: String,
    /// Base URL of status.
    pub status: String,
    /// Base URL of stream.
    pub stream: String,
    /// The environment every process got.
    pub env: Vec<(String, String)>,
    /// The heavy queue and its DLQ.
    pub heavy: (SqsQueue, SqsQueue),
    /// The light queue and its DLQ.
    pub light: (SqsQueue, SqsQueue),
    /// The bucket.
    pub store: S3Store,
    /// HTTP client; sends [`API_KEY`].
    pub http: reqwest::Client,
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Drop for System {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl System {
    /// Creates fresh resources and starts submit, status, stream and one worker per queue.
    pub async fn start(options: Options) -> System {
        let sdk = crate::sdk().await;
        let sqs = aws::sqs_client(&sdk);
        let name = unique("sys");
        let max_receive: u32 = options
            .env
            .iter()
            .find(|(k, _)| *k == "TRACE_MAX_RECEIVE_COUNT")
            .map(|(_, v)| v.parse().expect("TRACE_MAX_RECEIVE_COUNT"))
            .unwrap_or_else(|| {
                let code = trace_core::config::VARIABLES.iter().find(|v| v.name == "TRACE_MAX_RECEIVE_COUNT");
                code.and_then(|v| v.default.parse().ok()).expect("TRACE_MAX_RECEIVE_COUNT's default")
            });
        let visibility = Duration::from_secs(60);
        let (heavy, heavy_dlq) =
            create_queue_with_dlq(&sqs, &format!("{name}-heavy"), max_receive, visibility)
                .await
                .expect("queue");
        let (light, light_dlq) =
            create_queue_with_dlq(&sqs, &format!("{name}-light"), max_receive, visibility)
                .await
                .expect("queue");
        let store = S3Store::new(aws::s3_client(&sdk), name.clone());
        store.ensure_bucket().await.expect("bucket");
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), required("AWS_ENDPOINT_URL")),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("REDIS_URL".into(), required("REDIS_URL")),
            ("REDIS_KEY_PREFIX".into(), name.clone()),
            ("DATABASE_URL".into(), required("DATABASE_URL")),
            ("TRACE_HEAVY_QUEUE_URL".into(), heavy.clone()),
            ("TRACE_LIGHT_QUEUE_URL".into(), light.clone()),
            ("TRACE_HEAVY_DLQ_URL".into(), heavy_dlq.clone()),
            ("TRACE_LIGHT_DLQ_URL".into(), light_dlq.clone()),
            ("TRACE_BUCKET".into(), name.clone()),
            ("TRACE_RATE_LIMIT_REQUESTS".into(), "100000".into()),
            ("TRACE_SUBMIT_RATE_LIMIT_REQUESTS".into(), "100000".into()),
            ("TRACE_WORKER_VISIBILITY_SECONDS".into(), "30".into()),
            ("TRACE_WORKER_HEARTBEAT_SECONDS".into(), "5".into()),
            // One worker runs a job whole unless a test splits it (`TRACE_MAX_SHARDS`): most tests
            // exercise the run of one shard (its lease, checkpoints, faults); the sharding tests
            // (`sharding::*`) set their own.
            ("TRACE_MAX_SHARDS".into(), "1".into()),
            ("TRACE_AUTH".into(), "keys".into()),
            (
                "TRACE_API_KEYS".into(),
                [("alice", API_KEY), ("bob", OTHER_API_KEY), ("ops", ADMIN_API_KEY)]
                    .map(|(n, k)| api_key_entry(n, k))
                    .join(","),
            ),
            ("TRACE_ADMIN_PRINCIPALS".into(), "key:ops".into()),
            ("RUST_LOG".into(), "info".into()),
            ("LOG_FORMAT".into(), "text".into()),
        ];
        for (k, v) in &options.env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.clone()));
        }
        let logs = std::env::temp_dir().join("trace-e2e").join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");
        let sigv4 = logs.join("sigv4-credentials");
        std::fs::write(&sigv4, format!("{SIGV4_PRINCIPAL} {SIGV4_ACCESS_KEY} {SIGV4_SECRET_KEY}\n"))
            .expect("SigV4 credentials file");
        if !env.iter().any(|(k, _)| k == "TRACE_SIGV4_CREDENTIALS_FILE") {
            env.push(("TRACE_SIGV4_CREDENTIALS_FILE".into(), sigv4.display().to_string()));
        }
        let http = http_client(Some(API_KEY));
        let mut system = System {
            submit: String::new(),
            status: String::new(),
            stream: String::new(),
            env,
            heavy: (SqsQueue::new(sqs.clone(), heavy), SqsQueue::new(sqs.clone(), heavy_dlq)),
            light: (SqsQueue::new(sqs.clone(), light), SqsQueue::new(sqs, light_dlq)),
            store,
            http,
            children: Vec::new(),
            logs,
        };
        system.submit = system.spawn_http("submit", &[]).await;
        system.status = system.spawn_http("status", &[]).await;
        system.stream = system.spawn_http("stream", &[]).await;
        if !options.no_workers {
            for _ in 0..options.workers_per_queue.max(1) {
                system.spawn_worker("heavy", &[]);
                system.spawn_worker("light", &[]);
            }
        }
        eprintln!("system {name}: logs in {}", system.logs.display());
        system
    }

    /// Starts a binary with the system's environment plus `extra`.
    pub fn spawn(&mut self, binary_name: &str, label: &str, extra: &[(&str, &str)]) -> u32 {
        let log = std::fs::File::create(self.logs.join(format!("{label}-{}.log", self.children.len())))
            .expect("log file");
        let mut cmd = Command::new(binary(binary_name));
        cmd.env_remove("AWS_LAMBDA_RUNTIME_API").envs(self.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
        let pid = child.id();
        self.children.push((label.to_owned(), child));
        pid
    }

    /// Starts an HTTP function on a free port and waits for `/health`; returns its base URL.
    pub async fn spawn_http(&mut self, binary_name: &str, extra: &[(&str, &str)]) -> String {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut env: Vec<(&str, &str)> = vec![("TRACE_HTTP_ADDR", &addr)];
        env.extend_from_slice(extra);
        self.spawn(binary_name, binary_name, &env);
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{base}/health")).send().await {
                if r.status().is_success() {
                    return base;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{binary_name} did not answer /health; see {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a worker process on `queue` (`heavy` or `light`); returns its pid.
    pub fn spawn_worker(&mut self, queue: &str, extra: &[(&str, &str)]) -> u32 {
        let mut env = vec![("TRACE_WORKER_QUEUE", queue)];
        env.extend_from_slice(extra);
        self.spawn("worker", &format!("worker-{queue}"), &env)
    }

    /// Kills a child at once (SIGKILL: no clean-up, as a crash or an out-of-memory kill) and waits for it.
    pub fn kill(&mut self, pid: u32) {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        if let Some((_, child)) = self.children.iter_mut().find(|(_, c)| c.id() == pid) {
            let _ = child.wait();
        }
    }

    /// The folder of the processes' logs.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.logs
    }

    /// Sends SIGTERM to a child and waits for it (up to `within`); its exit status.
    pub fn terminate(&mut self, pid: u32, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        let (_, child) = self.children.iter_mut().find(|(_, c)| c.id() == pid)?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes the job's metadata from Redis, as a flush or a restart without persistence would (only
    /// this system's key: other tests share the server).
    pub async fn forget_job(&self, job: &str) {
        let prefix = self.env.iter().find(|(k, _)| k == "REDIS_KEY_PREFIX").map(|(_, v)| v.clone());
        let keys = trace_adapters::keys::Keys::new(&prefix.expect("REDIS_KEY_PREFIX"));
        let mut conn =
            trace_adapters::redis_connection::connect(&required("REDIS_URL")).await.expect("Redis");
        let deleted: i64 =
            redis::cmd("DEL").arg(keys.job_meta(job)).query_async(&mut conn).await.expect("DEL");
        assert_eq!(deleted, 1, "job {job} was not in Redis");
    }

    /// POSTs a trace request; (HTTP status, JSON body).
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/trace/events", self.submit))
            .json(body)
            .send()
            .await
            .expect("submit");
        let status = r.status().as_u16();
        (status, r.json().await.expect("submit answers JSON"))
    }

    /// GETs a status-function path; (HTTP status, JSON body).
    pub async fn get_status(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.status)).send().await.expect("status");
        let status = r.status().as_u16();
        (status, r.json().await.expect("status answers JSON"))
    }

    /// Polls a job until it reaches a terminal status; the last status body.
    pub async fn wait_terminal(&self, job_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get_status(&format!("/api/trace/job/{job_id}")).await;
            assert_eq!(code, 200, "status of {job_id}: {body}");
            let status = body["status"].as_str().unwrap_or_default().to_owned();
            if matches!(status.as_str(), "finished" | "failed" | "cancelled") {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} still {status} after {timeout:?}: {body}; logs in {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Reads a job's whole NDJSON stream: (HTTP status, content type, lines).
    pub async fn stream_lines(&self, job_id: &str) -> (u16, String, Vec<Value>) {
        let r = self
            .http
            .get(format!("{}/api/trace/job/{job_id}/stream", self.stream))
            .send()
            .await
            .expect("stream");
        let status = r.status().as_u16();
        let ctype =
            r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = r.text().await.expect("stream body");
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:.200}: {e}")))
            .collect();
        (status, ctype, lines)
    }

    /// GETs a stream-function path; (HTTP status, JSON body).
    pub async fn get_stream(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.stream)).send().await.expect("stream fn");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON"))
    }
}
