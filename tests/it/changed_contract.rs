//! The `ChangedIds` contract against the embedded dataset and PostgreSQL (seeded with the reference
//! dataset by `infra/test.sh`). One test per property per implementation.

use trace_adapters::source::changed::DatasetChangedIds;
use trace_dataset as dataset;
use trace_integration::contract::changed;
use trace_integration::{pg_changed_ids, seeded_ids};

mod dataset_ids {
    use super::*;

    #[tokio::test]
    async fn the_first_day_is_the_dataset_s() {
        changed::the_first_day_is_the_dataset_s(&DatasetChangedIds, dataset::MAX_INDEX).await;
    }

    #[tokio::test]
    async fn an_hour_is_the_dataset_s() {
        changed::an_hour_is_the_dataset_s(&DatasetChangedIds, dataset::MAX_INDEX).await;
    }

    #[tokio::test]
    async fn adjacent_windows_cover_their_union() {
        changed::adjacent_windows_cover_their_union(&DatasetChangedIds).await;
    }

    #[tokio::test]
    async fn nothing_changed_before_the_dataset() {
        changed::nothing_changed_before_the_dataset(&DatasetChangedIds).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn the_first_day_is_the_dataset_s() {
        changed::the_first_day_is_the_dataset_s(&pg_changed_ids(), seeded_ids()).await;
    }

    #[tokio::test]
    async fn an_hour_is_the_dataset_s() {
        changed::an_hour_is_the_dataset_s(&pg_changed_ids(), seeded_ids()).await;
    }

    #[tokio::test]
    async fn adjacent_windows_cover_their_union() {
        changed::adjacent_windows_cover_their_union(&pg_changed_ids()).await;
    }

    #[tokio::test]
    async fn nothing_changed_before_the_dataset() {
        changed::nothing_changed_before_the_dataset(&pg_changed_ids()).await;
    }
}
