//! Client of the trace job API (README, section "API"), for programs and for the `trace` command.
//!
//! [`Client`] submits traces, reads a job's status, waits for it (polling every 3 s for up to 30 min
//! by default, with a progress callback), cancels it, lists the history, reads result pages, and
//! consumes the NDJSON stream as typed [`StreamLine`]s as they arrive ([`Client::stream`]): the body
//! is split line by line with a bounded buffer, never held whole, and an interrupted stream resumes
//! from the paginated `result` route, so the caller sees the same line sequence with no gap and no
//! duplicate. Every failure is a typed [`ClientError`]; HTTP 429 is retried after `Retry-After`.
//!
//! A result of any size is read through its chunk URLs ([`Client::read_chunks`]): presigned object
//! GETs, several at once, checked chunk by chunk and delivered as the same lines in order.
//!
//! Every request carries the configured [`Auth`]: an API key, a bearer token, or a SigV4 signature
//! (IAM endpoints: the HTTP API with its IAM authorizer, the stream function's Function URL). A 202
//! answer's `stream_url` may name another host (the stream function's own URL):
//! [`Client::at_stream_url`] follows it. TLS is rustls with the aws-lc-rs provider, installed as the
//! process default by [`Client::new`] when none is.
//!
//! ```no_run
//! # async fn run() -> Result<(), trace_client::ClientError> {
//! use futures::StreamExt;
//! use trace_client::{Client, ClientConfig, SubmitRequest, Submitted};
//!
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8080"))?;
//! if let Submitted::Accepted(job) = client.submit(&SubmitRequest::new(["CID-0000001"])).await? {
//!     client.wait(&job.job_id, |s| eprintln!("{} {}%", s.status, s.progress_detail.percent)).await?;
//!     let mut lines = client.stream(&job.job_id);
//!     while let Some(line) = lines.next().await {
//!         println!("{:?}", line?);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod auth;
pub mod chunks;
pub mod error;
pub mod lines;
pub mod output;
pub mod pages;
pub mod stream;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use trace_core::job::JobStatus;
use trace_core::{Domain, JobId};

pub use auth::{Auth, Secret, SigV4};
pub use chunks::{Piece, PieceStream, RecordsBlock};
pub use error::ClientError;
pub use stream::{LineStream, Resume};
pub use trace_core::ndjson::StreamLine;
pub use types::{
    Accepted, ChunkDomain, ChunkLink, ChunkList, ErrorBody, InlineResult, JobInfo, JobList, Page,
    SubmitRequest, Submitted,
};

/// Most records a result page may hold (the server's limit).
pub const MAX_PAGE: u32 = 5000;

/// How the client reaches the API and how patient it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of every route (e.g. `http://127.0.0.1:8080`, or the HTTP API's URL with its stage).
    pub base_url: String,
    /// Base URL of `POST /api/trace/events`, when it differs from `base_url`.
    pub submit_url: Option<String>,
    /// Base URL of status, history and cancel, when it differs from `base_url`.
    pub status_url: Option<String>,
    /// Base URL of the stream and the result pages (in AWS the stream function's Function URL).
    pub stream_url: Option<String>,
    /// The credentials every request carries (default none).
    pub auth: Auth,
    /// Time between two status polls of [`Client::wait`] (default 3 s).
    pub poll_interval: Duration,
    /// How long [`Client::wait`] waits for a terminal status (default 30 min).
    pub wait_timeout: Duration,
    /// Retries of a request answered 429 before [`ClientError::RateLimited`] (default 3).
    pub rate_limit_retries: u32,
    /// Longest single wait after a 429, whatever `Retry-After` says (default 60 s).
    pub max_retry_wait: Duration,
    /// Timeout of one request other than the stream (default 300 s; an inline submit may take a while).
    pub request_timeout: Duration,
    /// Longest silence while reading a response body, the stream included (default 120 s).
    pub read_timeout: Duration,
    /// Records per page when paging, 1–5000 (default 5000, the server's chunk size).
    pub page_limit: u32,
    /// Longest stream line accepted (default 64 MiB; a `records` line of 5000 records is ~1–2 MB).
    pub max_line_bytes: usize,
    /// Resumptions of one interrupted stream (re-opening it, or retried pages) before giving up with
    /// [`ClientError::StreamInterrupted`] (default 5; 0 = never resume).
    pub max_resumes: u32,
    /// Attempts at one chunk read through its URL ([`Client::read_chunks`]) before
    /// [`ClientError::ChunkFailed`] (default 5; at least 1).
    pub chunk_attempts: u32,
}

impl ClientConfig {
    /// The defaults, with one base URL for every route.
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            submit_url: None,
            status_url: None,
            stream_url: None,
            auth: Auth::None,
            poll_interval: Duration::from_secs(3),
            wait_timeout: Duration::from_secs(30 * 60),
            rate_limit_retries: 3,
            max_retry_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(120),
            page_limit: MAX_PAGE,
            max_line_bytes: 64 << 20,
            max_resumes: 5,
            chunk_attempts: 5,
        }
    }
}

/// Which function a route belongs to.
#[derive(Debug, Clone, Copy)]
enum Part {
    Submit,
    Status,
    Stream,
}

/// The API client. Cheap to clone (shares its connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
}

fn check_url(name: &str, url: &str) -> Result<String, ClientError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ClientError::Config(format!("{name} {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!("{name} {url:?}: not an http(s) URL")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Makes aws-lc-rs the process's rustls provider (reqwest is built without one), unless a provider
/// is installed already: then that one stays.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all this needs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl Client {
    /// A client for `config` (its URLs are checked here).
    pub fn new(mut config: ClientConfig) -> Result<Client, ClientError> {
        install_crypto_provider();
        config.base_url = check_url("base URL", &config.base_url)?;
        for (name, url) in [
            ("submit URL", &mut config.submit_url),
            ("status URL", &mut config.status_url),
            ("stream URL", &mut config.stream_url),
        ] {
            if let Some(u) = url.as_mut() {
                *u = check_url(name, u)?;
            }
        }
        if !(1..=MAX_PAGE).contains(&config.page_limit) {
            return Err(ClientError::Config(format!("page limit {} is not 1–{MAX_PAGE}", config.page_limit)));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(config.read_timeout)
            .user_agent(concat!("trace-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Client { http, config: Arc::new(config) })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, part: Part, path: &str) -> String {
        let c = &self.config;
        let base = match part {
            Part::Submit => c.submit_url.as_deref(),
            Part::Status => c.status_url.as_deref(),
            Part::Stream => c.stream_url.as_deref(),
        }
        .unwrap_or(&c.base_url);
        format!("{base}{path}")
    }

    /// The client to follow a 202 answer's `stream_url`: a relative one is read from this client's
    /// stream base URL (itself); an absolute one (the stream function on its own host) makes that
    /// URL's base — everything before `/api/trace/job/` — the base of the stream and the result
    /// pages, signed for that host's service. An `https` API's stream URL must be `https` too.
    pub fn at_stream_url(&self, stream_url: &str) -> Result<Client, ClientError> {
        if stream_url.starts_with('/') {
            return Ok(self.clone());
        }
        let invalid = |reason: &str| ClientError::InvalidResponse {
            url: stream_url.to_owned(),
            reason: format!("stream_url: {reason}"),
        };
        let url = reqwest::Url::parse(stream_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("not an http(s) URL"));
        }
        if url.scheme() == "http" && self.config.base_url.starts_with("https:") {
            return Err(invalid("plain http from an https API: the credentials would travel unencrypted"));
        }
        let base = stream_url
            .rfind("/api/trace/job/")
            .map(|at| &stream_url[..at])
            .ok_or_else(|| invalid("not the URL of a job's stream"))?;
        let mut config = (*self.config).clone();
        config.stream_url = Some(check_url("stream URL", base)?);
        Ok(Client { http: self.http.clone(), config: Arc::new(config) })
    }

    /// Sends a request built by `make` (called again for each retry), with the configured
    /// credentials added last; waits and retries on 429; an error status becomes
    /// [`ClientError::Http`] ([`ClientError::Unauthorized`] when the credentials were refused).
    async fn send(
        &self,
        url: &str,
        timeout: Option<Duration>,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut retries = 0;
        loop {
            let mut builder = make(&self.http);
            if let Some(t) = timeout {
                builder = builder.timeout(t);
            }
            let transport = |source| ClientError::Transport { url: url.to_owned(), source };
            let mut request = builder.build().map_err(transport)?;
            self.config.auth.authorize(&mut request).await?;
            let response = self.http.execute(request).await.map_err(transport)?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let header = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let body: ErrorBody = response.json().await.unwrap_or_default();
                let in_body = body.details.get("retry_after_seconds").and_then(serde_json::Value::as_u64);
                let seconds = header.or(in_body).unwrap_or(1);
                let retry_after = Duration::from_secs(seconds);
                if retries >= self.config.rate_limit_retries {
                    return Err(ClientError::RateLimited { retry_after });
                }
                retries += 1;
                tokio::time::sleep(retry_after.min(self.config.max_retry_wait)).await;
                continue;
            }
            if !status.is_success() {
                return Err(http_error(url, response).await);
            }
            return Ok(response);
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        part: Part,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(part, path);
        let response =
            self.send(&url, Some(self.config.request_timeout), |h| h.request(method.clone(), &url)).await?;
        read_json(&url, response).await
    }

    /// `POST /api/trace/events`: the inline result (200) or the job (202).
    pub async fn submit(&self, request: &SubmitRequest) -> Result<Submitted, ClientError> {
        let url = self.url(Part::Submit, "/api/trace/events");
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Config(e.to_string()))?;
        let response = self
            .send(&url, Some(self.config.request_timeout), |h| {
                h.post(&url).header("content-type", "application/json").body(body.clone())
            })
            .await?;
        if response.status() == StatusCode::ACCEPTED {
            Ok(Submitted::Accepted(read_json(&url, response).await?))
        } else {
            Ok(Submitted::Inline(read_json(&url, response).await?))
        }
    }

    /// `GET /api/trace/job/{id}`.
    pub async fn status(&self, job: &JobId) -> Result<JobInfo, ClientError> {
        self.json(Part::Status, Method::GET, &format!("/api/trace/job/{job}")).await
    }

    /// `DELETE /api/trace/job/{id}`: the cancelled job (409 `JOB_NOT_CANCELLABLE` once it has ended).
    pub async fn cancel(&self, job: &JobId) -> Result<JobInfo, ClientError> {
        self.json(Part::Status, Method::DELETE, &format!("/api/trace/job/{job}")).await
    }

    /// `POST /api/trace/job/{id}/retry`: the failed job queued again (409 `JOB_NOT_RETRYABLE` unless
    /// it failed).
    pub async fn retry(&self, job: &JobId) -> Result<JobInfo, ClientError> {
        self.json(Part::Status, Method::POST, &format!("/api/trace/job/{job}/retry")).await
    }

    /// `GET /api/trace/admin/dlq`: the messages of both dead-letter queues (administrators only: 403
    /// `ADMIN_ONLY` otherwise).
    pub async fn dlq_list(&self) -> Result<trace_core::api::DeadLetters, ClientError> {
        self.json(Part::Status, Method::GET, "/api/trace/admin/dlq").await
    }

    /// `POST /api/trace/admin/dlq/redrive`: every dead-lettered message back to its queue
    /// (administrators only).
    pub async fn dlq_redrive(&self) -> Result<trace_core::api::Redriven, ClientError> {
        self.json(Part::Status, Method::POST, "/api/trace/admin/dlq/redrive").await
    }

    /// `GET /api/trace/jobs?status=&limit=`: the newest jobs first (limit 1–200, server default 20).
    pub async fn jobs(&self, status: Option<JobStatus>, limit: Option<u32>) -> Result<JobList, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = status {
            query.push(format!("status={s}"));
        }
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        let path = if query.is_empty() {
            "/api/trace/jobs".to_owned()
        } else {
            format!("/api/trace/jobs?{}", query.join("&"))
        };
        self.json(Part::Status, Method::GET, &path).await
    }

    /// `GET /api/trace/job/{id}/result?domain=&offset=&limit=`: one page (`domain` None = the job's
    /// first domain; `limit` 1–5000).
    pub async fn page(
        &self,
        job: &JobId,
        domain: Option<Domain>,
        offset: u64,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let mut path = format!("/api/trace/job/{job}/result?offset={offset}&limit={limit}");
        if let Some(d) = domain {
            path.push_str(&format!("&domain={d}"));
        }
        let url = self.url(Part::Stream, &path);
        let response = self.send(&url, Some(self.config.request_timeout), |h| h.get(&url)).await?;
        let body =
            response.bytes().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        Page::parse(&body).map_err(|e| ClientError::InvalidResponse { url, reason: e.to_string() })
    }

    /// Polls the job every [`ClientConfig::poll_interval`] until it ends, calling `progress` with each
    /// status; [`wait_with`](Self::wait_with) with the configured interval and timeout.
    pub async fn wait(&self, job: &JobId, progress: impl FnMut(&JobInfo)) -> Result<JobInfo, ClientError> {
        self.wait_with(job, self.config.poll_interval, self.config.wait_timeout, progress).await
    }

    /// Polls the job every `interval` until it is `finished` (its status), `failed`
    /// ([`ClientError::JobFailed`] with the job's code) or `cancelled` ([`ClientError::JobCancelled`]),
    /// or `timeout` has passed ([`ClientError::PollTimeout`]). `progress` sees every status read. Up to
    /// three polls in a row that fail in transit or with a 5xx are tolerated.
    pub async fn wait_with(
        &self,
        job: &JobId,
        interval: Duration,
        timeout: Duration,
        mut progress: impl FnMut(&JobInfo),
    ) -> Result<JobInfo, ClientError> {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            let info = match self.status(job).await {
                Ok(info) => info,
                // A lost poll (connection, 5xx) is tried again at the next interval, up to 3 in a row.
                Err(ClientError::Transport { .. } | ClientError::Http { status: 500.., .. })
                    if failures < 3 && started.elapsed() + interval < timeout =>
                {
                    failures += 1;
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            progress(&info);
            match info.status {
                JobStatus::Finished => return Ok(info),
                JobStatus::Failed => {
                    let code = info.error_code.clone().unwrap_or_else(|| "JOB_FAILED".to_owned());
                    let message =
                        info.error.clone().unwrap_or_else(|| "the job failed without an error".to_owned());
                    return Err(ClientError::JobFailed { job_id: info.job_id, code, message });
                }
                JobStatus::Cancelled => return Err(ClientError::JobCancelled { job_id: info.job_id }),
                JobStatus::Queued | JobStatus::Started => {}
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(ClientError::PollTimeout { job_id: *job, waited, last_status: info.status });
            }
            tokio::time::sleep(interval.min(timeout - waited)).await;
        }
    }

    /// The job's NDJSON stream as typed lines, as they arrive; resumes from result pages when the
    /// connection breaks (see [`stream`]).
    pub fn stream(&self, job: &JobId) -> LineStream {
        stream::open(self.clone(), *job, false, Box::new(|_: &Resume| {}))
    }

    /// [`stream`](Self::stream), calling `on_resume` each time the stream is resumed.
    pub fn stream_with(&self, job: &JobId, on_resume: impl FnMut(&Resume) + Send + 'static) -> LineStream {
        stream::open(self.clone(), *job, false, Box::new(on_resume))
    }

    /// A queued or running job's lines as its records are stored (`GET …/stream?follow=true`), ending
    /// with `complete` when the job finishes: the finished job's stream, line for line. A broken
    /// connection, or the server's `FOLLOW_TIME_LIMIT`, opens it again and skips the lines already
    /// delivered. The `meta` line comes with the next one (a job failing before its first domain
    /// delivers none); a job that fails or is cancelled ends it with [`ClientError::StreamError`].
    pub fn follow(&self, job: &JobId, on_resume: impl FnMut(&Resume) + Send + 'static) -> LineStream {
        stream::open(self.clone(), *job, true, Box::new(on_resume))
    }

    /// Opens the raw stream, followed or not (no retry beyond 429).
    async fn open_stream(&self, job: &JobId, follow: bool) -> Result<Response, ClientError> {
        let query = if follow { "?follow=true" } else { "" };
        let url = self.url(Part::Stream, &format!("/api/trace/job/{job}/stream{query}"));
        self.send(&url, None, |h| h.get(&url).header("accept", "application/x-ndjson")).await
    }
}

async fn read_json<T: DeserializeOwned>(url: &str, response: Response) -> Result<T, ClientError> {
    let body =
        response.bytes().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
    serde_json::from_slice(&body).map_err(|e| ClientError::InvalidResponse {
        url: url.to_owned(),
        reason: format!("{e} (body starts {:?})", String::from_utf8_lossy(&body[..body.len().min(200)])),
    })
}

async fn http_error(url: &str, response: Response) -> ClientError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let ErrorBody { code, message, .. } = ErrorBody::deserialize(&body).unwrap_or_default();
    // 401 is the service refusing the credentials; 403 without the service's error body is an AWS
    // authorizer (IAM, JWT) refusing them (the service itself never answers 403).
    if status == 401 || (status == 403 && code.is_empty()) {
        let message = if message.is_empty() {
            body.get("message")
                .or_else(|| body.get("Message"))
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| text.chars().take(200).collect(), str::to_owned)
        } else {
            message
        };
        return ClientError::Unauthorized { status, url: url.to_owned(), message };
    }
    let code = if code.is_empty() { format!("HTTP_{status}") } else { code };
    let message = if message.is_empty() {
        format!("{url}: {}", text.chars().take(200).collect::<String>())
    } else {
        message
    };
    ClientError::Http { status, code, message, body: Box::new(body) }
}
