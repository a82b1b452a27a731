//! The state every handler shares: configuration, backends, rate limiter.

use std::sync::Arc;

use trace_core::config::ConfigError;
use trace_core::ports::Backends;
use trace_core::Config;

use crate::auth::Authenticator;
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
    /// Who is calling (`TRACE_AUTH`).
    pub auth: Authenticator,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backends", &self.backends).finish_non_exhaustive()
    }
}

impl App {
    /// State over `backends`; the rate limiter counts with theirs (in Redis when Redis is configured,
    /// so every instance shares the count).
    /// Authentication settings that cannot be used make every request 401 (fail closed); binaries use
    /// [`App::try_new`] to stop at start-up instead.
    pub fn new(config: Config, backends: Backends) -> Self {
        let auth = Authenticator::from_config(&config).unwrap_or_else(|e| {
            tracing::error!(error = %e, "authentication settings unusable: every request is refused");
            Authenticator::refuse_all()
        });
        Self::with_auth(config, backends, auth)
    }

    /// Like [`App::new`], but an unusable authentication setting (an unreadable JWT key or SigV4
    /// credentials file) is an error naming the variable.
    pub fn try_new(config: Config, backends: Backends) -> Result<Self, ConfigError> {
        let auth = Authenticator::from_config(&config)?;
        Ok(Self::with_auth(config, backends, auth))
    }

    /// State with the given authenticator.
    pub fn with_auth(config: Config, backends: Backends, auth: Authenticator) -> Self {
        let fail_open = config.rate_limit_fail_open;
        let limiter = Limiter::new(backends.limiter.clone(), fail_open);
        let submit_limiter = Limiter::new(backends.submit_limiter.clone(), fail_open);
        App { config: Arc::new(config), backends, limiter, submit_limiter, auth }
    }
}
