//! The services of the trace job system, over the ports of `trace-core`:
//!
//! - [`auth`]: who is calling (gateway context, API keys, JWT, SigV4, or open) before any handler;
//! - [`submit`]: validate, admit, answer inline or enqueue a job;
//! - [`status`]: job status, history, cancel, retry;
//! - [`dlq`]: the dead-letter queues, listed and redriven (administrators);
//! - [`results`]: the NDJSON stream and paginated pages of a finished job;
//! - [`chunks`]: a finished job's result as chunk URLs (presigned object-store GETs);
//! - [`worker`]: run one queue message (a shard of a job) into result chunks;
//! - [`engine`]: the trace itself — domains × id batches from the event source into a sink;
//! - [`http`]: the axum routers and the one place errors become HTTP answers;
//! - [`serve`]: run a router or the worker in Lambda or as a local process;
//! - [`metrics`]: CloudWatch Embedded Metric Format lines per job end and per request;
//! - [`backfill`]: the scheduled backfill: jobs for the containers changed in a time window;
//! - [`reaper`]: ends orphaned jobs (swept with each scheduled backfill run).
//!
//! Function binaries only parse their event, call into here and shape the answer.

pub mod app;
pub mod auth;
pub mod backfill;
pub mod chunks;
pub mod dlq;
pub mod engine;
pub mod follow;
pub mod gzip_stream;
pub mod http;
pub mod inline;
pub mod metrics;
pub mod ratelimit;
pub mod reaper;
pub mod record;
pub mod results;
pub mod serve;
pub mod sharding;
pub mod status;
pub mod submit;
pub mod worker;

#[cfg(test)]
mod testing;

pub use app::App;
