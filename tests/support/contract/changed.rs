//! The `ChangedIds` contract, with the dataset's Rust twin (`trace_dataset`) as the oracle of
//! "changed": the containers with a history row whose `move_out` is in the window.

use std::collections::BTreeSet;
use std::ops::Range;

use chrono::{DateTime, TimeZone, Utc};
use trace_core::ports::ChangedIds;
use trace_core::record::{RowBatch, Value};
use trace_core::Domain;
use trace_dataset as dataset;

/// The containers `1..=max_index` with a history row that moved out in `window`, sorted.
pub fn expected(window: &Range<DateTime<Utc>>, max_index: u64) -> BTreeSet<String> {
    let column = Domain::History.columns().iter().position(|c| c.name == "move_out").expect("move_out");
    // Every row of container i moves out after T0 + 97 i seconds.
    let last = ((window.end.timestamp() - dataset::T0_UNIX).max(0) as u64 / 97).min(max_index);
    let mut ids = BTreeSet::new();
    for i in 1..=last {
        let mut rows = RowBatch::with_capacity(Domain::History, 40);
        dataset::push_rows(Domain::History, i, &mut rows);
        if rows.rows().any(|r| matches!(r[column], Value::Time(t) if window.contains(&t))) {
            ids.insert(dataset::container_id(i));
        }
    }
    ids
}

fn at(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, d, h, 0, 0).single().expect("a time")
}

/// The ids of `window`, checked to be unique.
async fn changed(c: &dyn ChangedIds, window: &Range<DateTime<Utc>>) -> BTreeSet<String> {
    let ids = c.changed(window).await.expect("changed ids");
    let count = ids.len();
    let set: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(set.len(), count, "an id came twice for {window:?}");
    set
}

/// The first day of the dataset: the containers the oracle finds (`max_index`: the most the
/// implementation holds).
pub async fn the_first_day_is_the_dataset_s(c: &dyn ChangedIds, max_index: u64) {
    let day = at(1, 0)..at(2, 0);
    let ids = changed(c, &day).await;
    assert!(ids.len() > 500, "{} ids changed on the first day", ids.len());
    assert_eq!(ids, expected(&day, max_index));
}

/// An hour weeks in: the containers the oracle finds.
pub async fn an_hour_is_the_dataset_s(c: &dyn ChangedIds, max_index: u64) {
    let hour = at(20, 8)..at(20, 9);
    let ids = changed(c, &hour).await;
    assert!(ids.len() > 50, "{} ids changed in {hour:?}", ids.len());
    assert_eq!(ids, expected(&hour, max_index));
}

/// Windows are half-open: two adjacent windows together find what their union finds.
pub async fn adjacent_windows_cover_their_union(c: &dyn ChangedIds) {
    let (a, b, end) = (at(3, 0), at(3, 7), at(3, 12));
    let mut both = changed(c, &(a..b)).await;
    both.extend(changed(c, &(b..end)).await);
    assert_eq!(both, changed(c, &(a..end)).await);
    assert!(changed(c, &(b..b)).await.is_empty(), "an empty window found changes");
}

/// Before the dataset's first time, nothing changed.
pub async fn nothing_changed_before_the_dataset(c: &dyn ChangedIds) {
    let before = Utc.with_ymd_and_hms(2024, 12, 31, 0, 0, 0).single().expect("a time")..at(1, 0);
    assert!(changed(c, &before).await.is_empty());
}
