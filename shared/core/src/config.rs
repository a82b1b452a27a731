//! Configuration: every environment variable, its default and meaning, in one table ([`VARIABLES`]),
//! read once at start-up into [`Config`].
//!
//! A bad value stops start-up with one line naming the variable and what it expected
//! ([`ConfigError`]). The README's configuration table is checked against [`VARIABLES`] by a test.

use std::time::Duration;

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// Name.
    pub name: &'static str,
    /// Default when unset or empty (`""`: none).
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// Which functions read it.
    pub read_by: &'static str,
}

const fn var(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
    read_by: &'static str,
) -> Variable {
    Variable { name, default, meaning, read_by }
}

/// The bounded waits of every backend call: no stalled server can hang a request or a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendTimeouts {
    /// Opening a connection (S3/SQS, PostgreSQL, Redis) or taking one from the database pool.
    pub connect: Duration,
    /// One attempt of an S3 or SQS call.
    pub aws_attempt: Duration,
    /// One PostgreSQL statement (query or fetch).
    pub db_statement: Duration,
    /// One Redis reply.
    pub redis_response: Duration,
}

impl Default for BackendTimeouts {
    /// The documented defaults of [`VARIABLES`].
    fn default() -> Self {
        BackendTimeouts {
            connect: Duration::from_secs(5),
            aws_attempt: Duration::from_secs(30),
            db_statement: Duration::from_secs(120),
            redis_response: Duration::from_secs(5),
        }
    }
}

/// Every variable the system reads.
pub const VARIABLES: &[Variable] = &[
    var("TRACE_EVENTS_CID_LIMIT", "50000", "Most unique container ids a non-MSD request may have (413 CID_LIMIT_EXCEEDED above; MSD bypasses it).", "submit, backfill"),
    var("TRACE_ASYNC_CID_THRESHOLD", "20000", "Requests with more ids than this become async jobs (202); at or below they run inline.", "submit"),
    var("TRACE_HEAVY_CID_THRESHOLD", "40000", "Jobs with more ids than this, and every MSD job, go to the heavy queue; others to the light one.", "submit, backfill"),
    var("TRACE_SHARD_MIN_IDS", "25000", "A job with more ids than this is split by submit into shards of contiguous id ranges, at least this many ids each, run by workers in parallel and reduced into one result (identical to a single run's); at or below it one worker runs it whole.", "submit"),
    var("TRACE_MAX_SHARDS", "8", "Most shards of one job (also bounded by its queue's worker concurrency). 1 never splits a job.", "submit"),
    var("TRACE_HEAVY_WORKER_CONCURRENCY", "2", "Most heavy workers at once (the template's HeavyWorkerConcurrency): a heavy job has at most this many shards.", "submit"),
    var("TRACE_LIGHT_WORKER_CONCURRENCY", "4", "Most light workers at once (the template's LightWorkerConcurrency): a light job has at most this many shards.", "submit"),
    var("TRACE_MAX_BODY_BYTES", "8388608", "Largest request body accepted (413 PAYLOAD_TOO_LARGE above).", "submit"),
    var("TRACE_INLINE_MAX_BYTES", "5800000", "Byte budget of an inline answer, counted as Lambda's buffered response carries it (the JSON body as an escaped string: each quote counts twice; the limit is 6,291,556 bytes); a larger answer turns the request into a job (202).", "submit"),
    var("TRACE_INLINE_LAMBDA_CLAMP", "true", "In Lambda, cap TRACE_INLINE_MAX_BYTES at Lambda's buffered limit minus the response envelope (6,291,556 - 4,096 = 6,287,460 bytes), so that a budget set too high turns a large answer into a job instead of an invocation that fails; false keeps the value as configured.", "submit"),
    var("TRACE_STREAM_MAX_BYTES", "auto", "Most bytes the stream route sends (compressed bytes when it compresses). A result that cannot fit is refused before its first byte (413 RESULT_TOO_LARGE_FOR_STREAM, naming GET /api/trace/job/{id}/chunks). auto: in Lambda 199,229,440 (200 MiB streamed limit minus 10 MiB: also under 200,000,000, with room for the prelude and a final error line), 4,715,595 with TRACE_STREAM_RESPONSE=buffered (6,291,556 minus a 4,096-byte envelope, times 3/4 for base64); unlimited in a local process. A number overrides.", "stream"),
    var("TRACE_STREAM_COMPRESSION", "auto", "gzip of the stream route's answer when the caller's Accept-Encoding accepts gzip: gzip (always then), off (never), or auto (gzip in Lambda, off in a local process).", "stream"),
    var("TRACE_STREAM_BATCH_SIZE", "5000", "Most records per `records` line of the stream (a stored chunk is sent as one or more lines).", "stream"),
    var("TRACE_CHUNK_RECORDS", "25000", "Records per stored result chunk: the object size (about 0.6 MB of gzip). Larger chunks mean fewer object writes (the main cost of a job), a page reads one chunk whatever its size.", "worker"),
    var("TRACE_CHUNK_URL_TTL_SECONDS", "900", "How long the chunk URLs of `GET /api/trace/job/{id}/chunks` work (presigned object-store GETs; at most 604800, S3's limit).", "stream"),
    var("TRACE_CHUNK_ENCODING", "gzip", "How result chunks are stored: gzip (stored with Content-Encoding: gzip, so chunk URLs decode in a browser or `curl --compressed`; about 7.6× smaller), lz4 (an LZ4 block, about 4.8×) or plain (the NDJSON as is). Readers handle all three.", "worker"),
    var("DB_SLOW_FETCHMANY_SIZE", "5000", "Rows per fetch from the database; a run holds at most three fetches at once (one being read, one waiting, one being written).", "submit, worker"),
    var("TRACE_DB_ID_BATCH_SIZE", "1000", "Container ids per database query (1 to 1000).", "submit, worker"),
    var("TRACE_JOB_TTL_SECONDS", "86400", "How long job metadata and results are kept.", "submit, status, worker, stream, backfill"),
    var("TRACE_JOB_TIMEOUT_SECONDS", "900", "A job running longer than this fails with JOB_TIMEOUT.", "worker"),
    var("TRACE_WORKER_VISIBILITY_SECONDS", "120", "Visibility timeout the worker keeps extending on the message in hand; also the length of its lease on the job: a job whose lease was last renewed longer ago (less a clock slack of at most 2 s) is taken over by the next delivery.", "worker"),
    var("TRACE_RETRY_WINDOW_SECONDS", "90", "How long a worker keeps retrying a failing backend (database, object store, Redis) within one delivery, with exponential back-off from 1 s to 15 s and jitter, each retry resuming from the last checkpoint; the window starts again when the run makes progress. Past it the message is given back (and on its last delivery the job fails with the backend's code).", "worker"),
    var("TRACE_FOLLOW_SECONDS", "840", "Longest a followed stream (`GET …/stream?follow=true` of a queued or running job) stays open: then it ends with an `error` line `FOLLOW_TIME_LIMIT` and the caller follows again (the lines start over; `trace --follow` skips those it has). 840 s stays under Lambda's 900 s invocation and API Gateway's 15 minutes.", "stream"),
    var("TRACE_CHECKPOINT_SECONDS", "5", "How often a running job writes its checkpoint (the chunks stored so far and where each domain resumes) beside its input; a retry, takeover, shutdown or continuation resumes from the last one. Also written before a run stops early.", "worker"),
    var("TRACE_WORKER_HEARTBEAT_SECONDS", "20", "How often the worker renews its lease on the job (heartbeat_at, with its progress) and then extends the message's visibility.", "worker"),
    var("TRACE_CONNECT_TIMEOUT_SECONDS", "5", "Longest wait to open a connection to S3 or SQS, PostgreSQL or Redis (also for a database connection from the pool).", "all"),
    var("TRACE_AWS_ATTEMPT_TIMEOUT_SECONDS", "30", "Longest one attempt of an S3 or SQS call may take before the SDK retries it (above SQS's 20 s long poll).", "all"),
    var("TRACE_DB_STATEMENT_TIMEOUT_SECONDS", "120", "PostgreSQL statement_timeout of every query and fetch: a stalled or locked read fails (and is retried) instead of hanging.", "submit, worker, backfill"),
    var("TRACE_REDIS_TIMEOUT_SECONDS", "5", "Longest wait for one Redis reply (redis-rs's default of 500 ms aborted runs on a slow reply).", "all"),
    var("TRACE_MAX_RECEIVE_COUNT", "5", "Deliveries of a message before it moves to the dead-letter queue (the queues' redrive policy); the worker marks the job failed on the last one. 5, AWS's advice for Lambda's SQS event sources: a worker that dies (a crash, an out-of-memory kill) spends one delivery, and its takeover resumes from the checkpoint.", "worker, bootstrap"),
    var("TRACE_WORKER_QUEUE", "light", "Which queue a worker process polls: heavy or light.", "worker"),
    var("TRACE_RATE_LIMIT_REQUESTS", "60", "Requests per window per caller on status, result and stream (429 above).", "status, stream"),
    var("TRACE_RATE_LIMIT_WINDOW_SECONDS", "60", "The rate-limit window.", "status, stream"),
    var("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "15", "Submits per window per caller on POST /api/trace/events (429 above), counted apart from the job reads.", "submit"),
    var("TRACE_SUBMIT_RATE_LIMIT_WINDOW_SECONDS", "60", "The submit rate-limit window.", "submit"),
    var("TRACE_AUTH", "", "How callers are authenticated: gateway (the API Gateway / Function URL authorizer's request context: IAM or JWT), keys (the service checks x-api-key, Authorization: Bearer JWTs and SigV4 itself) or open (no authentication; only the embedded local run; refused in Lambda). Unset: gateway in Lambda, keys in a local process, open for trace-local with embedded backends.", "submit, status, stream, local"),
    var("TRACE_API_KEYS", "", "API keys of keys mode: comma-separated name=sha256hex (the SHA-256 of each key, in hex; `trace-bootstrap api-key --name NAME` makes one); the caller is principal key:NAME.", "submit, status, stream, local"),
    var("TRACE_JWT_ISSUER", "", "Keys mode: the issuer (iss) a bearer JWT must carry; with TRACE_JWT_PUBLIC_KEY_FILE turns JWT checking on. The caller is principal jwt:{iss}#{sub}.", "submit, status, stream, local"),
    var("TRACE_JWT_AUDIENCE", "", "Keys mode: the audience (aud) a bearer JWT must carry (required with TRACE_JWT_ISSUER).", "submit, status, stream, local"),
    var("TRACE_JWT_PUBLIC_KEY_FILE", "", "Keys mode: PEM file of the JWT signer's public key (ES256 or RS256).", "submit, status, stream, local"),
    var("TRACE_JWT_TENANT_CLAIM", "", "The JWT claim naming the caller's tenant (keys and gateway modes); unset = no tenant.", "submit, status, stream, local"),
    var("TRACE_SIGV4_CREDENTIALS_FILE", "", "Keys mode: SigV4 credentials the service accepts (a local stand-in for the IAM authorizer): one `principal_arn access_key_id secret_access_key` per line, # comments.", "submit, status, stream, local"),
    var("TRACE_ADMIN_PRINCIPALS", "", "Comma-separated principal ids that see every job (e.g. key:ops, an IAM role ARN).", "submit, status, stream, local"),
    var("TRACE_RATE_LIMIT_FAIL_OPEN", "false", "When the rate limiter's store cannot count: false refuses the request (503 RATE_LIMIT_UNAVAILABLE), true lets it through with a warning.", "submit, status, stream, local"),
    var("TRACE_BACKFILL_WINDOW_SECONDS", "3600", "Length of a backfill window: a run covers [end - length, end), end = its scheduled time truncated to a multiple of the length, and queues jobs for the containers with a history row moved out in it.", "backfill"),
    var("TRACE_HEAVY_QUEUE_URL", "", "SQS URL of the heavy queue; unset = an in-process queue (local run).", "submit, worker, backfill"),
    var("TRACE_LIGHT_QUEUE_URL", "", "SQS URL of the light queue; unset = an in-process queue (local run).", "submit, worker, backfill"),
    var("TRACE_HEAVY_DLQ_URL", "", "SQS URL of the heavy queue's dead-letter queue, for `GET /api/trace/admin/dlq` and its redrive; unset with TRACE_HEAVY_QUEUE_URL set: those routes skip the heavy queue (the local run has in-process ones).", "status"),
    var("TRACE_LIGHT_DLQ_URL", "", "SQS URL of the light queue's dead-letter queue (as TRACE_HEAVY_DLQ_URL).", "status"),
    var("TRACE_BUCKET", "", "S3 bucket for job inputs and results; unset = a folder on disk (TRACE_LOCAL_DIR).", "submit, worker, stream, backfill"),
    var("TRACE_LOCAL_DIR", ".trace-local", "Folder of the on-disk chunk store when TRACE_BUCKET is unset.", "submit, worker, stream, backfill"),
    var("REDIS_URL", "", "Redis for job metadata and rate limits (redis:// or rediss://); unset = in memory (local run).", "submit, status, worker, stream, backfill"),
    var("REDIS_KEY_PREFIX", "trace", "Prefix of every Redis key; the job store's keys carry it as their cluster hash tag (`{trace}:job:{id}:meta`). Letters, digits, '-', '_', '.', ':'.", "submit, status, worker, stream, backfill"),
    var("REDIS_TLS_CA_FILE", "", "PEM bundle of the CAs to trust for a rediss:// REDIS_URL instead of the system roots (ElastiCache's certificates chain to public Amazon roots: leave unset in AWS). Only with rediss://.", "submit, status, worker, stream, backfill"),
    var("REDIS_CLUSTER", "false", "true: talk to REDIS_URL as a Redis Cluster (ElastiCache Serverless is always clustered); false: a single node.", "submit, status, worker, stream, backfill"),
    var("DATABASE_URL", "", "PostgreSQL with the domain tables (postgres://…); unset = the embedded reference dataset (or DATABASE_SECRET_ARN). Not in AWS: its password would be plain text in the function's configuration.", "submit, worker, backfill"),
    var("DATABASE_SSLMODE", "", "TLS to PostgreSQL: disable, require (encrypted, certificate not checked) or verify-full (certificate chained to the roots and naming the host). Unset: the sslmode= of DATABASE_URL, else verify-full in Lambda and disable in a local process.", "submit, worker, backfill"),
    var("DATABASE_CA_FILE", "", "PEM bundle of the CAs to trust for PostgreSQL's certificate (e.g. the RDS global bundle); unset = the system roots.", "submit, worker, backfill"),
    var("DATABASE_SECRET_ARN", "", "Secrets Manager secret (ARN or name) holding the database: a postgres:// URL, or the JSON of an RDS-managed secret (username, password, host, port, dbname). Read once at start-up instead of DATABASE_URL (set one of the two).", "submit, worker, backfill, local"),
    var("DB_POOL_SIZE", "4", "Database connections per process.", "submit, worker, backfill"),
    var("AWS_ENDPOINT_URL", "", "Endpoint of an SQS/S3-compatible emulator (LocalStack, moto); unset = AWS. Read by the AWS SDK.", "all"),
    var("TRACE_STREAM_RESPONSE", "streaming", "How the stream binary answers in Lambda: streaming (Function URL in RESPONSE_STREAM mode: the NDJSON stream) or buffered (behind the HTTP API: result pages).", "stream"),
    var("TRACE_STREAM_BASE_URL", "", "Base URL of the stream function when it lives on another host (e.g. its Function URL, https://…lambda-url.…on.aws): the 202 answer's stream_url is then absolute; unset = the relative path.", "submit"),
    var("TRACE_HTTP_ADDR", "127.0.0.1:8080", "Listen address of an HTTP function run as a local process.", "submit, status, stream, local"),
    var("LOG_FORMAT", "auto", "Log format: json, text, or auto (json in Lambda, text elsewhere). Levels from RUST_LOG.", "all"),
    var("RUST_LOG", "", "Log filter (tracing's EnvFilter syntax, e.g. info or trace_service=debug,info). Unset: in Lambda the level of the function's LoggingConfig (AWS_LAMBDA_LOG_LEVEL, set by Lambda), else info.", "all"),
    var("POWERTOOLS_SERVICE_NAME", "", "The `service` key of every JSON log line. Unset: the Lambda function's name (AWS_LAMBDA_FUNCTION_NAME), else the binary's name.", "all"),
    var("TRACE_METRICS", "auto", "CloudWatch metrics: emf (one Embedded Metric Format line on stdout per job end and per HTTP request), off, or auto (emf in Lambda, off elsewhere).", "all"),
];

/// A variable with a value it cannot use. The value is shown with any password in it replaced
/// ([`redact_url`]): the message goes to logs and terminals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: expected {expected}", value = redact_url(value))]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value (passwords already redacted for the URL variables).
    pub value: String,
    /// What would do.
    pub expected: &'static str,
}

/// Lambda's limit on a buffered answer (and on an event), in bytes, as Lambda counts it.
pub const LAMBDA_BUFFERED_LIMIT_BYTES: usize = 6_291_556;

/// Lambda's limit on a streamed answer: 200 MiB.
pub const LAMBDA_STREAMED_LIMIT_BYTES: u64 = 200 * 1024 * 1024;

/// What the stream keeps free under [`LAMBDA_STREAMED_LIMIT_BYTES`]: 10 MiB, so that the limit also holds
/// if AWS's "200 MB" means 200,000,000 bytes (199,229,440 is 770,560 bytes under it), with room for the
/// prelude of the answer (status and headers, under 1 KiB) and the `error` line that ends a stream
/// which would pass the limit (under 1 KiB).
pub const LAMBDA_STREAM_MARGIN_BYTES: u64 = 10 * 1024 * 1024;

/// Bytes of a buffered Lambda HTTP answer around its body (`statusCode`, `headers`,
/// `multiValueHeaders`, `isBase64Encoded`, `cookies`: a few hundred bytes for this service's headers),
/// generously.
pub const LAMBDA_RESPONSE_ENVELOPE_BYTES: usize = 4_096;

/// The stream route's limit in Lambda when its answers are buffered (`TRACE_STREAM_RESPONSE=buffered`):
/// `lambda_http` sends an NDJSON or gzip body base64-encoded, 4 bytes for every 3.
pub const LAMBDA_BUFFERED_STREAM_LIMIT_BYTES: u64 =
    ((LAMBDA_BUFFERED_LIMIT_BYTES - LAMBDA_RESPONSE_ENVELOPE_BYTES) / 4 * 3) as u64;

/// Whether the stream route may gzip its answer (`TRACE_STREAM_COMPRESSION`, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCompression {
    /// gzip when the caller's `Accept-Encoding` accepts it.
    Gzip,
    /// Never: always the plain NDJSON.
    Off,
}

/// Admission limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `TRACE_EVENTS_CID_LIMIT`.
    pub events_cid_limit: usize,
    /// `TRACE_ASYNC_CID_THRESHOLD`.
    pub async_cid_threshold: usize,
    /// `TRACE_HEAVY_CID_THRESHOLD`.
    pub heavy_cid_threshold: usize,
    /// `TRACE_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `TRACE_SHARD_MIN_IDS`.
    pub shard_min_ids: usize,
    /// `TRACE_MAX_SHARDS`.
    pub max_shards: usize,
    /// `TRACE_HEAVY_WORKER_CONCURRENCY`.
    pub heavy_worker_concurrency: usize,
    /// `TRACE_LIGHT_WORKER_CONCURRENCY`.
    pub light_worker_concurrency: usize,
    /// `TRACE_INLINE_MAX_BYTES`, in Lambda at most [`LAMBDA_BUFFERED_LIMIT_BYTES`] minus
    /// [`LAMBDA_RESPONSE_ENVELOPE_BYTES`] (unless `TRACE_INLINE_LAMBDA_CLAMP=false`).
    pub inline_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("defaults are valid").limits
    }
}

/// Which worker pool a process serves.
use crate::queue::QueueKind;

/// How callers are authenticated (`TRACE_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Trust the API Gateway / Function URL authorizer's request context (never headers).
    Gateway,
    /// The service checks API keys, JWTs and SigV4 signatures itself.
    Keys,
    /// No authentication: every request is the local principal (embedded local run only).
    Open,
}

/// The authentication settings; the files they name are read by the service at start-up.
#[derive(Clone, PartialEq)]
pub struct AuthSettings {
    /// `TRACE_AUTH`.
    pub mode: AuthMode,
    /// Whether `TRACE_AUTH` was unset (so a binary may pick its own default).
    pub mode_defaulted: bool,
    /// `TRACE_API_KEYS`: (name, SHA-256 of the key).
    pub api_keys: Vec<(String, [u8; 32])>,
    /// `TRACE_JWT_ISSUER`.
    pub jwt_issuer: Option<String>,
    /// `TRACE_JWT_AUDIENCE`.
    pub jwt_audience: Option<String>,
    /// `TRACE_JWT_PUBLIC_KEY_FILE`.
    pub jwt_public_key_file: Option<String>,
    /// `TRACE_JWT_TENANT_CLAIM`.
    pub jwt_tenant_claim: Option<String>,
    /// `TRACE_SIGV4_CREDENTIALS_FILE`.
    pub sigv4_credentials_file: Option<String>,
    /// `TRACE_ADMIN_PRINCIPALS`.
    pub admin_principals: Vec<String>,
}

// Key hashes stay out of logs: only the names are shown.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("mode", &self.mode)
            .field("api_keys", &self.api_keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_tenant_claim", &self.jwt_tenant_claim)
            .field("sigv4_credentials_file", &self.sigv4_credentials_file)
            .field("admin_principals", &self.admin_principals)
            .finish()
    }
}

/// The whole configuration. Its `Debug` shows the URLs with their passwords redacted.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Admission limits.
    pub limits: Limits,
    /// `TRACE_STREAM_BATCH_SIZE`.
    pub stream_batch_size: usize,
    /// `TRACE_STREAM_MAX_BYTES`, resolved: the most bytes the stream route sends (None: no limit).
    pub stream_max_bytes: Option<u64>,
    /// `TRACE_STREAM_COMPRESSION`, resolved.
    pub stream_compression: StreamCompression,
    /// `TRACE_CHUNK_RECORDS`.
    pub chunk_records: usize,
    /// `TRACE_CHUNK_URL_TTL_SECONDS`.
    pub chunk_url_ttl: Duration,
    /// `TRACE_CHUNK_ENCODING`.
    pub chunk_encoding: crate::encoding::ChunkEncoding,
    /// `DB_SLOW_FETCHMANY_SIZE`.
    pub fetch_size: usize,
    /// `TRACE_DB_ID_BATCH_SIZE`.
    pub id_batch_size: usize,
    /// `TRACE_JOB_TTL_SECONDS`.
    pub job_ttl: Duration,
    /// `TRACE_JOB_TIMEOUT_SECONDS`.
    pub job_timeout: Duration,
    /// `TRACE_WORKER_VISIBILITY_SECONDS`.
    pub worker_visibility: Duration,
    /// `TRACE_WORKER_HEARTBEAT_SECONDS`.
    pub worker_heartbeat: Duration,
    /// `TRACE_CHECKPOINT_SECONDS`.
    pub checkpoint_every: Duration,
    /// `TRACE_FOLLOW_SECONDS`.
    pub follow_for: Duration,
    /// `TRACE_RETRY_WINDOW_SECONDS`.
    pub retry_window: Duration,
    /// `TRACE_MAX_RECEIVE_COUNT`.
    pub max_receive_count: u32,
    /// `TRACE_CONNECT_TIMEOUT_SECONDS`, `TRACE_AWS_ATTEMPT_TIMEOUT_SECONDS`,
    /// `TRACE_DB_STATEMENT_TIMEOUT_SECONDS`, `TRACE_REDIS_TIMEOUT_SECONDS`.
    pub timeouts: BackendTimeouts,
    /// `TRACE_WORKER_QUEUE`.
    pub worker_queue: QueueKind,
    /// `TRACE_RATE_LIMIT_REQUESTS`.
    pub rate_limit_requests: u64,
    /// `TRACE_RATE_LIMIT_WINDOW_SECONDS`.
    pub rate_limit_window: Duration,
    /// `TRACE_SUBMIT_RATE_LIMIT_REQUESTS`.
    pub submit_rate_limit_requests: u64,
    /// `TRACE_SUBMIT_RATE_LIMIT_WINDOW_SECONDS`.
    pub submit_rate_limit_window: Duration,
    /// `TRACE_BACKFILL_WINDOW_SECONDS`.
    pub backfill_window: Duration,
    /// `TRACE_HEAVY_QUEUE_URL`.
    pub heavy_queue_url: Option<String>,
    /// `TRACE_LIGHT_QUEUE_URL`.
    pub light_queue_url: Option<String>,
    /// `TRACE_HEAVY_DLQ_URL`.
    pub heavy_dlq_url: Option<String>,
    /// `TRACE_LIGHT_DLQ_URL`.
    pub light_dlq_url: Option<String>,
    /// `TRACE_BUCKET`.
    pub bucket: Option<String>,
    /// `TRACE_LOCAL_DIR`.
    pub local_dir: String,
    /// `REDIS_URL`.
    pub redis_url: Option<String>,
    /// `REDIS_KEY_PREFIX`.
    pub redis_key_prefix: String,
    /// `REDIS_TLS_CA_FILE`.
    pub redis_tls_ca_file: Option<String>,
    /// `REDIS_CLUSTER`.
    pub redis_cluster: bool,
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `DATABASE_SSLMODE` when set; unset, the URL's `sslmode=` or the default decides
    /// ([`SslMode::resolve`]).
    pub database_sslmode: Option<SslMode>,
    /// `DATABASE_CA_FILE`.
    pub database_ca_file: Option<String>,
    /// `DATABASE_SECRET_ARN`: where to read the database's URL at start-up when `DATABASE_URL` is unset.
    pub database_secret_arn: Option<String>,
    /// `DB_POOL_SIZE`.
    pub db_pool_size: usize,
    /// `AWS_ENDPOINT_URL`.
    pub aws_endpoint_url: Option<String>,
    /// `TRACE_STREAM_RESPONSE`: whether the stream binary answers Lambda with streamed responses.
    pub stream_responses: bool,
    /// `TRACE_STREAM_BASE_URL`: where the stream lives when not on the submit's host (no trailing `/`).
    pub stream_base_url: Option<String>,
    /// `TRACE_HTTP_ADDR`.
    pub http_addr: std::net::SocketAddr,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Authentication (`TRACE_AUTH` and its variables).
    pub auth: AuthSettings,
    /// `TRACE_RATE_LIMIT_FAIL_OPEN`.
    pub rate_limit_fail_open: bool,
    /// `TRACE_METRICS`.
    pub metrics: MetricsMode,
}

impl std::fmt::Debug for Config {
    /// Every field, the URLs with their passwords redacted. Fields are listed one by one on purpose: a
    /// new field is shown only once someone decides it holds no secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |url: &Option<String>| url.as_deref().map(redact_url);
        f.debug_struct("Config")
            .field("limits", &self.limits)
            .field("stream_batch_size", &self.stream_batch_size)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("stream_compression", &self.stream_compression)
            .field("chunk_records", &self.chunk_records)
            .field("chunk_url_ttl", &self.chunk_url_ttl)
            .field("chunk_encoding", &self.chunk_encoding)
            .field("fetch_size", &self.fetch_size)
            .field("id_batch_size", &self.id_batch_size)
            .field("job_ttl", &self.job_ttl)
            .field("job_timeout", &self.job_timeout)
            .field("worker_visibility", &self.worker_visibility)
            .field("worker_heartbeat", &self.worker_heartbeat)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("follow_for", &self.follow_for)
            .field("retry_window", &self.retry_window)
            .field("max_receive_count", &self.max_receive_count)
            .field("timeouts", &self.timeouts)
            .field("worker_queue", &self.worker_queue)
            .field("rate_limit_requests", &self.rate_limit_requests)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("submit_rate_limit_requests", &self.submit_rate_limit_requests)
            .field("submit_rate_limit_window", &self.submit_rate_limit_window)
            .field("backfill_window", &self.backfill_window)
            .field("heavy_queue_url", &self.heavy_queue_url)
            .field("light_queue_url", &self.light_queue_url)
            .field("heavy_dlq_url", &self.heavy_dlq_url)
            .field("light_dlq_url", &self.light_dlq_url)
            .field("bucket", &self.bucket)
            .field("local_dir", &self.local_dir)
            .field("redis_url", &redacted(&self.redis_url))
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("redis_cluster", &self.redis_cluster)
            .field("database_url", &redacted(&self.database_url))
            .field("database_sslmode", &self.database_sslmode)
            .field("database_ca_file", &self.database_ca_file)
            .field("database_secret_arn", &self.database_secret_arn)
            .field("db_pool_size", &self.db_pool_size)
            .field("aws_endpoint_url", &redacted(&self.aws_endpoint_url))
            .field("stream_responses", &self.stream_responses)
            .field("http_addr", &self.http_addr)
            .field("log_format", &self.log_format)
            .field("auth", &self.auth)
            .field("rate_limit_fail_open", &self.rate_limit_fail_open)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// `text` with the password of every URL in it replaced by `***`: `postgres://user:secret@host/db` →
/// `postgres://user:***@host/db`, and a `password=` parameter (`?password=secret`, `password=secret` in
/// a message) likewise. Text without a password comes back unchanged. For anything that may reach a
/// log line or an error: a URL variable, a backend's error message.
///
/// Biased to hide too much rather than too little: the password of a URL runs from the first `:` after
/// `scheme://` to the *last* `@` of that word, so a password with an unencoded `@` or `/` is still
/// hidden whole.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The word: up to white space or a quote.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(after.len());
        let (word, tail) = after.split_at(end);
        match (word.rfind('@'), word.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&word[..=colon]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
        rest = tail;
    }
    out.push_str(rest);
    redact_password_parameters(&out)
}

/// `password=…` (any case) with its value replaced, up to `&`, white space or a quote.
fn redact_password_parameters(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let value_start = from + found + KEY.len();
        out.push_str(&text[from..value_start]);
        let value_len = text[value_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ';' | ','))
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            out.push_str("***");
        }
        from = value_start + value_len;
    }
    out.push_str(&text[from..]);
    out
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON in Lambda, text elsewhere.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Whether CloudWatch metrics are written (`TRACE_METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsMode {
    /// Embedded Metric Format in Lambda, none elsewhere.
    Auto,
    /// One Embedded Metric Format line per job end and per HTTP request, on stdout.
    Emf,
    /// None.
    Off,
}

impl MetricsMode {
    /// Whether EMF lines are written, `lambda` telling whether the process runs in Lambda.
    pub fn emits(self, lambda: bool) -> bool {
        match self {
            MetricsMode::Auto => lambda,
            MetricsMode::Emf => true,
            MetricsMode::Off => false,
        }
    }
}

/// TLS to PostgreSQL, as libpq's `sslmode` (the three modes that mean something definite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// Encrypted, but any certificate is accepted: protects against eavesdropping, not against an
    /// impostor.
    Require,
    /// Encrypted, the certificate chains to the trusted roots and names the host.
    VerifyFull,
}

impl SslMode {
    /// The modes by name.
    const NAMES: [(&'static str, SslMode); 3] =
        [("disable", SslMode::Disable), ("require", SslMode::Require), ("verify-full", SslMode::VerifyFull)];

    /// What a bad value should have been.
    pub const EXPECTED: &'static str = "disable, require or verify-full";

    /// Parses `disable`, `require` or `verify-full`.
    pub fn parse(value: &str) -> Option<SslMode> {
        Self::NAMES.iter().find(|(name, _)| *name == value).map(|(_, mode)| *mode)
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, mode)| *mode == self).map(|(name, _)| *name).unwrap_or("disable")
    }

    /// The mode in effect: `DATABASE_SSLMODE` (`explicit`) first, then the URL's `sslmode=`, then the
    /// default: `verify-full` in Lambda (RDS refuses plain connections), `disable` in a local process.
    pub fn resolve(explicit: Option<SslMode>, from_url: Option<SslMode>, lambda: bool) -> SslMode {
        explicit.or(from_url).unwrap_or(if lambda { SslMode::VerifyFull } else { SslMode::Disable })
    }
}

/// Splits a `postgres://` URL into the URL without its `sslmode=` parameter (tokio-postgres knows no
/// `verify-full`) and that parameter's value, if any. Other parameters stay as they are.
pub fn split_sslmode(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut mode = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("sslmode=") {
            Some(value) => {
                mode = Some(value.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, mode)
}

/// The 32 bytes of a SHA-256 written as 64 hex digits (either case).
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether this process runs inside AWS Lambda (or `cargo lambda watch`).
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

struct Reader<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The value, or the table's default when unset or empty.
    fn raw(&self, name: &'static str) -> (String, &'static Variable) {
        let spec = VARIABLES
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} is missing from config::VARIABLES"));
        let value = (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| spec.default.to_owned());
        (value, spec)
    }

    fn number(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        let (value, _) = self.raw(name);
        match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError { var: name, value, expected }),
        }
    }

    fn count(&self, name: &'static str) -> Result<usize, ConfigError> {
        Ok(self.number(name, 1, u32::MAX as u64, "a whole number from 1 to 4294967295")? as usize)
    }

    fn seconds(&self, name: &'static str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.number(
            name,
            1,
            31_536_000,
            "seconds, a whole number from 1 to 31536000",
        )?))
    }

    fn optional(
        &self,
        name: &'static str,
        schemes: &[&str],
        expected: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        let (value, _) = self.raw(name);
        if value.is_empty() {
            return Ok(None);
        }
        if schemes.is_empty() || schemes.iter().any(|s| value.starts_with(s)) {
            Ok(Some(value))
        } else {
            Err(ConfigError { var: name, value: redact_url(&value), expected })
        }
    }

    fn text(&self, name: &'static str) -> String {
        self.raw(name).0
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(
        &self,
        name: &'static str,
        options: &[(&str, T)],
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.text(name);
        options.iter().find(|(word, _)| *word == value).map(|(_, v)| *v).ok_or(ConfigError {
            var: name,
            value,
            expected,
        })
    }

    /// A value parsed with its `FromStr`.
    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.text(name);
        value.parse().map_err(|_| ConfigError { var: name, value, expected })
    }

    /// The admission limits.
    fn limits(&self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            events_cid_limit: self.count("TRACE_EVENTS_CID_LIMIT")?,
            async_cid_threshold: self.count("TRACE_ASYNC_CID_THRESHOLD")?,
            heavy_cid_threshold: self.count("TRACE_HEAVY_CID_THRESHOLD")?,
            max_body_bytes: self.count("TRACE_MAX_BODY_BYTES")?,
            shard_min_ids: self.count("TRACE_SHARD_MIN_IDS")?,
            max_shards: self.count("TRACE_MAX_SHARDS")?,
            heavy_worker_concurrency: self.count("TRACE_HEAVY_WORKER_CONCURRENCY")?,
            light_worker_concurrency: self.count("TRACE_LIGHT_WORKER_CONCURRENCY")?,
            inline_max_bytes: self.count("TRACE_INLINE_MAX_BYTES")?,
        })
    }

    /// `REDIS_KEY_PREFIX`: a hash tag must not hold braces (they would end the tag early).
    fn key_prefix(&self) -> Result<String, ConfigError> {
        let value = self.text("REDIS_KEY_PREFIX");
        let ok = !value.is_empty()
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if ok {
            Ok(value)
        } else {
            Err(ConfigError {
                var: "REDIS_KEY_PREFIX",
                value,
                expected: "letters, digits, '-', '_', '.' or ':' (no braces: it is the job keys' hash tag)",
            })
        }
    }

    /// The authentication settings; `open` is refused in Lambda.
    fn auth(&self) -> Result<AuthSettings, ConfigError> {
        let lambda = (self.lookup)("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty());
        let word = self.text("TRACE_AUTH");
        let mode_defaulted = word.is_empty();
        let mode = match word.as_str() {
            "" if lambda => AuthMode::Gateway,
            "" | "keys" => AuthMode::Keys,
            "gateway" => AuthMode::Gateway,
            "open" if lambda => {
                return Err(ConfigError {
                    var: "TRACE_AUTH",
                    value: word,
                    expected: "gateway or keys in Lambda (open is only for the embedded local run)",
                })
            }
            "open" => AuthMode::Open,
            _ => {
                return Err(ConfigError { var: "TRACE_AUTH", value: word, expected: "gateway, keys or open" })
            }
        };
        let optional = |name: &'static str| Some(self.text(name)).filter(|v| !v.is_empty());
        let settings = AuthSettings {
            mode,
            mode_defaulted,
            api_keys: self.api_keys()?,
            jwt_issuer: optional("TRACE_JWT_ISSUER"),
            jwt_audience: optional("TRACE_JWT_AUDIENCE"),
            jwt_public_key_file: optional("TRACE_JWT_PUBLIC_KEY_FILE"),
            jwt_tenant_claim: optional("TRACE_JWT_TENANT_CLAIM"),
            sigv4_credentials_file: optional("TRACE_SIGV4_CREDENTIALS_FILE"),
            admin_principals: self
                .text("TRACE_ADMIN_PRINCIPALS")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        // JWT checking needs all three of issuer, audience and key, or none.
        let jwt = [
            ("TRACE_JWT_ISSUER", &settings.jwt_issuer),
            ("TRACE_JWT_AUDIENCE", &settings.jwt_audience),
            ("TRACE_JWT_PUBLIC_KEY_FILE", &settings.jwt_public_key_file),
        ];
        if jwt.iter().any(|(_, v)| v.is_some()) {
            if let Some((name, _)) = jwt.iter().find(|(_, v)| v.is_none()) {
                return Err(ConfigError {
                    var: name,
                    value: String::new(),
                    expected: "a value: TRACE_JWT_ISSUER, TRACE_JWT_AUDIENCE and TRACE_JWT_PUBLIC_KEY_FILE go together",
                });
            }
        }
        Ok(settings)
    }

    /// `TRACE_API_KEYS`: `name=sha256hex,…`. A bad entry is reported by its name only, never its
    /// value (it might be a key pasted by mistake).
    fn api_keys(&self) -> Result<Vec<(String, [u8; 32])>, ConfigError> {
        let mut keys = Vec::new();
        for entry in self.text("TRACE_API_KEYS").split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, hex) = entry.split_once('=').unwrap_or((entry, ""));
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
            let hash = parse_sha256_hex(hex.trim());
            match (name_ok, hash) {
                (true, Some(hash)) if !keys.iter().any(|(n, _)| n == name) => keys.push((name.to_owned(), hash)),
                _ => {
                    return Err(ConfigError {
                        var: "TRACE_API_KEYS",
                        value: format!("{}=…", name.chars().take(64).collect::<String>()),
                        expected: "comma-separated name=sha256hex entries: unique names of letters, digits, '-', '_', '.', '@' and the key's SHA-256 as 64 hex digits",
                    })
                }
            }
        }
        Ok(keys)
    }

    /// `TRACE_BUCKET`: unset, or a valid S3 bucket name.
    fn bucket(&self) -> Result<Option<String>, ConfigError> {
        let bucket = self.optional("TRACE_BUCKET", &[], "")?;
        if let Some(b) = &bucket {
            let ok = (3..=63).contains(&b.len())
                && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(ConfigError {
                    var: "TRACE_BUCKET",
                    value: b.clone(),
                    expected: "an S3 bucket name: 3 to 63 lower-case letters, digits, '-' or '.'",
                });
            }
        }
        Ok(bucket)
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader { lookup };
        let url = "an http:// or https:// URL";
        let limits = r.limits()?;
        let worker_queue = r.choice(
            "TRACE_WORKER_QUEUE",
            &[("heavy", QueueKind::Heavy), ("light", QueueKind::Light)],
            "heavy or light",
        )?;
        let log_format = r.choice(
            "LOG_FORMAT",
            &[("auto", LogFormat::Auto), ("json", LogFormat::Json), ("text", LogFormat::Text)],
            "json, text or auto",
        )?;
        let http_addr = r.parsed("TRACE_HTTP_ADDR", "a socket address like 127.0.0.1:8080")?;
        let stream_responses = r.choice(
            "TRACE_STREAM_RESPONSE",
            &[("streaming", true), ("buffered", false)],
            "streaming or buffered",
        )?;
        let chunk_encoding = r.choice(
            "TRACE_CHUNK_ENCODING",
            &[
                ("gzip", crate::encoding::ChunkEncoding::Gzip),
                ("lz4", crate::encoding::ChunkEncoding::Lz4),
                ("plain", crate::encoding::ChunkEncoding::Plain),
            ],
            "gzip, lz4 or plain",
        )?;
        let bucket = r.bucket()?;
        let auth = r.auth()?;
        let rate_limit_fail_open =
            r.choice("TRACE_RATE_LIMIT_FAIL_OPEN", &[("false", false), ("true", true)], "true or false")?;
        let metrics = r.choice(
            "TRACE_METRICS",
            &[("auto", MetricsMode::Auto), ("emf", MetricsMode::Emf), ("off", MetricsMode::Off)],
            "emf, off or auto",
        )?;
        let lambda = (r.lookup)("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.trim().is_empty());
        let mut limits = limits;
        let clamp =
            r.choice("TRACE_INLINE_LAMBDA_CLAMP", &[("true", true), ("false", false)], "true or false")?;
        if lambda && clamp {
            limits.inline_max_bytes =
                limits.inline_max_bytes.min(LAMBDA_BUFFERED_LIMIT_BYTES - LAMBDA_RESPONSE_ENVELOPE_BYTES);
        }
        let stream_max_bytes = match r.text("TRACE_STREAM_MAX_BYTES").as_str() {
            "auto" if !lambda => None,
            "auto" if stream_responses => Some(LAMBDA_STREAMED_LIMIT_BYTES - LAMBDA_STREAM_MARGIN_BYTES),
            "auto" => Some(LAMBDA_BUFFERED_STREAM_LIMIT_BYTES),
            _ => Some(r.number("TRACE_STREAM_MAX_BYTES", 1, u64::MAX, "auto or a number of bytes from 1")?),
        };
        let stream_compression = match r.choice(
            "TRACE_STREAM_COMPRESSION",
            &[("auto", None), ("gzip", Some(StreamCompression::Gzip)), ("off", Some(StreamCompression::Off))],
            "auto, gzip or off",
        )? {
            Some(chosen) => chosen,
            None if lambda => StreamCompression::Gzip,
            None => StreamCompression::Off,
        };
        let config = Config {
            limits,
            stream_batch_size: r.count("TRACE_STREAM_BATCH_SIZE")?,
            stream_max_bytes,
            stream_compression,
            chunk_records: r.count("TRACE_CHUNK_RECORDS")?,
            chunk_url_ttl: Duration::from_secs(r.number(
                "TRACE_CHUNK_URL_TTL_SECONDS",
                1,
                604_800,
                "a whole number of seconds from 1 to 604800",
            )?),
            chunk_encoding,
            fetch_size: r.count("DB_SLOW_FETCHMANY_SIZE")?,
            id_batch_size: r.number("TRACE_DB_ID_BATCH_SIZE", 1, 1000, "a whole number from 1 to 1000")?
                as usize,
            job_ttl: r.seconds("TRACE_JOB_TTL_SECONDS")?,
            job_timeout: r.seconds("TRACE_JOB_TIMEOUT_SECONDS")?,
            worker_visibility: r.seconds("TRACE_WORKER_VISIBILITY_SECONDS")?,
            worker_heartbeat: r.seconds("TRACE_WORKER_HEARTBEAT_SECONDS")?,
            checkpoint_every: r.seconds("TRACE_CHECKPOINT_SECONDS")?,
            follow_for: r.seconds("TRACE_FOLLOW_SECONDS")?,
            retry_window: r.seconds("TRACE_RETRY_WINDOW_SECONDS")?,
            timeouts: BackendTimeouts {
                connect: r.seconds("TRACE_CONNECT_TIMEOUT_SECONDS")?,
                aws_attempt: r.seconds("TRACE_AWS_ATTEMPT_TIMEOUT_SECONDS")?,
                db_statement: r.seconds("TRACE_DB_STATEMENT_TIMEOUT_SECONDS")?,
                redis_response: r.seconds("TRACE_REDIS_TIMEOUT_SECONDS")?,
            },
            max_receive_count: r.number(
                "TRACE_MAX_RECEIVE_COUNT",
                1,
                1000,
                "a whole number from 1 to 1000",
            )? as u32,
            worker_queue,
            rate_limit_requests: r.count("TRACE_RATE_LIMIT_REQUESTS")? as u64,
            rate_limit_window: r.seconds("TRACE_RATE_LIMIT_WINDOW_SECONDS")?,
            submit_rate_limit_requests: r.count("TRACE_SUBMIT_RATE_LIMIT_REQUESTS")? as u64,
            submit_rate_limit_window: r.seconds("TRACE_SUBMIT_RATE_LIMIT_WINDOW_SECONDS")?,
            backfill_window: r.seconds("TRACE_BACKFILL_WINDOW_SECONDS")?,
            heavy_queue_url: r.optional("TRACE_HEAVY_QUEUE_URL", &["http://", "https://"], url)?,
            light_queue_url: r.optional("TRACE_LIGHT_QUEUE_URL", &["http://", "https://"], url)?,
            heavy_dlq_url: r.optional("TRACE_HEAVY_DLQ_URL", &["http://", "https://"], url)?,
            light_dlq_url: r.optional("TRACE_LIGHT_DLQ_URL", &["http://", "https://"], url)?,
            bucket,
            local_dir: r.text("TRACE_LOCAL_DIR"),
            redis_url: r.optional("REDIS_URL", &["redis://", "rediss://"], "a redis:// or rediss:// URL")?,
            redis_key_prefix: r.key_prefix()?,
            redis_tls_ca_file: r.optional("REDIS_TLS_CA_FILE", &[], "")?,
            redis_cluster: r.choice("REDIS_CLUSTER", &[("true", true), ("false", false)], "true or false")?,
            database_url: r.optional(
                "DATABASE_URL",
                &["postgres://", "postgresql://"],
                "a postgres:// URL",
            )?,
            database_sslmode: match r.text("DATABASE_SSLMODE") {
                v if v.is_empty() => None,
                value => Some(SslMode::parse(&value).ok_or(ConfigError {
                    var: "DATABASE_SSLMODE",
                    value,
                    expected: SslMode::EXPECTED,
                })?),
            },
            database_ca_file: r.optional("DATABASE_CA_FILE", &[], "")?,
            database_secret_arn: r.optional("DATABASE_SECRET_ARN", &[], "")?,
            db_pool_size: r.number("DB_POOL_SIZE", 1, 256, "a whole number from 1 to 256")? as usize,
            aws_endpoint_url: r.optional("AWS_ENDPOINT_URL", &["http://", "https://"], url)?,
            stream_responses,
            stream_base_url: r
                .optional("TRACE_STREAM_BASE_URL", &["http://", "https://"], url)?
                .map(|u| u.trim_end_matches('/').to_owned()),
            http_addr,
            log_format,
            auth,
            rate_limit_fail_open,
            metrics,
        };
        config.checked()
    }

    /// The rules between variables: the heartbeat comes before the visibility runs out; a Redis CA
    /// bundle only with a TLS URL (else it would be silently unused); one source of the database.
    fn checked(self) -> Result<Self, ConfigError> {
        if let Some(ca) = &self.redis_tls_ca_file {
            if !self.redis_url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
                return Err(ConfigError {
                    var: "REDIS_TLS_CA_FILE",
                    value: ca.clone(),
                    expected: "to be set only with a rediss:// REDIS_URL",
                });
            }
        }
        if let (Some(_), Some(arn)) = (&self.database_url, &self.database_secret_arn) {
            return Err(ConfigError {
                var: "DATABASE_SECRET_ARN",
                value: arn.clone(),
                expected: "unset when DATABASE_URL is set (the database comes from one of the two)",
            });
        }
        if self.worker_heartbeat >= self.worker_visibility {
            return Err(ConfigError {
                var: "TRACE_WORKER_HEARTBEAT_SECONDS",
                value: self.worker_heartbeat.as_secs().to_string(),
                expected: "fewer seconds than TRACE_WORKER_VISIBILITY_SECONDS",
            });
        }
        Ok(self)
    }

    /// Whether every backend is the embedded stand-in (no queue URL, bucket, Redis or database): the
    /// `trace-local` run that needs nothing installed, and the only one open mode is meant for.
    pub fn backends_embedded(&self) -> bool {
        self.heavy_queue_url.is_none()
            && self.light_queue_url.is_none()
            && self.bucket.is_none()
            && self.redis_url.is_none()
            && self.database_url.is_none()
    }

    /// The SQS URL of a queue, if one is configured.
    pub fn queue_url(&self, kind: QueueKind) -> Option<&str> {
        match kind {
            QueueKind::Heavy => self.heavy_queue_url.as_deref(),
            QueueKind::Light => self.light_queue_url.as_deref(),
        }
    }

    /// `TRACE_HEAVY_DLQ_URL` or `TRACE_LIGHT_DLQ_URL`.
    pub fn dlq_url(&self, kind: QueueKind) -> Option<&str> {
        match kind {
            QueueKind::Heavy => self.heavy_dlq_url.as_deref(),
            QueueKind::Light => self.light_dlq_url.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.limits.events_cid_limit, 50_000);
        assert_eq!(c.limits.async_cid_threshold, 20_000);
        assert_eq!(c.stream_batch_size, 5_000);
        assert_eq!(c.fetch_size, 5_000);
        assert_eq!(c.id_batch_size, 1_000);
        assert_eq!(c.rate_limit_requests, 60);
        assert_eq!((c.submit_rate_limit_requests, c.submit_rate_limit_window.as_secs()), (15, 60));
        assert_eq!(c.redis_url, None);
        assert_eq!(c.worker_queue, QueueKind::Light);
        assert_eq!(c.chunk_records, 25_000);
        assert_eq!(c.chunk_url_ttl, Duration::from_secs(900));
        assert!(
            with(&[("TRACE_CHUNK_URL_TTL_SECONDS", "604801")]).is_err(),
            "S3 presigns for 7 days at most"
        );
        assert_eq!(c.chunk_encoding, crate::encoding::ChunkEncoding::Gzip);
        assert_eq!(
            with(&[("TRACE_CHUNK_ENCODING", "plain")]).unwrap().chunk_encoding,
            crate::encoding::ChunkEncoding::Plain
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_in_one_line() {
        let e = with(&[("TRACE_EVENTS_CID_LIMIT", "lots")]).unwrap_err();
        assert_eq!(e.var, "TRACE_EVENTS_CID_LIMIT");
        let line = e.to_string();
        assert!(line.contains("TRACE_EVENTS_CID_LIMIT=\"lots\""), "{line}");
        assert!(!line.contains('\n'));
        for (var, value) in [
            ("TRACE_DB_ID_BATCH_SIZE", "1001"),
            ("REDIS_URL", "http://x"),
            ("DATABASE_URL", "mysql://x"),
            ("TRACE_WORKER_QUEUE", "medium"),
            ("TRACE_STREAM_RESPONSE", "chunked"),
            ("TRACE_CHUNK_ENCODING", "zstd"),
            ("LOG_FORMAT", "xml"),
            ("TRACE_HTTP_ADDR", "localhost"),
            ("TRACE_STREAM_BASE_URL", "lambda-url.example"),
            ("TRACE_BUCKET", "Bad_Bucket"),
            ("TRACE_JOB_TIMEOUT_SECONDS", "0"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "500"),
            ("REDIS_CLUSTER", "yes"),
            ("DATABASE_SSLMODE", "verify-ca"),
            ("DATABASE_SSLMODE", "prefer"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ] {
            assert_eq!(with(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
    }

    #[test]
    fn redact_url_hides_passwords_only() {
        for (text, expected) in [
            ("postgres://trace:s3cret@db.example:5432/trace", "postgres://trace:***@db.example:5432/trace"),
            ("rediss://default:pa@ss/w0rd@cache:6379/0", "rediss://default:***@cache:6379/0"),
            ("redis://:token@cache:6379", "redis://:***@cache:6379"),
            ("postgres://trace@db/trace", "postgres://trace@db/trace"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "postgres://db/trace?user=u&password=hunter2&sslmode=require",
                "postgres://db/trace?user=u&password=***&sslmode=require",
            ),
            ("not a url", "not a url"),
            ("", ""),
            (
                "error connecting to postgres://u:p4ss@h/db: refused (also redis://x:y@r)",
                "error connecting to postgres://u:***@h/db: refused (also redis://x:***@r)",
            ),
            ("host=db Password=hunter2 user=u", "host=db Password=*** user=u"),
        ] {
            assert_eq!(redact_url(text), expected, "{text}");
        }
    }

    #[test]
    fn a_bad_url_variable_never_shows_its_password() {
        let e = with(&[("DATABASE_URL", "mysql://trace:hunter2@db/trace")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        assert!(!e.value.contains("hunter2") && !e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("mysql://trace:***@db/trace"), "{e}");
        let e = with(&[("REDIS_URL", "http://default:hunter2@cache:6379")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // Even a value built elsewhere is shown redacted.
        let e = ConfigError { var: "X", value: "postgres://a:hunter2@b".into(), expected: "y" };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_of_the_config_redacts_urls() {
        let c = with(&[
            ("DATABASE_URL", "postgres://trace:hunter2@db/trace"),
            ("REDIS_URL", "rediss://default:hunter3@cache:6379"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("postgres://trace:***@db/trace"), "{shown}");
    }

    #[test]
    fn the_database_comes_from_one_place() {
        let c = with(&[(
            "DATABASE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        )])
        .unwrap();
        assert_eq!(
            c.database_secret_arn.as_deref(),
            Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf")
        );
        let both =
            with(&[("DATABASE_URL", "postgres://db/trace"), ("DATABASE_SECRET_ARN", "db")]).unwrap_err();
        assert_eq!(both.var, "DATABASE_SECRET_ARN");
    }

    #[test]
    fn auth_defaults_to_keys_locally_and_gateway_in_lambda_and_open_is_refused_in_lambda() {
        let local = with(&[]).unwrap();
        assert_eq!((local.auth.mode, local.auth.mode_defaulted), (AuthMode::Keys, true));
        assert!(!local.rate_limit_fail_open);
        assert!(local.backends_embedded());
        let lambda = with(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap();
        assert_eq!(lambda.auth.mode, AuthMode::Gateway);
        let refused = with(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"), ("TRACE_AUTH", "open")]);
        assert_eq!(refused.unwrap_err().var, "TRACE_AUTH");
        let open = with(&[("TRACE_AUTH", "open")]).unwrap();
        assert_eq!((open.auth.mode, open.auth.mode_defaulted), (AuthMode::Open, false));
        assert_eq!(with(&[("TRACE_AUTH", "none")]).unwrap_err().var, "TRACE_AUTH");
        assert!(with(&[("TRACE_RATE_LIMIT_FAIL_OPEN", "true")]).unwrap().rate_limit_fail_open);
        assert_eq!(
            with(&[("TRACE_RATE_LIMIT_FAIL_OPEN", "yes")]).unwrap_err().var,
            "TRACE_RATE_LIMIT_FAIL_OPEN"
        );
    }

    #[test]
    fn api_keys_are_names_with_hashes_and_a_bad_entry_is_named_without_its_value() {
        let hash = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let c = with(&[("TRACE_API_KEYS", &format!("alice={hash}, bob={}", hash.to_uppercase()))]).unwrap();
        let names: Vec<_> = c.auth.api_keys.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(c.auth.api_keys[0].1[0], 0x2c);
        let bad_entries = [
            "alice".to_owned(),
            "alice=abc".to_owned(),
            format!("={hash}"),
            format!("a b={hash}"),
            format!("a={hash},a={hash}"),
        ];
        for bad in &bad_entries {
            let e = with(&[("TRACE_API_KEYS", bad)]).unwrap_err();
            assert_eq!(e.var, "TRACE_API_KEYS", "{bad}");
        }
        let e = with(&[("TRACE_API_KEYS", "alice=sk-secret-key")]).unwrap_err();
        assert!(!e.to_string().contains("sk-secret"), "{e}");
        let admins = with(&[("TRACE_ADMIN_PRINCIPALS", "key:ops, arn:aws:iam::1:role/x,")]).unwrap();
        assert_eq!(admins.auth.admin_principals, ["key:ops", "arn:aws:iam::1:role/x"]);
    }

    #[test]
    fn jwt_settings_go_together() {
        let e = with(&[("TRACE_JWT_ISSUER", "https://idp")]).unwrap_err();
        assert_eq!(e.var, "TRACE_JWT_AUDIENCE");
        let c = with(&[
            ("TRACE_JWT_ISSUER", "https://idp"),
            ("TRACE_JWT_AUDIENCE", "trace"),
            ("TRACE_JWT_PUBLIC_KEY_FILE", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(c.auth.jwt_public_key_file.as_deref(), Some("/k.pem"));
    }

    #[test]
    fn the_stream_base_url_is_optional_and_loses_its_trailing_slash() {
        assert_eq!(with(&[]).unwrap().stream_base_url, None);
        let c = with(&[("TRACE_STREAM_BASE_URL", "https://abc.lambda-url.eu-west-1.on.aws/")]).unwrap();
        assert_eq!(c.stream_base_url.as_deref(), Some("https://abc.lambda-url.eu-west-1.on.aws"));
    }

    #[test]
    fn stream_limit_and_compression_resolve_by_where_the_process_runs() {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        let local = with(&[]).unwrap();
        assert_eq!((local.stream_max_bytes, local.stream_compression), (None, StreamCompression::Off));
        let c = with(&[lambda]).unwrap();
        assert_eq!((c.stream_max_bytes, c.stream_compression), (Some(199_229_440), StreamCompression::Gzip));
        assert!(c.stream_max_bytes.unwrap() < 200_000_000, "under 200 MB however AWS counts it");
        let buffered = with(&[lambda, ("TRACE_STREAM_RESPONSE", "buffered")]).unwrap();
        // Base64 of the limit plus the envelope fits Lambda's buffered limit.
        let limit = buffered.stream_max_bytes.unwrap() as usize;
        assert!(limit.div_ceil(3) * 4 + LAMBDA_RESPONSE_ENVELOPE_BYTES <= LAMBDA_BUFFERED_LIMIT_BYTES);
        let set = with(&[lambda, ("TRACE_STREAM_MAX_BYTES", "1000"), ("TRACE_STREAM_COMPRESSION", "off")]);
        let set = set.unwrap();
        assert_eq!((set.stream_max_bytes, set.stream_compression), (Some(1000), StreamCompression::Off));
        let local =
            with(&[("TRACE_STREAM_MAX_BYTES", "5000"), ("TRACE_STREAM_COMPRESSION", "gzip")]).unwrap();
        assert_eq!((local.stream_max_bytes, local.stream_compression), (Some(5000), StreamCompression::Gzip));
        for (var, bad) in [
            ("TRACE_STREAM_MAX_BYTES", "0"),
            ("TRACE_STREAM_MAX_BYTES", "lots"),
            ("TRACE_STREAM_COMPRESSION", "br"),
        ] {
            assert_eq!(with(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
        }
    }

    #[test]
    fn in_lambda_the_inline_budget_is_clamped_to_lambda_s_limit() {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        let too_high = ("TRACE_INLINE_MAX_BYTES", "7000000");
        assert_eq!(with(&[too_high]).unwrap().limits.inline_max_bytes, 7_000_000, "not clamped locally");
        let clamped = with(&[lambda, too_high]).unwrap().limits.inline_max_bytes;
        assert_eq!(clamped, LAMBDA_BUFFERED_LIMIT_BYTES - LAMBDA_RESPONSE_ENVELOPE_BYTES);
        assert_eq!(with(&[lambda]).unwrap().limits.inline_max_bytes, 5_800_000, "the default is under it");
        let unclamped = with(&[lambda, too_high, ("TRACE_INLINE_LAMBDA_CLAMP", "false")]).unwrap();
        assert_eq!(unclamped.limits.inline_max_bytes, 7_000_000);
        assert_eq!(
            with(&[lambda, ("TRACE_INLINE_LAMBDA_CLAMP", "no")]).unwrap_err().var,
            "TRACE_INLINE_LAMBDA_CLAMP"
        );
    }

    #[test]
    fn empty_means_default() {
        assert_eq!(with(&[("TRACE_STREAM_BATCH_SIZE", "  ")]).unwrap().stream_batch_size, 5_000);
    }

    #[test]
    fn every_default_is_valid_and_documented() {
        for v in VARIABLES {
            assert!(!v.meaning.is_empty() && !v.read_by.is_empty(), "{}", v.name);
        }
        let mut names: Vec<_> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len(), "duplicate variable");
    }

    #[test]
    fn tls_and_cluster_variables() {
        let c = with(&[]).unwrap();
        assert_eq!(
            (c.redis_tls_ca_file, c.redis_cluster, c.database_sslmode, c.database_ca_file),
            (None, false, None, None)
        );
        let c = with(&[
            ("REDIS_URL", "rediss://cache:6379"),
            ("REDIS_TLS_CA_FILE", "/etc/ca.pem"),
            ("REDIS_CLUSTER", "true"),
            ("DATABASE_SSLMODE", "verify-full"),
            ("DATABASE_CA_FILE", "/etc/rds.pem"),
        ])
        .unwrap();
        assert_eq!(c.redis_tls_ca_file.as_deref(), Some("/etc/ca.pem"));
        assert!(c.redis_cluster);
        assert_eq!(c.database_sslmode, Some(SslMode::VerifyFull));
        assert_eq!(c.database_ca_file.as_deref(), Some("/etc/rds.pem"));
        assert_eq!(
            with(&[("DATABASE_SSLMODE", "require")]).unwrap().database_sslmode,
            Some(SslMode::Require)
        );
        assert_eq!(
            with(&[("DATABASE_SSLMODE", "disable")]).unwrap().database_sslmode,
            Some(SslMode::Disable)
        );
        // A CA bundle for a plain redis:// URL would be silently unused: refused, naming the variable.
        let e = with(&[("REDIS_URL", "redis://cache:6379"), ("REDIS_TLS_CA_FILE", "/ca.pem")]).unwrap_err();
        assert_eq!(e.var, "REDIS_TLS_CA_FILE");
    }

    #[test]
    fn sslmode_names_round_trip_and_others_are_refused() {
        for name in ["disable", "require", "verify-full"] {
            assert_eq!(SslMode::parse(name).map(SslMode::as_str), Some(name));
        }
        for bad in ["", "prefer", "allow", "verify-ca", "VERIFY-FULL", "true"] {
            assert_eq!(SslMode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sslmode_resolution_order() {
        use SslMode::*;
        // The variable wins over the URL, the URL over the default.
        assert_eq!(SslMode::resolve(Some(Require), Some(Disable), true), Require);
        assert_eq!(SslMode::resolve(None, Some(Require), true), Require);
        assert_eq!(SslMode::resolve(None, Some(Disable), true), Disable);
        // Defaults: verify-full in Lambda, disable in a local process.
        assert_eq!(SslMode::resolve(None, None, true), VerifyFull);
        assert_eq!(SslMode::resolve(None, None, false), Disable);
    }

    #[test]
    fn sslmode_is_split_from_the_url() {
        let cases = [
            ("postgres://u:p@h:5432/db", "postgres://u:p@h:5432/db", None),
            ("postgres://u@h/db?sslmode=verify-full", "postgres://u@h/db", Some("verify-full")),
            (
                "postgres://u@h/db?application_name=x&sslmode=require&connect_timeout=5",
                "postgres://u@h/db?application_name=x&connect_timeout=5",
                Some("require"),
            ),
            ("postgres://u@h/db?connect_timeout=5", "postgres://u@h/db?connect_timeout=5", None),
            ("postgres://u@h/db?sslmode=", "postgres://u@h/db", Some("")),
        ];
        for (url, rest, mode) in cases {
            let (got, got_mode) = split_sslmode(url);
            assert_eq!((got.as_str(), got_mode.as_deref()), (rest, mode), "{url}");
        }
    }

    #[test]
    fn the_backend_timeouts_default_to_their_documented_values() {
        let config = Config::from_lookup(|_| None).expect("defaults");
        assert_eq!(config.timeouts, BackendTimeouts::default());
        let config =
            Config::from_lookup(|name| (name == "TRACE_REDIS_TIMEOUT_SECONDS").then(|| "9".to_owned()))
                .expect("set");
        assert_eq!(config.timeouts.redis_response, Duration::from_secs(9));
        assert!(Config::from_lookup(
            |name| (name == "TRACE_DB_STATEMENT_TIMEOUT_SECONDS").then(|| "0".to_owned())
        )
        .is_err());
    }
}
