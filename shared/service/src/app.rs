//! The state every handler shares: configuration, backends, rate limiter.

use std::sync::Arc;

use trace_adapters::runtime::Backends;
use trace_core::Config;

use crate::ratelimit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter};

/// Shared application state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Configuration, read once at start-up.
    pub config: Arc<Config>,
    /// Queues, stores and source.
    pub backends: Backends,
    /// Rate limiter of the job routes.
    pub limiter: Arc<dyn RateLimiter>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backends", &self.backends).finish_non_exhaustive()
    }
}

impl App {
    /// State over `backends`; the rate limiter counts in Redis when Redis is configured (so every
    /// instance shares the count), in memory otherwise.
    pub fn new(config: Config, backends: Backends) -> Self {
        let (limit, window) = (config.rate_limit_requests, config.rate_limit_window);
        let limiter: Arc<dyn RateLimiter> = match &backends.redis {
            Some(conn) => {
                Arc::new(RedisRateLimiter::new(conn.clone(), &config.redis_key_prefix, limit, window))
            }
            None => Arc::new(MemoryRateLimiter::new(limit, window)),
        };
        App { config: Arc::new(config), backends, limiter }
    }
}
