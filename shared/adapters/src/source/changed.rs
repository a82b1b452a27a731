//! The containers changed in a time window, the backfill's input: [`PgChangedIds`] (PostgreSQL,
//! [`catalog::CHANGED_IDS`]) and [`DatasetChangedIds`] (the embedded reference dataset). Both
//! implement [`trace_core::ports::ChangedIds`] by one rule: a container changed in the window when
//! one of its history rows moved out (`move_out`) in it.

use std::ops::{Range, RangeInclusive};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use trace_core::ports::{BackendError, ChangedIds};
use trace_core::record::{RowBatch, Value};
use trace_core::Domain;
use trace_dataset as dataset;

use super::catalog;

/// The changed containers in PostgreSQL.
#[derive(Clone)]
pub struct PgChangedIds {
    pool: Pool,
}

impl std::fmt::Debug for PgChangedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChangedIds").finish_non_exhaustive()
    }
}

impl PgChangedIds {
    /// Over a pool of the database (the event source's is fine: one query per run).
    pub fn new(pool: Pool) -> Self {
        PgChangedIds { pool }
    }
}

#[async_trait]
impl ChangedIds for PgChangedIds {
    async fn changed(&self, window: &Range<DateTime<Utc>>) -> Result<Vec<String>, BackendError> {
        let conn = self.pool.get().await.map_err(|e| BackendError::new("postgres", "connect", e))?;
        let rows = conn
            .query(catalog::CHANGED_IDS, &[&window.start, &window.end])
            .await
            .map_err(|e| BackendError::new("postgres", "changed ids", e))?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, String>(0).map_err(|e| BackendError::new("postgres", "changed ids", e))
            })
            .collect()
    }
}

/// The changed containers of the embedded reference dataset (`CID-0000001` … `CID-9999999`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DatasetChangedIds;

impl DatasetChangedIds {
    /// Every history row of container `i` moves out within `[T0 + 97 i seconds, + 2 days)` (at most 39
    /// steps an hour apart, plus under an hour of processing: see `dataset.md`), so only the containers
    /// whose span meets the window are looked at.
    const SPAN_SECONDS: i64 = 2 * 86_400;

    fn candidates(window: &Range<DateTime<Utc>>) -> RangeInclusive<u64> {
        let from = (window.start.timestamp() - dataset::T0_UNIX - Self::SPAN_SECONDS).div_euclid(97);
        let to = (window.end.timestamp() - dataset::T0_UNIX).div_euclid(97);
        let max = dataset::MAX_INDEX as i64;
        // `to` 0 (a window before T0): empty.
        (from.clamp(1, max) as u64)..=(to.clamp(0, max) as u64)
    }
}

#[async_trait]
impl ChangedIds for DatasetChangedIds {
    async fn changed(&self, window: &Range<DateTime<Utc>>) -> Result<Vec<String>, BackendError> {
        let column = Domain::History.columns().iter().position(|c| c.name == "move_out").unwrap_or(8);
        let mut ids = Vec::new();
        for i in Self::candidates(window) {
            let mut batch = RowBatch::with_capacity(Domain::History, 40);
            dataset::push_rows(Domain::History, i, &mut batch);
            if batch.rows().any(|row| matches!(row[column], Value::Time(t) if window.contains(&t))) {
                ids.push(dataset::container_id(i));
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[tokio::test]
    async fn the_embedded_dataset_changes_by_move_out() {
        // Container i's history rows move out from T0 + 97 i + 3600 s + 600 s on: on the first day
        // (T0 = 2025-01-01), containers up to ~870 have moved out, and none after 86400 / 97.
        let day = at(2025, 1, 1, 0, 0, 0)..at(2025, 1, 2, 0, 0, 0);
        let ids = DatasetChangedIds.changed(&day).await.unwrap();
        assert!(ids.len() > 500, "{}", ids.len());
        let max = ids.iter().map(|id| dataset::parse_container_index(id).unwrap()).max().unwrap();
        assert!(max <= 86_400 / 97, "{max}");
        assert_eq!(ids[0], "CID-0000001");
        // An hour later on: the containers around (start - T0) / 97, the 2-day span of a container before.
        let later = at(2026, 3, 12, 8, 0, 0)..at(2026, 3, 12, 9, 0, 0);
        let ids = DatasetChangedIds.changed(&later).await.unwrap();
        let from = (later.start.timestamp() - dataset::T0_UNIX - 2 * 86_400) as u64 / 97;
        let to = (later.end.timestamp() - dataset::T0_UNIX) as u64 / 97;
        assert!(ids.len() > 100, "{}", ids.len());
        for id in &ids {
            assert!((from..=to).contains(&dataset::parse_container_index(id).unwrap()), "{id}");
        }
        // Before T0: nothing.
        let before = at(2024, 5, 31, 23, 0, 0)..at(2024, 6, 1, 0, 0, 0);
        assert!(DatasetChangedIds.changed(&before).await.unwrap().is_empty());
    }
}
