//! The integration tests, compiled as one binary (one link instead of one per file). Each module is
//! one area; shared helpers live in the `trace-integration` support library (`tests/support`).
//!
//! Run one area with a filter, e.g. `infra/test.sh -p trace-integration --test it jobs_contract::`.

mod backfill;
mod changed_contract;
mod chunk_urls;
mod client;
mod dashboard;
mod docs;
mod faults;
mod follow;
mod functions_e2e;
mod jobs_contract;
mod lambda_events;
mod lambda_limits;
mod markers_contract;
mod ownership;
mod queue_contract;
mod ratelimit_contract;
mod secrets;
mod sharding;
mod source_contract;
mod store_contract;
mod template;
mod tls;
