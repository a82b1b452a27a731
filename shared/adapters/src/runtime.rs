//! Process start-up shared by every binary: configuration, logging, and the backends chosen from the
//! configuration (real services where their variables are set, local stand-ins otherwise), one
//! implementation of each port of [`Backends`].

use std::sync::Arc;

use async_trait::async_trait;
pub use trace_core::config::in_lambda;
use trace_core::config::{redact_url, Config, ConfigError};
pub use trace_core::ports::Backends;
use trace_core::ports::{
    BackendError, BackfillMarkers, ChangedIds, ChunkStore, EventSource, JobQueue, JobStore, RateLimiter,
};
use trace_core::QueueKind;

use crate::jobs::{memory::MemoryJobStore, redis::RedisJobStore};
use crate::markers::{memory::MemoryMarkers, redis::RedisMarkers};
use crate::queue::{memory::MemoryQueue, sqs::SqsQueue};
use crate::ratelimit::{memory::MemoryRateLimiter, redis::RedisRateLimiter};
use crate::redis_connection;
use crate::source::changed::{DatasetChangedIds, PgChangedIds};
use crate::source::{embedded::DatasetSource, postgres};
use crate::store::{fs::FsStore, s3::S3Store};

/// Reads the configuration; on a bad value prints one line naming the variable and exits with 2.
pub fn config_or_exit(binary: &str) -> Config {
    match Config::from_env() {
        Ok(config) => config,
        Err(ConfigError { var, value, expected }) => {
            let value = redact_url(&value);
            eprintln!("{binary}: invalid configuration: {var}={value:?}: expected {expected}");
            std::process::exit(2);
        }
    }
}

/// Installs the `tracing` subscriber: JSON lines with Powertools' keys in Lambda (its `LoggingConfig`)
/// or with `LOG_FORMAT=json`, human text elsewhere; levels from `RUST_LOG`, else Lambda's
/// `AWS_LAMBDA_LOG_LEVEL`, else `info` ([`crate::logging`]).
pub use crate::logging::init_logging;

/// Builds [`Backends`] from the configuration: what it names is connected, local stand-ins replace
/// the rest.
#[async_trait]
pub trait BackendsFromConfig: Sized {
    /// Connects what the configuration names; local stand-ins for what it does not. The chosen
    /// backends are logged once.
    async fn from_config(config: &Config) -> Result<Self, BackendError>;
}

#[async_trait]
impl BackendsFromConfig for Backends {
    async fn from_config(config: &Config) -> Result<Self, BackendError> {
        let with_secret;
        let config = match (&config.database_url, &config.database_secret_arn) {
            (None, Some(id)) => {
                with_secret = Config {
                    database_url: Some(database_url_from_secret(config, id).await?),
                    ..config.clone()
                };
                &with_secret
            }
            _ => config,
        };
        let AwsBackends { heavy, light, heavy_dlq, light_dlq, store } = aws_backends(config).await;
        let redis = redis_backends(config).await?;
        let (source, changes) = database_backends(config).await?;
        tracing::info!(
            queues = if config.heavy_queue_url.is_some() { "sqs" } else { "in-process" },
            store = if config.bucket.is_some() { "s3" } else { "local-dir" },
            jobs = if config.redis_url.is_some() { "redis" } else { "in-memory" },
            source = if config.database_url.is_some() { "postgres" } else { "embedded-dataset" },
            "backends ready"
        );
        Ok(Backends {
            heavy,
            light,
            heavy_dlq,
            light_dlq,
            store,
            jobs: redis.jobs,
            source,
            limiter: redis.limiter,
            submit_limiter: redis.submit_limiter,
            markers: redis.markers,
            changes,
        })
    }
}

/// The database URL from the secret `id` (`DATABASE_SECRET_ARN`), read from Secrets Manager once, before
/// the pool is made. Logged by id only.
async fn database_url_from_secret(config: &Config, id: &str) -> Result<String, BackendError> {
    let sdk = crate::aws::sdk_config_with(config.aws_endpoint_url.as_deref(), &config.timeouts).await;
    let url = crate::secrets::read_database_url(&crate::secrets::SecretsManager::from_sdk(&sdk), id).await?;
    tracing::info!(secret = id, "database URL read from DATABASE_SECRET_ARN");
    Ok(url)
}

/// The queues, their dead-letter queues and the chunk store.
struct AwsBackends {
    heavy: Arc<dyn JobQueue>,
    light: Arc<dyn JobQueue>,
    heavy_dlq: Option<Arc<dyn JobQueue>>,
    light_dlq: Option<Arc<dyn JobQueue>>,
    store: Arc<dyn ChunkStore>,
}

/// The queues (heavy, light) and the chunk store: SQS and S3 when configured. An in-process queue has
/// an in-process dead-letter queue after `TRACE_MAX_RECEIVE_COUNT` receives, as SQS's redrive policy.
async fn aws_backends(config: &Config) -> AwsBackends {
    let needs_aws =
        config.heavy_queue_url.is_some() || config.light_queue_url.is_some() || config.bucket.is_some();
    let sdk = if needs_aws {
        Some(crate::aws::sdk_config_with(config.aws_endpoint_url.as_deref(), &config.timeouts).await)
    } else {
        None
    };
    let sqs = |url: &str, sdk: &aws_config::SdkConfig| -> Arc<dyn JobQueue> {
        Arc::new(SqsQueue::new(crate::aws::sqs_client(sdk), url))
    };
    let queue = |kind: QueueKind| -> (Arc<dyn JobQueue>, Option<Arc<dyn JobQueue>>) {
        match (config.queue_url(kind), &sdk) {
            (Some(url), Some(sdk)) => (sqs(url, sdk), config.dlq_url(kind).map(|dlq| sqs(dlq, sdk))),
            _ => {
                let dlq = MemoryQueue::new();
                let main = MemoryQueue::with_dead_letter(dlq.clone(), config.max_receive_count);
                (Arc::new(main), Some(Arc::new(dlq)))
            }
        }
    };
    let store: Arc<dyn ChunkStore> = match (&config.bucket, &sdk) {
        (Some(bucket), Some(sdk)) => Arc::new(S3Store::new(crate::aws::s3_client(sdk), bucket)),
        _ => Arc::new(FsStore::new(&config.local_dir)),
    };
    let ((heavy, heavy_dlq), (light, light_dlq)) = (queue(QueueKind::Heavy), queue(QueueKind::Light));
    AwsBackends { heavy, light, heavy_dlq, light_dlq, store }
}

/// What lives in Redis when it is configured.
struct RedisBackends {
    jobs: Arc<dyn JobStore>,
    limiter: Arc<dyn RateLimiter>,
    submit_limiter: Arc<dyn RateLimiter>,
    markers: Arc<dyn BackfillMarkers>,
}

/// The job store, rate limiter and backfill markers: over one Redis connection when Redis is
/// configured (so every instance shares them), in this process otherwise.
async fn redis_backends(config: &Config) -> Result<RedisBackends, BackendError> {
    let (limit, window) = (config.rate_limit_requests, config.rate_limit_window);
    let (submits, submit_window) = (config.submit_rate_limit_requests, config.submit_rate_limit_window);
    let Some(options) = redis_connection::RedisOptions::from_config(config) else {
        return Ok(RedisBackends {
            jobs: Arc::new(MemoryJobStore::new()),
            limiter: Arc::new(MemoryRateLimiter::new(limit, window)),
            submit_limiter: Arc::new(MemoryRateLimiter::new(submits, submit_window)),
            markers: Arc::new(MemoryMarkers::new()),
        });
    };
    let conn = redis_connection::connect_with(&options).await?;
    tracing::info!(tls = options.tls(), cluster = options.cluster, "redis connected");
    let prefix = &config.redis_key_prefix;
    Ok(RedisBackends {
        jobs: Arc::new(RedisJobStore::from_connection(conn.clone(), prefix)),
        limiter: Arc::new(RedisRateLimiter::new(conn.clone(), prefix, "reads", limit, window)),
        submit_limiter: Arc::new(RedisRateLimiter::new(
            conn.clone(),
            prefix,
            "submits",
            submits,
            submit_window,
        )),
        markers: Arc::new(RedisMarkers::new(conn, prefix)),
    })
}

/// The event source and the changed ids, over one database.
type DatabaseBackends = (Arc<dyn EventSource>, Arc<dyn ChangedIds>);

/// The event source and the changed ids: PostgreSQL (one pool) when configured, the embedded
/// dataset otherwise. The pool connects once here, so that a refused certificate stops start-up.
async fn database_backends(config: &Config) -> Result<DatabaseBackends, BackendError> {
    Ok(match &config.database_url {
        Some(url) => {
            let tls = postgres::PgTlsOptions::from_config(config);
            let pool = postgres::pool_bounded(url, config.db_pool_size, &tls, &config.timeouts)?;
            postgres::check(&pool, url, &tls).await?;
            let (sslmode, _) = postgres::sslmode(url, &tls)?;
            tracing::info!(sslmode = sslmode.as_str(), "database pool ready");
            let changes = Arc::new(PgChangedIds::new(pool.clone()));
            (Arc::new(postgres::PgSource::new(pool, config.fetch_size, config.id_batch_size)), changes)
        }
        None => (Arc::new(DatasetSource::new(config.fetch_size)), Arc::new(DatasetChangedIds)),
    })
}
