//! Rate limiters: [`redis::RedisRateLimiter`] (one count shared by every instance) and
//! [`memory::MemoryRateLimiter`] (local run). Both implement [`trace_core::ports::RateLimiter`]:
//! `limit` requests per `window` per caller, in fixed windows that start at a caller's first request.

use std::time::Duration;

use trace_core::ports::RateVerdict;

pub mod memory;
pub mod redis;

/// The verdict on the `count`th request of a window with `remaining` time left.
fn verdict(limit: u64, count: u64, remaining: Duration) -> RateVerdict {
    if count <= limit {
        RateVerdict::Allowed
    } else {
        RateVerdict::Limited { retry_after: remaining }
    }
}
