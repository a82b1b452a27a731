//! Rate limiting of the job routes: `TRACE_RATE_LIMIT_REQUESTS` per `TRACE_RATE_LIMIT_WINDOW_SECONDS`
//! per authenticated principal (its [`trace_core::Principal::hash`]), counted by the [`RateLimiter`]
//! port. A limiter that cannot count refuses the request (503 `RATE_LIMIT_UNAVAILABLE`) unless
//! `TRACE_RATE_LIMIT_FAIL_OPEN` is true, which lets it through with a warning.

use std::sync::Arc;
use std::time::Duration;

use trace_core::ports::{RateLimiter, RateVerdict};
use trace_core::TraceError;

/// The rate limit of the job routes over a [`RateLimiter`]. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    counts: Arc<dyn RateLimiter>,
    fail_open: bool,
}

impl Limiter {
    /// Over `counts`; when they cannot count, `fail_open` lets requests through, else refuses them.
    pub fn new(counts: Arc<dyn RateLimiter>, fail_open: bool) -> Self {
        Limiter { counts, fail_open }
    }

    /// Counts one request of `caller`; `TooManyRequests` (with the seconds until the window ends) when
    /// it is over the limit.
    pub async fn check(&self, caller: &str) -> Result<(), TraceError> {
        match self.counts.hit(caller).await {
            Ok(RateVerdict::Allowed) => Ok(()),
            Ok(RateVerdict::Limited { retry_after }) => {
                Err(TraceError::TooManyRequests { retry_after_seconds: whole_seconds(retry_after) })
            }
            Err(e) if self.fail_open => {
                tracing::warn!(error = %e, "rate limiter unavailable; request allowed (TRACE_RATE_LIMIT_FAIL_OPEN)");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "rate limiter unavailable; request refused");
                Err(TraceError::RateLimitUnavailable)
            }
        }
    }
}

/// `Retry-After` seconds: rounded up, at least 1.
fn whole_seconds(remaining: Duration) -> u64 {
    remaining.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use trace_adapters::ratelimit::memory::MemoryRateLimiter;
    use trace_core::ports::BackendError;

    fn memory(limit: u64, window: Duration) -> Limiter {
        Limiter::new(Arc::new(MemoryRateLimiter::new(limit, window)), false)
    }

    #[tokio::test]
    async fn the_61st_request_in_a_window_is_refused() {
        let limiter = memory(60, Duration::from_secs(60));
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
        let limiter = memory(1, Duration::from_secs(60));
        limiter.check("a").await.unwrap();
        assert!(limiter.check("a").await.is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        limiter.check("a").await.unwrap();
    }

    struct Unavailable;

    #[async_trait]
    impl RateLimiter for Unavailable {
        async fn hit(&self, _caller: &str) -> Result<RateVerdict, BackendError> {
            Err(BackendError::new("redis", "rate limit", "connection refused"))
        }
    }

    #[tokio::test]
    async fn a_limiter_that_cannot_count_refuses_unless_told_to_fail_open() {
        let closed = Limiter::new(Arc::new(Unavailable), false);
        let refused = closed.check("a").await.unwrap_err();
        assert_eq!((refused.http_status(), refused.code()), (503, "RATE_LIMIT_UNAVAILABLE"));
        let open = Limiter::new(Arc::new(Unavailable), true);
        for _ in 0..3 {
            open.check("a").await.unwrap();
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(59_001)), 60);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
    }
}
