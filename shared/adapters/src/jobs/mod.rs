//! Job metadata stores: [`memory::MemoryJobStore`] (local run, unit tests) and
//! [`redis::RedisJobStore`]. Both implement [`trace_core::ports::JobStore`]; both decide allowed
//! transitions through `trace_core::job`, and apply them with a compare-and-set on `(status, attempt)`.

pub mod memory;
pub mod redis;
