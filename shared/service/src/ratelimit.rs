//! Rate limiting of the job routes: `TRACE_RATE_LIMIT_REQUESTS` per `TRACE_RATE_LIMIT_WINDOW_SECONDS`
//! per caller, in fixed windows that start at a caller's first request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;
use trace_core::TraceError;

/// Counts requests per caller.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `caller`; `TooManyRequests` (with the seconds until the window ends) when
    /// it is over the limit.
    async fn check(&self, caller: &str) -> Result<(), TraceError>;
}

fn over(limit: u64, count: u64, remaining: Duration) -> Result<(), TraceError> {
    if count <= limit {
        Ok(())
    } else {
        Err(TraceError::TooManyRequests {
            retry_after_seconds: remaining.as_secs_f64().ceil().max(1.0) as u64,
        })
    }
}

/// Counts in Redis, shared by every instance.
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: String,
    limit: u64,
    window: Duration,
    script: Script,
}

/// KEYS: counter. ARGV: window ms. Returns {count, ms left}.
const HIT: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"#;

impl RedisRateLimiter {
    /// A limiter of `limit` requests per `window`.
    pub fn new(conn: ConnectionManager, prefix: &str, limit: u64, window: Duration) -> Self {
        RedisRateLimiter { conn, prefix: prefix.to_owned(), limit, window, script: Script::new(HIT) }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, caller: &str) -> Result<(), TraceError> {
        let (count, ttl_ms): (u64, u64) = self
            .script
            .key(format!("{}:ratelimit:{caller}", self.prefix))
            .arg(self.window.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            // A limiter that cannot count must not take the service down with it: let it through.
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
                (0, 0)
            });
        over(self.limit, count, Duration::from_millis(ttl_ms))
    }
}

/// Counts in process memory (local run, tests).
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
    async fn check(&self, caller: &str) -> Result<(), TraceError> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, (start, _)| now < *start + self.window);
        let (start, count) = windows.entry(caller.to_owned()).or_insert((now, 0));
        *count += 1;
        over(self.limit, *count, (*start + self.window).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_61st_request_in_a_window_is_refused() {
        let limiter = MemoryRateLimiter::new(60, Duration::from_secs(60));
        for _ in 0..60 {
            limiter.check("a").await.unwrap();
        }
        match limiter.check("a").await {
            Err(TraceError::TooManyRequests { retry_after_seconds }) => {
                assert!((1..=60).contains(&retry_after_seconds))
            }
            other => panic!("{other:?}"),
        }
        limiter.check("b").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_window_starts_after_the_old_one() {
        let limiter = MemoryRateLimiter::new(1, Duration::from_secs(60));
        limiter.check("a").await.unwrap();
        assert!(limiter.check("a").await.is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        limiter.check("a").await.unwrap();
    }
}
