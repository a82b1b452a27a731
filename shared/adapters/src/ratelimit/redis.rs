//! Request counts in Redis (`prefix:ratelimit:{limit}:{caller}`, expiring with the window), shared by every
//! instance of every function.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use trace_core::ports::{BackendError, RateLimiter, RateVerdict};

use super::verdict;
use crate::keys::Keys;
use crate::redis_connection::{failed, RedisConnection};

/// Counts in Redis. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConnection,
    keys: Keys,
    name: &'static str,
    limit: u64,
    window: Duration,
    script: Script,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.keys.prefix())
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
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
    /// A limiter of `limit` requests per `window` over `conn`, named `name` (its counts are apart from
    /// other limits'); its keys start with `prefix`.
    pub fn new(
        conn: RedisConnection,
        prefix: &str,
        name: &'static str,
        limit: u64,
        window: Duration,
    ) -> Self {
        RedisRateLimiter { conn, keys: Keys::new(prefix), name, limit, window, script: Script::new(HIT) }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, caller: &str) -> Result<RateVerdict, BackendError> {
        let (count, ttl_ms): (u64, u64) = self
            .script
            .key(self.keys.rate_limit(self.name, caller))
            .arg(self.window.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("rate limit"))?;
        Ok(verdict(self.limit, count, Duration::from_millis(ttl_ms)))
    }
}
