//! Adapters of the trace job system: the real backends and their local stand-ins, behind the ports of
//! `trace_core::ports`.
//!
//! | port        | real                      | local                          |
//! |-------------|---------------------------|--------------------------------|
//! | JobQueue    | [`queue::sqs::SqsQueue`]  | [`queue::memory::MemoryQueue`] |
//! | ChunkStore  | [`store::s3::S3Store`]    | [`store::fs::FsStore`]         |
//! | JobStore    | [`jobs::redis::RedisJobStore`] | [`jobs::memory::MemoryJobStore`] |
//! | EventSource | [`source::postgres::PgSource`] | [`source::embedded::DatasetSource`] |
//!
//! Adapters depend on the core; the core never depends on them.

pub mod aws;
pub mod jobs;
pub mod queue;
pub mod runtime;
pub mod source;
pub mod store;
