//! The `BackfillMarkers` contract against the in-memory markers and Redis, a single node and a
//! 3-master Redis Cluster (the markers carry no hash tag: they spread over the masters). One test
//! per property per implementation.

use std::sync::Arc;

use trace_adapters::markers::memory::MemoryMarkers;
use trace_integration::contract::markers;
use trace_integration::{redis_markers, RedisShape};

mod memory {
    use super::*;

    #[tokio::test]
    async fn a_claim_is_won_once() {
        markers::a_claim_is_won_once(&MemoryMarkers::new()).await;
    }

    #[tokio::test]
    async fn a_confirmed_marker_names_its_job() {
        markers::a_confirmed_marker_names_its_job(&MemoryMarkers::new()).await;
    }

    #[tokio::test]
    async fn a_released_marker_can_be_claimed_again() {
        markers::a_released_marker_can_be_claimed_again(&MemoryMarkers::new()).await;
    }

    #[tokio::test]
    async fn markers_are_per_window_and_batch() {
        markers::markers_are_per_window_and_batch(&MemoryMarkers::new()).await;
    }

    #[tokio::test]
    async fn markers_expire_after_their_ttl() {
        markers::markers_expire_after_their_ttl(&MemoryMarkers::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_claim_wins() {
        markers::exactly_one_claim_wins(Arc::new(MemoryMarkers::new()), 100, 8).await;
    }
}

mod redis {
    use super::*;

    #[tokio::test]
    async fn a_claim_is_won_once() {
        markers::a_claim_is_won_once(&redis_markers().await).await;
    }

    #[tokio::test]
    async fn a_confirmed_marker_names_its_job() {
        markers::a_confirmed_marker_names_its_job(&redis_markers().await).await;
    }

    #[tokio::test]
    async fn a_released_marker_can_be_claimed_again() {
        markers::a_released_marker_can_be_claimed_again(&redis_markers().await).await;
    }

    #[tokio::test]
    async fn markers_are_per_window_and_batch() {
        markers::markers_are_per_window_and_batch(&redis_markers().await).await;
    }

    #[tokio::test]
    async fn markers_expire_after_their_ttl() {
        markers::markers_expire_after_their_ttl(&redis_markers().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_claim_wins() {
        markers::exactly_one_claim_wins(Arc::new(redis_markers().await), 100, 8).await;
    }
}

mod redis_cluster {
    use super::*;

    async fn markers() -> trace_adapters::markers::redis::RedisMarkers {
        RedisShape::Cluster.markers().await
    }

    #[tokio::test]
    async fn a_claim_is_won_once() {
        markers::a_claim_is_won_once(&markers().await).await;
    }

    #[tokio::test]
    async fn a_confirmed_marker_names_its_job() {
        markers::a_confirmed_marker_names_its_job(&markers().await).await;
    }

    #[tokio::test]
    async fn a_released_marker_can_be_claimed_again() {
        markers::a_released_marker_can_be_claimed_again(&markers().await).await;
    }

    #[tokio::test]
    async fn markers_are_per_window_and_batch() {
        markers::markers_are_per_window_and_batch(&markers().await).await;
    }

    #[tokio::test]
    async fn markers_expire_after_their_ttl() {
        markers::markers_expire_after_their_ttl(&markers().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_claim_wins() {
        markers::exactly_one_claim_wins(Arc::new(markers().await), 100, 8).await;
    }
}
