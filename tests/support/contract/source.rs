//! The `EventSource` contract, with the Rust twin of the reference dataset as the oracle.

use std::sync::Arc;

use trace_core::ports::EventSource;
use trace_core::record::{RowBatch, RowGauge, Value};
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

/// Reads `domain` for `ids` and checks every row against the Rust twin, streaming (nothing but one
/// fetch and one container's expected rows is held): the rows of the known ids, ordered by container
/// (as the domain orders them within one), in non-empty fetches of at most `fetch` rows, and no fetch
/// after the end. Returns the number of rows.
pub async fn assert_twin_rows(
    source: &dyn EventSource,
    domain: Domain,
    ids: &[ContainerId],
    fetch: usize,
) -> u64 {
    let mut indexes: Vec<u64> =
        ids.iter().filter_map(|i| dataset::parse_container_index(i.as_str())).collect();
    indexes.sort_by_key(|i| dataset::container_id(*i));
    indexes.dedup();
    let mut expected = indexes.into_iter().flat_map(|i| {
        let mut rows = RowBatch::with_capacity(domain, 0);
        dataset::push_rows(domain, i, &mut rows);
        rows.rows().map(<[Value]>::to_vec).collect::<Vec<_>>()
    });
    // A count says how many rows a read gives (checked below, with the twin's rows).
    let counted = source.count(domain, ids).await.expect("count");
    let mut cursor = source.open(domain, ids).await.expect("open");
    let mut n = 0u64;
    while let Some(batch) = cursor.next_batch().await.expect("fetch") {
        assert!(!batch.is_empty(), "a fetch returned an empty batch");
        assert!(batch.len() <= fetch, "{domain}: a fetch of {} rows exceeds {fetch}", batch.len());
        for got in batch.rows() {
            let want = expected.next().unwrap_or_else(|| panic!("{domain}: row count: more than {n} rows"));
            assert_eq!(got, want.as_slice(), "{domain}: row {n} differs");
            n += 1;
        }
    }
    assert!(cursor.next_batch().await.expect("fetch").is_none(), "cursor resumed after its end");
    assert!(expected.next().is_none(), "{domain}: row count: only {n} rows");
    assert_eq!(counted, n, "{domain}: the source's count of the rows");
    n
}

/// Exact rows for sample ids in every domain, in each domain's order, in fetches of at most `fetch`
/// rows. `source` must serve the reference dataset for ids up to 114,000.
pub async fn run(source: &dyn EventSource, fetch: usize) {
    let ids = sample_ids();
    for domain in Domain::ALL {
        assert_twin_rows(source, domain, &ids, fetch).await;
    }
    // No ids, or only unknown ones: no rows.
    let unknown = [ContainerId::parse("NOPE").expect("id")];
    for domain in Domain::ALL {
        assert_eq!(assert_twin_rows(source, domain, &[], fetch).await, 0, "{domain}: rows of no ids");
        assert_eq!(
            assert_twin_rows(source, domain, &unknown, fetch).await,
            0,
            "{domain}: rows of unknown ids"
        );
    }
}

/// The two MSD views for the first 10,000 ids: exactly the twin's rows, and the row counts of
/// dataset.md (197,906 and 20,063).
pub async fn msd_views_of_the_first_10k_ids(source: &dyn EventSource, fetch: usize) {
    let ids: Vec<ContainerId> =
        (1..=10_000).map(|i| ContainerId::parse(dataset::container_id(i)).expect("id")).collect();
    let upstream = assert_twin_rows(source, Domain::UpstreamHistory, &ids, fetch).await;
    let downstream = assert_twin_rows(source, Domain::DownstreamRejects, &ids, fetch).await;
    assert_eq!((upstream, downstream), (197_906, 20_063), "(upstream_history, downstream_rejects) rows");
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
