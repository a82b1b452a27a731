//! The `JobStore` contract against the in-memory store and Redis.

use std::sync::Arc;

use trace_adapters::jobs::memory::MemoryJobStore;
use trace_integration::{contract::jobs, redis_store};

#[tokio::test]
async fn memory_job_store_contract() {
    jobs::run(&MemoryJobStore::new()).await;
    jobs::ttl(&MemoryJobStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_job_store_exactly_one_starts() {
    jobs::exactly_one_starts(Arc::new(MemoryJobStore::new()), 200, 8).await;
}

#[tokio::test]
async fn redis_job_store_contract() {
    jobs::run(&redis_store().await).await;
    jobs::ttl(&redis_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_job_store_exactly_one_starts() {
    // Separate connections, so the compare-and-sets really race on the server.
    let store = redis_store().await;
    jobs::exactly_one_starts(Arc::new(store), 200, 8).await;
}
