//! Request counts in process memory (local run, tests). Times come from tokio's clock, so tests can
//! pause and advance it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use trace_core::ports::{BackendError, RateLimiter, RateVerdict};

use super::verdict;

/// Counts in this process.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    limit: u64,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

impl MemoryRateLimiter {
    /// A limiter of `limit` requests per `window`.
    pub fn new(limit: u64, window: Duration) -> Self {
        MemoryRateLimiter { limit, window, windows: Mutex::default() }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(&self, caller: &str) -> Result<RateVerdict, BackendError> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, (start, _)| now < *start + self.window);
        let (start, count) = windows.entry(caller.to_owned()).or_insert((now, 0));
        *count += 1;
        Ok(verdict(self.limit, *count, (*start + self.window).saturating_duration_since(now)))
    }
}
