//! The state every handler shares: configuration, backends, rate limiter.

use std::sync::Arc;

use trace_core::ports::Backends;
use trace_core::Config;

use crate::ratelimit::Limiter;

/// Shared application state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Configuration, read once at start-up.
    pub config: Arc<Config>,
    /// Queues, stores, source, counters and markers.
    pub backends: Backends,
    /// Rate limiter of the job reads.
    pub limiter: Limiter,
    /// Rate limiter of submits.
    pub submit_limiter: Limiter,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backends", &self.backends).finish_non_exhaustive()
    }
}

impl App {
    /// State over `backends`; the rate limiter counts with theirs (in Redis when Redis is configured,
    /// so every instance shares the count).
    pub fn new(config: Config, backends: Backends) -> Self {
        let limiter = Limiter::new(backends.limiter.clone());
        let submit_limiter = Limiter::new(backends.submit_limiter.clone());
        App { config: Arc::new(config), backends, limiter, submit_limiter }
    }
}
