//! The `RateLimiter` contract. Each property takes a limiter of `limit` requests per `window`; with
//! tokio's clock paused (the in-memory limiter) the waits take no time.

use std::sync::Arc;
use std::time::Duration;

use trace_core::ports::{RateLimiter, RateVerdict};

/// A caller name no other test uses.
fn caller(name: &str) -> String {
    crate::unique(name)
}

async fn limited(l: &dyn RateLimiter, caller: &str) -> Duration {
    match l.hit(caller).await.expect("hit") {
        RateVerdict::Limited { retry_after } => retry_after,
        RateVerdict::Allowed => panic!("{caller}: a request over the limit was allowed"),
    }
}

/// `limit` requests are allowed, the next is refused until the window ends (at most `window`).
pub async fn the_limit_then_a_refusal(l: &dyn RateLimiter, limit: u64, window: Duration) {
    let who = caller("a");
    for n in 1..=limit {
        assert_eq!(l.hit(&who).await.expect("hit"), RateVerdict::Allowed, "request {n} of {limit}");
    }
    let retry_after = limited(l, &who).await;
    assert!(retry_after <= window && !retry_after.is_zero(), "retry after {retry_after:?} of {window:?}");
    // Refused requests count too: still refused.
    limited(l, &who).await;
}

/// Callers are counted apart.
pub async fn callers_are_counted_apart(l: &dyn RateLimiter, limit: u64) {
    let (a, b) = (caller("a"), caller("b"));
    for _ in 0..limit {
        l.hit(&a).await.expect("hit");
    }
    limited(l, &a).await;
    assert_eq!(l.hit(&b).await.expect("hit"), RateVerdict::Allowed, "another caller was refused");
}

/// The window starts at the caller's first request: what is left of it shrinks as time passes, and
/// after it a new window allows `limit` requests again.
pub async fn a_new_window_starts_after_the_old_one(l: &dyn RateLimiter, limit: u64, window: Duration) {
    let who = caller("a");
    for _ in 0..limit {
        l.hit(&who).await.expect("hit");
    }
    tokio::time::sleep(window / 2).await;
    let retry_after = limited(l, &who).await;
    assert!(retry_after <= window / 2 + window / 10, "retry after {retry_after:?}, half of {window:?} gone");
    tokio::time::sleep(retry_after + window / 10).await;
    for n in 1..=limit {
        assert_eq!(l.hit(&who).await.expect("hit"), RateVerdict::Allowed, "request {n} of the new window");
    }
    limited(l, &who).await;
}

/// Of `requests` concurrent requests of one caller, exactly `limit` are allowed.
pub async fn concurrent_requests_are_counted_exactly(l: Arc<dyn RateLimiter>, limit: u64, requests: u64) {
    let who = caller("a");
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (l, who) = (l.clone(), who.clone());
            tokio::spawn(async move { l.hit(&who).await.expect("hit") })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task") == RateVerdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, limit, "{allowed} of {requests} concurrent requests allowed, limit {limit}");
}
