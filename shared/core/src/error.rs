//! The errors a caller can see, each with its HTTP status and stable `code`.
//!
//! Every error answer of every function is built here, by [`TraceError::body`], so no handler invents
//! its own JSON. The codes are the wire contract of the existing dashboard client: never rename them.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::job::JobStatus;

/// An error answered to a caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON of the wrong shape.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// `container_ids` is empty.
    #[error("container_ids must not be empty")]
    EmptyContainerIds,
    /// One id is malformed.
    #[error("container_ids[{index}] is invalid: {reason}")]
    InvalidContainerId {
        /// Position in the request.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A domain name is not known.
    #[error("unknown domain {0:?}; known domains are {known}", known = crate::domain::KNOWN_NAMES)]
    UnknownDomain(String),
    /// A profile name is not known.
    #[error(
        "unknown profile {0:?}; known profiles are query_tool, query_tool_reverse, mid_section_defect (msd)"
    )]
    UnknownProfile(String),
    /// The body is larger than the limit.
    #[error("request body of {bytes} bytes is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size received.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A non-MSD request above `TRACE_EVENTS_CID_LIMIT`.
    #[error("{cid_count} container ids exceed the limit of {limit} for this profile")]
    CidLimitExceeded {
        /// Unique ids in the request.
        cid_count: usize,
        /// The limit.
        limit: usize,
    },
    /// A path or query parameter is invalid.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No job with that id (or it has expired).
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The job has not finished, so it has no result yet.
    #[error("job is {status}: its result is not complete")]
    JobNotComplete {
        /// Current status.
        status: JobStatus,
    },
    /// Cancel of a job that has already ended.
    #[error("job is {status}: only queued or started jobs can be cancelled")]
    JobNotCancellable {
        /// Current status.
        status: JobStatus,
    },
    /// Retry of a job that has not failed.
    #[error("job is {status}: only failed jobs can be retried")]
    JobNotRetryable {
        /// Current status.
        status: JobStatus,
    },
    /// The job finished but its result is gone.
    #[error("the result of job {0} has expired")]
    JobResultExpired(String),
    /// The job's NDJSON stream cannot fit the stream route's byte limit (`TRACE_STREAM_MAX_BYTES`:
    /// Lambda's cap on a streamed answer), not even gzip-compressed when the caller accepts gzip: the
    /// result is read through its chunk URLs instead.
    #[error(
        "the result of job {job_id} is {bytes} bytes of NDJSON, more than the stream can send ({limit} bytes{gzip}): read it through GET /api/trace/job/{job_id}/chunks",
        gzip = if *.gzip_accepted { ", even compressed" } else { "; accepting gzip may help" }
    )]
    ResultTooLargeForStream {
        /// The job.
        job_id: String,
        /// Size of the plain NDJSON stream.
        bytes: u64,
        /// The stream's limit.
        limit: u64,
        /// Whether the caller accepted gzip (so the compressed size was considered too).
        gzip_accepted: bool,
    },
    /// Rate limit hit.
    #[error("too many requests; retry after {retry_after_seconds} s")]
    TooManyRequests {
        /// Seconds until the window resets.
        retry_after_seconds: u64,
    },
    /// No valid credentials: none sent, or they do not check out (the reason is for the caller, and
    /// never repeats a secret).
    #[error("authentication required: {0}")]
    Unauthorized(String),
    /// The rate limiter's store cannot count and `TRACE_RATE_LIMIT_FAIL_OPEN` is false.
    #[error("the rate limiter cannot count requests right now; retry in a few seconds")]
    RateLimitUnavailable,
    /// A backend (queue, store, database) failed.
    #[error("{message}")]
    Unavailable {
        /// What the caller is told: which part failed, in words, never the backend's own text (keys,
        /// SQL, host names), which stays in `source` for the log.
        message: String,
        /// The backend's error, kept (with its own sources) for the log.
        #[source]
        source: Option<Cause>,
    },
    /// No route has that path (or that method).
    #[error("no such route")]
    NoSuchRoute,
    /// A route for the service's administrators only (an admin API key).
    #[error("this route is for administrators only")]
    AdminOnly,
    /// A bug or an unexpected state. The text is for the log; the caller gets [`INTERNAL_MESSAGE`].
    #[error("{0}")]
    Internal(String),
}

/// What a caller is told of an internal error (the details go to the log, under the same request id).
pub const INTERNAL_MESSAGE: &str =
    "the service could not answer this request; if it persists, report its request_id";

impl TraceError {
    /// A backend failure. The caller is told "`{what}` is unavailable; retry later" (`what` names the
    /// part in words, e.g. "the job store"); the log also gets `source` and its chain. `what` is static
    /// text on purpose: no backend message can reach the caller through it.
    pub fn unavailable(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        TraceError::Unavailable {
            message: format!("{what} is unavailable; retry later"),
            source: Some(Cause(Arc::new(source))),
        }
    }

    /// What the caller is told: the error's own words, except for an internal error, whose text is
    /// for the log only.
    pub fn public_message(&self) -> String {
        match self {
            TraceError::Internal(_) => INTERNAL_MESSAGE.to_owned(),
            other => other.to_string(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            TraceError::InvalidJson(_) => "INVALID_JSON",
            TraceError::InvalidRequest(_) => "INVALID_REQUEST",
            TraceError::EmptyContainerIds => "EMPTY_CONTAINER_IDS",
            TraceError::InvalidContainerId { .. } => "INVALID_CONTAINER_ID",
            TraceError::UnknownDomain(_) => "UNKNOWN_DOMAIN",
            TraceError::UnknownProfile(_) => "UNKNOWN_PROFILE",
            TraceError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            TraceError::CidLimitExceeded { .. } => "CID_LIMIT_EXCEEDED",
            TraceError::InvalidParameter { .. } => "INVALID_PARAMETER",
            TraceError::JobNotFound(_) => "JOB_NOT_FOUND",
            TraceError::JobNotComplete { .. } => "JOB_NOT_COMPLETE",
            TraceError::JobNotCancellable { .. } => "JOB_NOT_CANCELLABLE",
            TraceError::JobNotRetryable { .. } => "JOB_NOT_RETRYABLE",
            TraceError::JobResultExpired(_) => "JOB_RESULT_EXPIRED",
            TraceError::ResultTooLargeForStream { .. } => "RESULT_TOO_LARGE_FOR_STREAM",
            TraceError::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            TraceError::Unauthorized(_) => "UNAUTHORIZED",
            TraceError::RateLimitUnavailable => "RATE_LIMIT_UNAVAILABLE",
            TraceError::NoSuchRoute => "NOT_FOUND",
            TraceError::AdminOnly => "ADMIN_ONLY",
            TraceError::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            TraceError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            TraceError::InvalidJson(_)
            | TraceError::InvalidRequest(_)
            | TraceError::EmptyContainerIds
            | TraceError::InvalidContainerId { .. }
            | TraceError::UnknownDomain(_)
            | TraceError::UnknownProfile(_)
            | TraceError::InvalidParameter { .. } => 400,
            TraceError::PayloadTooLarge { .. }
            | TraceError::CidLimitExceeded { .. }
            | TraceError::ResultTooLargeForStream { .. } => 413,
            TraceError::JobNotFound(_) | TraceError::JobResultExpired(_) | TraceError::NoSuchRoute => 404,
            TraceError::JobNotComplete { .. }
            | TraceError::JobNotCancellable { .. }
            | TraceError::JobNotRetryable { .. } => 409,
            TraceError::TooManyRequests { .. } => 429,
            TraceError::Unauthorized(_) => 401,
            TraceError::AdminOnly => 403,
            TraceError::Unavailable { .. } | TraceError::RateLimitUnavailable => 503,
            TraceError::Internal(_) => 500,
        }
    }

    /// The JSON body at the current time: see [`TraceError::body_at`].
    pub fn body(&self) -> Value {
        self.body_at(chrono::Utc::now())
    }

    /// The JSON body of the answer to request `request_id`: [`TraceError::body`] with `request_id` at the
    /// top level and in `meta`, the id under which the details are logged.
    pub fn body_for(&self, request_id: &str) -> Value {
        let mut body = self.body();
        body["request_id"] = json!(request_id);
        body["meta"]["request_id"] = json!(request_id);
        body
    }

    /// The JSON body: `{"code", "message", …}` plus the fields the client reads for some codes, inside
    /// the dashboard's envelope — `"success": false`, `"error": {"code", "message"}` and
    /// `"meta": {"timestamp", "retry_after_seconds"?}` — so both this project's client (top-level
    /// `code`/`message`) and the dashboard's (`error.message`, `error.code`, `meta.retry_after_seconds`)
    /// read it. The message is [`TraceError::public_message`]: a 5xx never carries a backend's text.
    pub fn body_at(&self, now: chrono::DateTime<chrono::Utc>) -> Value {
        let (code, message) = (self.code(), self.public_message());
        let mut meta = json!({ "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) });
        if let TraceError::TooManyRequests { retry_after_seconds } = self {
            meta["retry_after_seconds"] = json!(retry_after_seconds);
        }
        let mut body = json!({
            "success": false,
            "code": code,
            "message": message,
            "error": { "code": code, "message": message },
            "meta": meta,
        });
        let extra = match self {
            TraceError::CidLimitExceeded { cid_count, limit } => {
                json!({ "cid_count": cid_count, "limit": limit })
            }
            TraceError::PayloadTooLarge { bytes, limit } => {
                json!({ "bytes": bytes, "limit": limit })
            }
            TraceError::ResultTooLargeForStream { job_id, bytes, limit, .. } => {
                json!({ "bytes": bytes, "limit": limit, "chunks_url": format!("/api/trace/job/{job_id}/chunks") })
            }
            TraceError::InvalidContainerId { index, .. } => json!({ "index": index }),
            TraceError::JobNotComplete { status }
            | TraceError::JobNotCancellable { status }
            | TraceError::JobNotRetryable { status } => {
                json!({ "status": status })
            }
            TraceError::TooManyRequests { retry_after_seconds } => {
                json!({ "retry_after_seconds": retry_after_seconds })
            }
            TraceError::InvalidParameter { name, .. } => json!({ "parameter": name }),
            _ => Value::Null,
        };
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    }
}

/// The error behind a [`TraceError`], shared so that the error stays cheap to clone. Two causes are
/// equal when they read the same.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl From<crate::profile::UnknownProfile> for TraceError {
    fn from(e: crate::profile::UnknownProfile) -> Self {
        TraceError::UnknownProfile(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_limit_body_is_the_client_contract() {
        let e = TraceError::CidLimitExceeded { cid_count: 60_000, limit: 50_000 };
        assert_eq!(e.http_status(), 413);
        let body = e.body();
        assert_eq!(body["code"], "CID_LIMIT_EXCEEDED");
        assert_eq!(body["cid_count"], 60_000);
        assert_eq!(body["limit"], 50_000);
        assert!(body["message"].as_str().unwrap().contains("60000"));
        assert_eq!(
            (body["success"].as_bool(), body["error"]["code"].as_str()),
            (Some(false), Some("CID_LIMIT_EXCEEDED"))
        );
        assert_eq!(body["error"]["message"], body["message"]);
        assert!(body["meta"]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rate_limit_body_carries_the_wait_where_the_dashboard_reads_it() {
        let body = TraceError::TooManyRequests { retry_after_seconds: 7 }.body();
        assert_eq!(
            (body["retry_after_seconds"].as_u64(), body["meta"]["retry_after_seconds"].as_u64()),
            (Some(7), Some(7))
        );
    }

    #[test]
    fn unavailable_keeps_its_source_for_the_log_and_tells_the_caller_what_failed() {
        let cause =
            std::io::Error::other("redis://default:hunter2@cache:6379: EVALSHA {trace}:job:1:meta timed out");
        let e = TraceError::unavailable("the job store", cause);
        let body = e.body();
        assert_eq!(
            (e.http_status(), body["message"].as_str()),
            (503, Some("the job store is unavailable; retry later"))
        );
        assert!(!body.to_string().contains("EVALSHA") && !body.to_string().contains("hunter2"), "{body}");
        let source = std::error::Error::source(&e).expect("the source is kept");
        assert!(source.to_string().contains("EVALSHA"));
    }

    #[test]
    fn an_internal_error_tells_its_details_to_the_log_only() {
        let e = TraceError::Internal("manifest of 42 is unreadable: expected value at line 1".into());
        let body = e.body_for("req-1");
        assert_eq!((e.http_status(), body["message"].as_str()), (500, Some(INTERNAL_MESSAGE)));
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
        assert!(!body.to_string().contains("manifest"), "{body}");
        assert!(e.to_string().contains("manifest of 42"));
    }

    #[test]
    fn every_error_body_carries_its_request_id_in_the_envelope() {
        let body = TraceError::unavailable("the database", std::io::Error::other("x")).body_for("abc-123");
        assert_eq!(
            (body["request_id"].as_str(), body["meta"]["request_id"].as_str()),
            (Some("abc-123"), Some("abc-123"))
        );
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
        assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
        assert!(body["meta"]["timestamp"].is_string());
    }

    #[test]
    fn a_result_too_large_for_the_stream_names_the_chunks_route() {
        let e = TraceError::ResultTooLargeForStream {
            job_id: "j-1".into(),
            bytes: 808_000_000,
            limit: 199_229_440,
            gzip_accepted: true,
        };
        assert_eq!(e.http_status(), 413);
        let body = e.body();
        assert_eq!(body["code"], "RESULT_TOO_LARGE_FOR_STREAM");
        assert_eq!(body["error"]["code"], "RESULT_TOO_LARGE_FOR_STREAM");
        assert_eq!((body["bytes"].as_u64(), body["limit"].as_u64()), (Some(808_000_000), Some(199_229_440)));
        assert_eq!(body["chunks_url"], "/api/trace/job/j-1/chunks");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("GET /api/trace/job/j-1/chunks") && message.contains("808000000"),
            "{message}"
        );
    }

    #[test]
    fn not_complete_carries_status() {
        let body = TraceError::JobNotComplete { status: JobStatus::Started }.body();
        assert_eq!(body["status"], "started");
        assert_eq!(body["code"], "JOB_NOT_COMPLETE");
    }
}
