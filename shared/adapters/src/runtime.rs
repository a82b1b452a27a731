//! Process start-up shared by every binary: configuration, logging, and the backends chosen from the
//! configuration (real services where their variables are set, local stand-ins otherwise).

use std::sync::Arc;

use trace_core::config::{Config, ConfigError, LogFormat};
use trace_core::ports::{BackendError, ChunkStore, EventSource, JobQueue, JobStore};
use trace_core::QueueKind;

use crate::jobs::{memory::MemoryJobStore, redis::RedisJobStore};
use crate::queue::{memory::MemoryQueue, sqs::SqsQueue};
use crate::source::{embedded::DatasetSource, postgres};
use crate::store::{fs::FsStore, s3::S3Store};

/// Reads the configuration; on a bad value prints one line naming the variable and exits with 2.
pub fn config_or_exit(binary: &str) -> Config {
    match Config::from_env() {
        Ok(config) => config,
        Err(ConfigError { var, value, expected }) => {
            eprintln!("{binary}: invalid configuration: {var}={value:?}: expected {expected}");
            std::process::exit(2);
        }
    }
}

/// Whether this process runs inside AWS Lambda (or `cargo lambda watch`).
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Installs the `tracing` subscriber: JSON lines in Lambda (or `LOG_FORMAT=json`), human text
/// elsewhere; levels from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => in_lambda(),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// The backends a function works with.
#[derive(Clone)]
pub struct Backends {
    /// The heavy queue.
    pub heavy: Arc<dyn JobQueue>,
    /// The light queue.
    pub light: Arc<dyn JobQueue>,
    /// Inputs and results.
    pub store: Arc<dyn ChunkStore>,
    /// Job metadata.
    pub jobs: Arc<dyn JobStore>,
    /// Where events come from.
    pub source: Arc<dyn EventSource>,
    /// The Redis connection, when Redis is configured (shared by the rate limiter).
    pub redis: Option<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").field("redis", &self.redis.is_some()).finish_non_exhaustive()
    }
}

impl Backends {
    /// The queue of a kind.
    pub fn queue(&self, kind: QueueKind) -> &Arc<dyn JobQueue> {
        match kind {
            QueueKind::Heavy => &self.heavy,
            QueueKind::Light => &self.light,
        }
    }

    /// Connects what the configuration names; local stand-ins for what it does not. The chosen
    /// backends are logged once.
    pub async fn from_config(config: &Config) -> Result<Self, BackendError> {
        let needs_aws =
            config.heavy_queue_url.is_some() || config.light_queue_url.is_some() || config.bucket.is_some();
        let sdk = if needs_aws {
            Some(crate::aws::sdk_config(config.aws_endpoint_url.as_deref()).await)
        } else {
            None
        };
        let queue = |kind: QueueKind| -> Arc<dyn JobQueue> {
            match (config.queue_url(kind), &sdk) {
                (Some(url), Some(sdk)) => Arc::new(SqsQueue::new(crate::aws::sqs_client(sdk), url)),
                _ => Arc::new(MemoryQueue::new()),
            }
        };
        let (heavy, light) = (queue(QueueKind::Heavy), queue(QueueKind::Light));
        let store: Arc<dyn ChunkStore> = match (&config.bucket, &sdk) {
            (Some(bucket), Some(sdk)) => Arc::new(S3Store::new(crate::aws::s3_client(sdk), bucket)),
            _ => Arc::new(FsStore::new(&config.local_dir)),
        };
        let (jobs, redis): (Arc<dyn JobStore>, _) = match &config.redis_url {
            Some(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| BackendError::new("redis", "open", e))?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| BackendError::new("redis", "connect", e))?;
                (Arc::new(RedisJobStore::from_connection(conn.clone(), &config.redis_key_prefix)), Some(conn))
            }
            None => (Arc::new(MemoryJobStore::new()), None),
        };
        let source: Arc<dyn EventSource> = match &config.database_url {
            Some(url) => Arc::new(postgres::PgSource::new(
                postgres::pool(url, config.db_pool_size)?,
                config.fetch_size,
                config.id_batch_size,
            )),
            None => Arc::new(DatasetSource::new(config.fetch_size)),
        };
        tracing::info!(
            queues = if config.heavy_queue_url.is_some() { "sqs" } else { "in-process" },
            store = if config.bucket.is_some() { "s3" } else { "local-dir" },
            jobs = if config.redis_url.is_some() { "redis" } else { "in-memory" },
            source = if config.database_url.is_some() { "postgres" } else { "embedded-dataset" },
            "backends ready"
        );
        Ok(Backends { heavy, light, store, jobs, source, redis })
    }
}
