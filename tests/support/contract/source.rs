//! The `EventSource` contract, with the Rust twin of the reference dataset as the oracle.

use std::sync::Arc;

use trace_core::ports::EventSource;
use trace_core::record::{RowBatch, RowGauge};
use trace_core::{ContainerId, Domain};
use trace_dataset as dataset;

/// Ids in a deliberately shuffled order, with an unknown id and `CID-` ids above the dataset.
fn sample_ids() -> Vec<ContainerId> {
    let mut ids: Vec<ContainerId> = [77, 1, 9_999, 2, 50_000, 113_999, 114_000, 3_141]
        .iter()
        .map(|i| ContainerId::parse(dataset::container_id(*i)).expect("id"))
        .collect();
    ids.push(ContainerId::parse("NOT-A-DATASET-ID").expect("id"));
    ids
}

/// Reads every batch of one domain, checking each batch's size.
pub async fn read_all(
    source: &dyn EventSource,
    domain: Domain,
    ids: &[ContainerId],
    fetch: usize,
) -> Vec<RowBatch> {
    let mut cursor = source.open(domain, ids).await.expect("open");
    let mut out = Vec::new();
    while let Some(batch) = cursor.next_batch().await.expect("fetch") {
        assert!(!batch.is_empty(), "a fetch returned an empty batch");
        assert!(batch.len() <= fetch, "{domain}: a fetch of {} rows exceeds {fetch}", batch.len());
        out.push(batch);
    }
    assert!(cursor.next_batch().await.expect("fetch").is_none(), "cursor resumed after its end");
    out
}

/// Exact rows for sample ids in every domain, ordered by container then seq, in fetches of at most
/// `fetch` rows. `source` must serve the reference dataset for ids up to 114,000.
pub async fn run(source: &dyn EventSource, fetch: usize) {
    let ids = sample_ids();
    let mut expected_indexes: Vec<u64> =
        ids.iter().filter_map(|i| dataset::parse_container_index(i.as_str())).collect();
    expected_indexes.sort_by_key(|i| dataset::container_id(*i));
    for domain in Domain::ALL {
        let mut expected = RowBatch::with_capacity(domain, 0);
        for i in &expected_indexes {
            dataset::push_rows(domain, *i, &mut expected);
        }
        let mut got = RowBatch::with_capacity(domain, 0);
        for batch in read_all(source, domain, &ids, fetch).await {
            for r in 0..batch.len() {
                got.push_row_from(&batch, r);
            }
        }
        assert_eq!(got.len(), expected.len(), "{domain}: row count");
        for (n, (g, e)) in got.rows().zip(expected.rows()).enumerate() {
            assert_eq!(g, e, "{domain}: row {n} differs");
        }
    }
    // No ids, or only unknown ones: no rows.
    assert!(read_all(source, Domain::History, &[], fetch).await.is_empty());
    let unknown = [ContainerId::parse("NOPE").expect("id")];
    assert!(read_all(source, Domain::Jobs, &unknown, fetch).await.is_empty());
}

/// Streams `domain` for `ids` dropping each fetch before the next, and returns (rows, peak rows held).
pub async fn stream_counting(
    source: &dyn EventSource,
    gauge: &Arc<RowGauge>,
    domain: Domain,
    ids: &[ContainerId],
) -> (u64, usize) {
    let before = gauge.peak();
    assert_eq!(gauge.current(), 0, "rows still held from an earlier read");
    let mut cursor = source.open(domain, ids).await.expect("open");
    let mut rows = 0u64;
    while let Some(batch) = cursor.next_batch().await.expect("fetch") {
        rows += batch.len() as u64;
        drop(batch);
    }
    assert_eq!(gauge.current(), 0);
    (rows, gauge.peak().max(before))
}
