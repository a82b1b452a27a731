//! The `RateLimiter` contract against the in-memory limiter (tokio's clock paused, a minute's window)
//! and Redis (real time, a one-second window), a single node and a 3-master Redis Cluster. One test
//! per property per implementation.

use std::sync::Arc;
use std::time::Duration;

use trace_adapters::ratelimit::memory::MemoryRateLimiter;
use trace_integration::contract::ratelimit;
use trace_integration::{redis_limiter, RedisShape};

const LIMIT: u64 = 5;

mod memory {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn limiter() -> MemoryRateLimiter {
        MemoryRateLimiter::new(LIMIT, WINDOW)
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_then_a_refusal() {
        ratelimit::the_limit_then_a_refusal(&limiter(), LIMIT, WINDOW).await;
    }

    #[tokio::test(start_paused = true)]
    async fn callers_are_counted_apart() {
        ratelimit::callers_are_counted_apart(&limiter(), LIMIT).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_window_starts_after_the_old_one() {
        ratelimit::a_new_window_starts_after_the_old_one(&limiter(), LIMIT, WINDOW).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_are_counted_exactly() {
        ratelimit::concurrent_requests_are_counted_exactly(Arc::new(limiter()), LIMIT, 50).await;
    }
}

mod redis {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn the_limit_then_a_refusal() {
        ratelimit::the_limit_then_a_refusal(&redis_limiter(LIMIT, WINDOW).await, LIMIT, WINDOW).await;
    }

    #[tokio::test]
    async fn callers_are_counted_apart() {
        ratelimit::callers_are_counted_apart(&redis_limiter(LIMIT, WINDOW).await, LIMIT).await;
    }

    #[tokio::test]
    async fn a_new_window_starts_after_the_old_one() {
        let limiter = redis_limiter(LIMIT, WINDOW).await;
        ratelimit::a_new_window_starts_after_the_old_one(&limiter, LIMIT, WINDOW).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_are_counted_exactly() {
        // A long window, so that none ends during the burst.
        let limiter = redis_limiter(LIMIT, Duration::from_secs(60)).await;
        ratelimit::concurrent_requests_are_counted_exactly(Arc::new(limiter), LIMIT, 50).await;
    }
}

mod redis_cluster {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);

    async fn limiter(window: Duration) -> trace_adapters::ratelimit::redis::RedisRateLimiter {
        RedisShape::Cluster.limiter(LIMIT, window).await
    }

    #[tokio::test]
    async fn the_limit_then_a_refusal() {
        ratelimit::the_limit_then_a_refusal(&limiter(WINDOW).await, LIMIT, WINDOW).await;
    }

    #[tokio::test]
    async fn callers_are_counted_apart() {
        ratelimit::callers_are_counted_apart(&limiter(WINDOW).await, LIMIT).await;
    }

    #[tokio::test]
    async fn a_new_window_starts_after_the_old_one() {
        ratelimit::a_new_window_starts_after_the_old_one(&limiter(WINDOW).await, LIMIT, WINDOW).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_are_counted_exactly() {
        let limiter = limiter(Duration::from_secs(60)).await;
        ratelimit::concurrent_requests_are_counted_exactly(Arc::new(limiter), LIMIT, 50).await;
    }
}
