//! Adapters of the trace job system: the real backends and their local stand-ins, behind the ports of
//! `trace_core::ports`.
//!
//! | port        | real                      | local                          |
//! |-------------|---------------------------|--------------------------------|
//! | JobQueue    | [`queue::sqs::SqsQueue`]  | [`queue::memory::MemoryQueue`] |
//! | ChunkStore  | [`store::s3::S3Store`]    | [`store::fs::FsStore`]         |
//! | JobStore    | [`jobs::redis::RedisJobStore`] | [`jobs::memory::MemoryJobStore`] |
//! | EventSource | [`source::postgres::PgSource`] | [`source::embedded::DatasetSource`] |
//! | RateLimiter | [`ratelimit::redis::RedisRateLimiter`] | [`ratelimit::memory::MemoryRateLimiter`] |
//! | BackfillMarkers | [`markers::redis::RedisMarkers`] | [`markers::memory::MemoryMarkers`] |
//! | ChangedIds  | [`source::changed::PgChangedIds`] | [`source::changed::DatasetChangedIds`] |
//! | SecretStore | [`secrets::SecretsManager`] | [`secrets::MemorySecrets`] |
//!
//! Every Redis key is named in [`keys`]; the Redis adapters share one connection, to a single node
//! or a cluster ([`redis_connection`]); Redis and PostgreSQL share one TLS set-up ([`tls`]). [`runtime`] builds the [`Backends`](trace_core::ports::Backends) of a
//! process from its configuration. Adapters depend on the core; the core never depends on them.

pub mod aws;
pub mod jobs;
pub mod keys;
pub mod logging;
pub mod markers;
pub mod queue;
pub mod ratelimit;
pub mod redis_connection;
pub mod runtime;
pub mod secrets;
pub mod source;
pub mod store;
pub mod tls;
