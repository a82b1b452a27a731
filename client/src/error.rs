//! The errors of the client, one variant per thing a caller may want to tell apart.

use std::time::Duration;

use trace_core::job::JobStatus;
use trace_core::{Domain, JobId};

/// Everything that can go wrong talking to the trace API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The job ended `failed`; `code` and `message` are the job's `error` (e.g. `SOURCE_ERROR`).
    #[error("job {job_id} failed: {code}: {message}")]
    JobFailed {
        /// The job.
        job_id: JobId,
        /// The job's stable error code.
        code: String,
        /// Its detail.
        message: String,
    },
    /// The job ended `cancelled` while it was awaited.
    #[error("job {job_id} was cancelled")]
    JobCancelled {
        /// The job.
        job_id: JobId,
    },
    /// The job did not reach a terminal status within the wait timeout.
    #[error("job {job_id} still {last_status} after waiting {waited:.1?}")]
    PollTimeout {
        /// The job.
        job_id: JobId,
        /// How long it was awaited.
        waited: Duration,
        /// Its status at the last poll.
        last_status: JobStatus,
    },
    /// The NDJSON stream ended or broke before its `complete` line and could not be resumed.
    #[error(
        "stream interrupted after {after_records} records of {}: {reason}",
        after_domain.map(|d| d.as_str()).unwrap_or("no domain")
    )]
    StreamInterrupted {
        /// The domain whose records were being received (none before the first `domain_start`).
        after_domain: Option<Domain>,
        /// Records of that domain received completely.
        after_records: u64,
        /// What happened.
        reason: String,
    },
    /// A line of the stream is not a valid stream line (or is longer than the line limit).
    #[error("malformed stream line {line_no}: {reason} (line starts {snippet:?})")]
    MalformedLine {
        /// 1-based line number in the stream as received.
        line_no: u64,
        /// Why it was rejected.
        reason: String,
        /// Its first characters.
        snippet: String,
    },
    /// The stream itself reported an `error` line (e.g. a result chunk cannot be read).
    #[error("the stream stopped with {code}: {message}")]
    StreamError {
        /// Stable code (`CHUNK_MISSING`, `CHUNK_CORRUPT`, `STORE_ERROR`, …).
        code: String,
        /// Detail.
        message: String,
    },
    /// A result chunk read through its URL failed on every attempt (or cannot be retried).
    #[error("chunk {index} of {domain} could not be read ({attempts} attempts): {reason}")]
    ChunkFailed {
        /// Its domain.
        domain: Domain,
        /// Its position in the domain.
        index: u64,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// HTTP 429 after the configured number of retries.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// What the server asked to wait (`Retry-After`).
        retry_after: Duration,
    },
    /// The server answered an error status (its `{"code","message"}` body).
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The server's stable code (`JOB_NOT_FOUND`, …; `HTTP_<status>` when the body had none).
        code: String,
        /// The server's message.
        message: String,
        /// The whole error body (extra fields such as `status`, `index`, `limit`).
        body: Box<serde_json::Value>,
    },
    /// The server refused the credentials (401, or 403 from an AWS authorizer): none were given,
    /// or they are wrong, expired or for another service.
    #[error("the server refused the credentials: {message} (HTTP {status} from {url})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The URL.
        url: String,
        /// What the server said.
        message: String,
    },
    /// The request could not be sent or its answer not read (connection, timeout, TLS).
    #[error("request to {url} failed: {}", chain(source))]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer whose body is not what the API documents.
    #[error("unexpected answer from {url}: {reason}")]
    InvalidResponse {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad argument given to the client (e.g. a base URL that is not a URL).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// An error and its causes, `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

impl ClientError {
    /// The server's or the job's stable code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::JobFailed { code, .. }
            | ClientError::Http { code, .. }
            | ClientError::StreamError { code, .. } => Some(code),
            ClientError::RateLimited { .. } => Some("TOO_MANY_REQUESTS"),
            ClientError::Unauthorized { .. } => Some("UNAUTHORIZED"),
            _ => None,
        }
    }
}
