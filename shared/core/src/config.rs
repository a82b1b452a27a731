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

/// Every variable the system reads.
pub const VARIABLES: &[Variable] = &[
    var("TRACE_EVENTS_CID_LIMIT", "50000", "Most unique container ids a non-MSD request may have (413 CID_LIMIT_EXCEEDED above; MSD bypasses it).", "submit, backfill"),
    var("TRACE_ASYNC_CID_THRESHOLD", "20000", "Requests with more ids than this become async jobs (202); at or below they run inline.", "submit"),
    var("TRACE_HEAVY_CID_THRESHOLD", "40000", "Jobs with more ids than this, and every MSD job, go to the heavy queue; others to the light one.", "submit, backfill"),
    var("TRACE_MAX_BODY_BYTES", "8388608", "Largest request body accepted (413 PAYLOAD_TOO_LARGE above).", "submit"),
    var("TRACE_INLINE_MAX_BYTES", "5800000", "Byte budget of an inline answer; a larger answer turns the request into a job (202).", "submit"),
    var("TRACE_STREAM_BATCH_SIZE", "5000", "Records per result chunk (and per `records` line of the stream).", "submit, worker"),
    var("TRACE_CHUNK_ENCODING", "lz4", "How result chunks are stored: lz4 (an LZ4 block of the NDJSON, about 5× smaller) or plain (the NDJSON as is). Readers handle both.", "worker"),
    var("DB_SLOW_FETCHMANY_SIZE", "5000", "Rows per fetch from the database; a run holds at most three fetches at once (one being read, one waiting, one being written).", "submit, worker"),
    var("TRACE_DB_ID_BATCH_SIZE", "1000", "Container ids per database query (1 to 1000).", "submit, worker"),
    var("TRACE_JOB_TTL_SECONDS", "86400", "How long job metadata and results are kept.", "submit, status, worker, stream, backfill"),
    var("TRACE_JOB_TIMEOUT_SECONDS", "900", "A job running longer than this fails with JOB_TIMEOUT.", "worker"),
    var("TRACE_WORKER_VISIBILITY_SECONDS", "120", "Visibility timeout the worker keeps extending on the message in hand; also the age of a heartbeat after which another worker may take over the job.", "worker"),
    var("TRACE_WORKER_HEARTBEAT_SECONDS", "20", "How often the worker extends the message's visibility and refreshes the job heartbeat.", "worker"),
    var("TRACE_MAX_RECEIVE_COUNT", "3", "Deliveries of a message before it moves to the dead-letter queue (the queues' redrive policy); the worker marks the job failed on the last one.", "worker, bootstrap"),
    var("TRACE_WORKER_QUEUE", "light", "Which queue a worker process polls: heavy or light.", "worker"),
    var("TRACE_RATE_LIMIT_REQUESTS", "60", "Requests per window per caller on status, result and stream (429 above).", "status, stream"),
    var("TRACE_RATE_LIMIT_WINDOW_SECONDS", "60", "The rate-limit window.", "status, stream"),
    var("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "15", "Submits per window per caller on POST /api/trace/events (429 above), counted apart from the job reads.", "submit"),
    var("TRACE_SUBMIT_RATE_LIMIT_WINDOW_SECONDS", "60", "The submit rate-limit window.", "submit"),
    var("TRACE_BACKFILL_WINDOW_SECONDS", "3600", "Length of a backfill window: a run covers [end - length, end), end = its scheduled time truncated to a multiple of the length, and queues jobs for the containers with a history row moved out in it.", "backfill"),
    var("TRACE_HEAVY_QUEUE_URL", "", "SQS URL of the heavy queue; unset = an in-process queue (local run).", "submit, worker, backfill"),
    var("TRACE_LIGHT_QUEUE_URL", "", "SQS URL of the light queue; unset = an in-process queue (local run).", "submit, worker, backfill"),
    var("TRACE_BUCKET", "", "S3 bucket for job inputs and results; unset = a folder on disk (TRACE_LOCAL_DIR).", "submit, worker, stream, backfill"),
    var("TRACE_LOCAL_DIR", ".trace-local", "Folder of the on-disk chunk store when TRACE_BUCKET is unset.", "submit, worker, stream, backfill"),
    var("REDIS_URL", "", "Redis for job metadata and rate limits (redis:// or rediss://); unset = in memory (local run).", "submit, status, worker, stream, backfill"),
    var("REDIS_KEY_PREFIX", "trace", "Prefix of every Redis key; the job store's keys carry it as their cluster hash tag (`{trace}:job:{id}:meta`). Letters, digits, '-', '_', '.', ':'.", "submit, status, worker, stream, backfill"),
    var("DATABASE_URL", "", "PostgreSQL with the domain tables (postgres://…); unset = the embedded reference dataset.", "submit, worker, backfill"),
    var("DB_POOL_SIZE", "4", "Database connections per process.", "submit, worker, backfill"),
    var("AWS_ENDPOINT_URL", "", "Endpoint of an SQS/S3-compatible emulator (LocalStack, moto); unset = AWS. Read by the AWS SDK.", "all"),
    var("TRACE_STREAM_RESPONSE", "streaming", "How the stream binary answers in Lambda: streaming (Function URL in RESPONSE_STREAM mode: the NDJSON stream) or buffered (behind the HTTP API: result pages).", "stream"),
    var("TRACE_STREAM_BASE_URL", "", "Base URL of the stream function when it lives on another host (e.g. its Function URL, https://…lambda-url.…on.aws): the 202 answer's stream_url is then absolute; unset = the relative path.", "submit"),
    var("TRACE_HTTP_ADDR", "127.0.0.1:8080", "Listen address of an HTTP function run as a local process.", "submit, status, stream, local"),
    var("LOG_FORMAT", "auto", "Log format: json, text, or auto (json in Lambda, text elsewhere). Levels from RUST_LOG.", "all"),
];

/// A variable with a value it cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What would do.
    pub expected: &'static str,
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
    /// `TRACE_INLINE_MAX_BYTES`.
    pub inline_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("defaults are valid").limits
    }
}

/// Which worker pool a process serves.
use crate::queue::QueueKind;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Admission limits.
    pub limits: Limits,
    /// `TRACE_STREAM_BATCH_SIZE`.
    pub stream_batch_size: usize,
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
    /// `TRACE_MAX_RECEIVE_COUNT`.
    pub max_receive_count: u32,
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
    /// `TRACE_BUCKET`.
    pub bucket: Option<String>,
    /// `TRACE_LOCAL_DIR`.
    pub local_dir: String,
    /// `REDIS_URL`.
    pub redis_url: Option<String>,
    /// `REDIS_KEY_PREFIX`.
    pub redis_key_prefix: String,
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
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
            Err(ConfigError { var: name, value, expected })
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
            &[("lz4", crate::encoding::ChunkEncoding::Lz4), ("plain", crate::encoding::ChunkEncoding::Plain)],
            "lz4 or plain",
        )?;
        let bucket = r.bucket()?;
        let config = Config {
            limits,
            stream_batch_size: r.count("TRACE_STREAM_BATCH_SIZE")?,
            chunk_encoding,
            fetch_size: r.count("DB_SLOW_FETCHMANY_SIZE")?,
            id_batch_size: r.number("TRACE_DB_ID_BATCH_SIZE", 1, 1000, "a whole number from 1 to 1000")?
                as usize,
            job_ttl: r.seconds("TRACE_JOB_TTL_SECONDS")?,
            job_timeout: r.seconds("TRACE_JOB_TIMEOUT_SECONDS")?,
            worker_visibility: r.seconds("TRACE_WORKER_VISIBILITY_SECONDS")?,
            worker_heartbeat: r.seconds("TRACE_WORKER_HEARTBEAT_SECONDS")?,
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
            bucket,
            local_dir: r.text("TRACE_LOCAL_DIR"),
            redis_url: r.optional("REDIS_URL", &["redis://", "rediss://"], "a redis:// or rediss:// URL")?,
            redis_key_prefix: r.key_prefix()?,
            database_url: r.optional(
                "DATABASE_URL",
                &["postgres://", "postgresql://"],
                "a postgres:// URL",
            )?,
            db_pool_size: r.number("DB_POOL_SIZE", 1, 256, "a whole number from 1 to 256")? as usize,
            aws_endpoint_url: r.optional("AWS_ENDPOINT_URL", &["http://", "https://"], url)?,
            stream_responses,
            stream_base_url: r
                .optional("TRACE_STREAM_BASE_URL", &["http://", "https://"], url)?
                .map(|u| u.trim_end_matches('/').to_owned()),
            http_addr,
            log_format,
        };
        config.checked()
    }

    /// The rules between variables: the heartbeat comes before the visibility runs out.
    fn checked(self) -> Result<Self, ConfigError> {
        if self.worker_heartbeat >= self.worker_visibility {
            return Err(ConfigError {
                var: "TRACE_WORKER_HEARTBEAT_SECONDS",
                value: self.worker_heartbeat.as_secs().to_string(),
                expected: "fewer seconds than TRACE_WORKER_VISIBILITY_SECONDS",
            });
        }
        Ok(self)
    }

    /// The SQS URL of a queue, if one is configured.
    pub fn queue_url(&self, kind: QueueKind) -> Option<&str> {
        match kind {
            QueueKind::Heavy => self.heavy_queue_url.as_deref(),
            QueueKind::Light => self.light_queue_url.as_deref(),
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
        assert_eq!(c.chunk_encoding, crate::encoding::ChunkEncoding::Lz4);
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
            ("TRACE_CHUNK_ENCODING", "gzip"),
            ("LOG_FORMAT", "xml"),
            ("TRACE_HTTP_ADDR", "localhost"),
            ("TRACE_STREAM_BASE_URL", "lambda-url.example"),
            ("TRACE_BUCKET", "Bad_Bucket"),
            ("TRACE_JOB_TIMEOUT_SECONDS", "0"),
            ("TRACE_WORKER_HEARTBEAT_SECONDS", "500"),
        ] {
            assert_eq!(with(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
    }

    #[test]
    fn the_stream_base_url_is_optional_and_loses_its_trailing_slash() {
        assert_eq!(with(&[]).unwrap().stream_base_url, None);
        let c = with(&[("TRACE_STREAM_BASE_URL", "https://abc.lambda-url.eu-west-1.on.aws/")]).unwrap();
        assert_eq!(c.stream_base_url.as_deref(), Some("https://abc.lambda-url.eu-west-1.on.aws"));
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
}
