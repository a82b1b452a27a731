//! Support for the integration tests: where the local service stack is, unique resource names, and
//! one contract suite per port (`contract::*`), run against every implementation.
//!
//! The stack is brought up by `infra/test.sh` (or `infra/local-stack.sh up`), which exports
//! `AWS_ENDPOINT_URL`, `REDIS_URL` and `DATABASE_URL`, and for the secure shapes
//! `TRACE_TEST_REDIS_TLS_URL` (TLS only), `TRACE_TEST_REDIS_CLUSTER_URL` (3 masters),
//! `TRACE_TEST_DATABASE_TLS_URL` (`sslmode=verify-full`), `TRACE_TEST_CA_FILE` (their CA) and
//! `TRACE_TEST_OTHER_CA_FILE` (a CA that signed nothing). Tests that need a service and do not find it
//! fail with a message saying so: they never skip silently.

pub mod checks;
pub mod contract;
pub mod database;
pub mod fault_proxy;
pub mod lambda;
pub mod system;
pub mod tcp_proxy;

use std::sync::Arc;
use std::time::Duration;

use trace_adapters::jobs::redis::RedisJobStore;
use trace_adapters::markers::redis::RedisMarkers;
use trace_adapters::queue::sqs::{create_queue_with_dlq, SqsQueue};
use trace_adapters::ratelimit::redis::RedisRateLimiter;
use trace_adapters::redis_connection::{self, RedisConnection, RedisOptions};
use trace_adapters::source::changed::PgChangedIds;
use trace_adapters::source::postgres::{pool, pool_with, PgSource, PgTlsOptions};
use trace_adapters::store::s3::S3Store;
use trace_adapters::{aws, queue};

/// Container ids loaded by `infra/test.sh` into the test database (`trace-bootstrap seed`):
/// `TRACE_TEST_IDS`, default 114,000.
pub fn seeded_ids() -> u64 {
    std::env::var("TRACE_TEST_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(114_000)
}

/// The value of a variable the stack exports; panics with instructions when missing.
pub fn required(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: integration tests need the local service stack. Run `infra/test.sh`, \
             or `infra/local-stack.sh up && eval \"$(infra/local-stack.sh env)\"` before `cargo test`."
        ),
    }
}

/// A short unique name for a test resource.
pub fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The emulator behind `AWS_ENDPOINT_URL` (`localstack` or `moto`), for messages.
pub fn emulator() -> String {
    std::env::var("TRACE_EMULATOR").unwrap_or_else(|_| "unknown".into())
}

/// SDK configuration for the emulator.
pub async fn sdk() -> aws_config::SdkConfig {
    aws::sdk_config(Some(&required("AWS_ENDPOINT_URL"))).await
}

/// A fresh SQS queue (and its DLQ) with a redrive after `max_receive_count` receives.
pub async fn sqs_queue(max_receive_count: u32) -> (SqsQueue, SqsQueue) {
    let client = aws::sqs_client(&sdk().await);
    let (url, dlq) =
        create_queue_with_dlq(&client, &unique("q"), max_receive_count, std::time::Duration::from_secs(30))
            .await
            .expect("create SQS queue");
    (SqsQueue::new(client.clone(), url), SqsQueue::new(client, dlq))
}

/// An in-process queue with a DLQ after `max_receive_count` receives.
pub fn memory_queue(max_receive_count: u32) -> (queue::memory::MemoryQueue, queue::memory::MemoryQueue) {
    let dlq = queue::memory::MemoryQueue::new();
    (queue::memory::MemoryQueue::with_dead_letter(dlq.clone(), max_receive_count), dlq)
}

/// A fresh S3 bucket.
pub async fn s3_store() -> S3Store {
    let store = S3Store::new(aws::s3_client(&sdk().await), unique("bucket"));
    store.ensure_bucket().await.expect("create bucket");
    store
}

/// A Redis job store under a fresh key prefix.
pub async fn redis_store() -> RedisJobStore {
    RedisJobStore::connect(&required("REDIS_URL"), &unique("test")).await.expect("connect to Redis")
}

/// A Redis rate limiter of `limit` requests per `window` under a fresh key prefix.
pub async fn redis_limiter(limit: u64, window: Duration) -> RedisRateLimiter {
    let conn = redis_connection::connect(&required("REDIS_URL")).await.expect("connect to Redis");
    RedisRateLimiter::new(conn, &unique("test"), "reads", limit, window)
}

/// Redis backfill markers under a fresh key prefix.
pub async fn redis_markers() -> RedisMarkers {
    let conn = redis_connection::connect(&required("REDIS_URL")).await.expect("connect to Redis");
    RedisMarkers::new(conn, &unique("test"))
}

/// Which Redis a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisShape {
    /// The single plain Redis (`REDIS_URL`).
    Plain,
    /// The TLS-only Redis, its certificate checked against the stack's CA.
    Tls,
    /// The 3-master Redis Cluster.
    Cluster,
}

impl RedisShape {
    /// How to connect to it.
    pub fn options(self) -> RedisOptions {
        match self {
            RedisShape::Plain => RedisOptions::new(&required("REDIS_URL")),
            RedisShape::Tls => RedisOptions::new(&required("TRACE_TEST_REDIS_TLS_URL"))
                .with_ca_file(&required("TRACE_TEST_CA_FILE")),
            RedisShape::Cluster => {
                RedisOptions::new(&required("TRACE_TEST_REDIS_CLUSTER_URL")).with_cluster(true)
            }
        }
    }

    /// A fresh connection.
    pub async fn connect(self) -> RedisConnection {
        redis_connection::connect_with(&self.options())
            .await
            .unwrap_or_else(|e| panic!("connect to Redis ({self:?}): {e}"))
    }

    /// A job store under a fresh key prefix.
    pub async fn store(self) -> RedisJobStore {
        RedisJobStore::from_connection(self.connect().await, &unique("test"))
    }

    /// A rate limiter of `limit` requests per `window` under a fresh key prefix.
    pub async fn limiter(self, limit: u64, window: Duration) -> RedisRateLimiter {
        RedisRateLimiter::new(self.connect().await, &unique("test"), "reads", limit, window)
    }

    /// Backfill markers under a fresh key prefix.
    pub async fn markers(self) -> RedisMarkers {
        RedisMarkers::new(self.connect().await, &unique("test"))
    }
}

/// The test database over TLS with `sslmode=verify-full` (in its URL), the stack's CA trusted.
pub fn pg_tls_pool() -> deadpool_postgres::Pool {
    let tls = PgTlsOptions { sslmode: None, ca_file: Some(required("TRACE_TEST_CA_FILE")) };
    pool_with(&required("TRACE_TEST_DATABASE_TLS_URL"), 4, &tls).expect("database pool (TLS)")
}

/// Whether a connection of `pool` is encrypted (the server's own view: `pg_stat_ssl`).
pub async fn pg_connection_is_encrypted(pool: &deadpool_postgres::Pool) -> bool {
    let conn = pool.get().await.expect("connect");
    conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// The changed ids of the seeded test database.
pub fn pg_changed_ids() -> PgChangedIds {
    PgChangedIds::new(pg_pool())
}

/// The test database's pool.
pub fn pg_pool() -> deadpool_postgres::Pool {
    pool(&required("DATABASE_URL"), 4).expect("database pool")
}

/// A PostgreSQL source over the seeded dataset.
pub fn pg_source(fetch_size: usize, gauge: Option<Arc<trace_core::record::RowGauge>>) -> PgSource {
    let source = PgSource::new(pg_pool(), fetch_size, 1000);
    match gauge {
        Some(g) => source.with_gauge(g),
        None => source,
    }
}
