//! The `JobStore` contract against the in-memory store and Redis: a single node, a single node over
//! TLS (its certificate checked against the stack's CA) and a 3-master Redis Cluster (every script
//! and pipeline of the store must stay in one hash slot there). One test per property per
//! implementation.

use std::sync::Arc;

use trace_adapters::jobs::memory::MemoryJobStore;
use trace_integration::{contract::jobs, redis_store, RedisShape};

mod memory {
    use super::*;

    #[tokio::test]
    async fn create_and_read() {
        jobs::create_and_read(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn compare_and_set() {
        jobs::compare_and_set(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn progress_under_its_guard() {
        jobs::progress_under_its_guard(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn a_cancel_stops_progress() {
        jobs::a_cancel_stops_progress(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn failed_keeps_its_error() {
        jobs::failed_keeps_its_error(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn history_newest_first() {
        jobs::history_newest_first(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn owner_and_tenant_round_trip() {
        jobs::owner_and_tenant_round_trip(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn the_history_of_an_owner_shows_only_its_jobs() {
        jobs::the_history_of_an_owner_shows_only_its_jobs(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn an_admin_s_history_shows_all() {
        jobs::an_admin_s_history_shows_all(&MemoryJobStore::new()).await;
    }

    #[tokio::test]
    async fn ttl() {
        jobs::ttl(&MemoryJobStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_starts() {
        jobs::exactly_one_starts(Arc::new(MemoryJobStore::new()), 200, 8).await;
    }
}

mod redis {
    use super::*;

    #[tokio::test]
    async fn create_and_read() {
        jobs::create_and_read(&redis_store().await).await;
    }

    #[tokio::test]
    async fn compare_and_set() {
        jobs::compare_and_set(&redis_store().await).await;
    }

    #[tokio::test]
    async fn progress_under_its_guard() {
        jobs::progress_under_its_guard(&redis_store().await).await;
    }

    #[tokio::test]
    async fn a_cancel_stops_progress() {
        jobs::a_cancel_stops_progress(&redis_store().await).await;
    }

    #[tokio::test]
    async fn failed_keeps_its_error() {
        jobs::failed_keeps_its_error(&redis_store().await).await;
    }

    #[tokio::test]
    async fn history_newest_first() {
        jobs::history_newest_first(&redis_store().await).await;
    }

    #[tokio::test]
    async fn owner_and_tenant_round_trip() {
        jobs::owner_and_tenant_round_trip(&redis_store().await).await;
    }

    #[tokio::test]
    async fn the_history_of_an_owner_shows_only_its_jobs() {
        jobs::the_history_of_an_owner_shows_only_its_jobs(&redis_store().await).await;
    }

    #[tokio::test]
    async fn an_admin_s_history_shows_all() {
        jobs::an_admin_s_history_shows_all(&redis_store().await).await;
    }

    #[tokio::test]
    async fn ttl() {
        jobs::ttl(&redis_store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_starts() {
        // Separate connections, so the compare-and-sets really race on the server.
        let store = redis_store().await;
        jobs::exactly_one_starts(Arc::new(store), 200, 8).await;
    }
}

/// The Redis suite on another shape of Redis.
macro_rules! redis_suite {
    ($name:ident, $shape:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn create_and_read() {
                jobs::create_and_read(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn compare_and_set() {
                jobs::compare_and_set(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn progress_under_its_guard() {
                jobs::progress_under_its_guard(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn a_cancel_stops_progress() {
                jobs::a_cancel_stops_progress(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn failed_keeps_its_error() {
                jobs::failed_keeps_its_error(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn history_newest_first() {
                jobs::history_newest_first(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn owner_and_tenant_round_trip() {
                jobs::owner_and_tenant_round_trip(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn the_history_of_an_owner_shows_only_its_jobs() {
                jobs::the_history_of_an_owner_shows_only_its_jobs(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn an_admin_s_history_shows_all() {
                jobs::an_admin_s_history_shows_all(&$shape.store().await).await;
            }

            #[tokio::test]
            async fn ttl() {
                jobs::ttl(&$shape.store().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn exactly_one_starts() {
                jobs::exactly_one_starts(Arc::new($shape.store().await), 200, 8).await;
            }
        }
    };
}

redis_suite!(redis_tls, RedisShape::Tls);
redis_suite!(redis_cluster, RedisShape::Cluster);
