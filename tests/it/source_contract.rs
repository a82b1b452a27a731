//! The `EventSource` contract against the embedded dataset and PostgreSQL (seeded with the reference
//! dataset by `infra/test.sh`), plus the bounded-memory read of 114,000 ids.

use trace_adapters::source::embedded::DatasetSource;
use trace_core::record::RowGauge;
use trace_core::{ContainerId, Domain};
use trace_dataset as dataset;
use trace_integration::{contract::source, pg_pool, pg_source, seeded_ids};

#[tokio::test]
async fn embedded_source_contract() {
    source::run(&DatasetSource::new(5_000), 5_000).await;
    source::run(&DatasetSource::new(7), 7).await;
}

#[tokio::test]
async fn postgres_source_contract() {
    source::run(&pg_source(5_000, None), 5_000).await;
    // A small fetch size, so containers straddle fetches and id batches.
    source::run(&pg_source(7, None), 7).await;
}

#[tokio::test]
async fn postgres_dataset_matches_the_check_figures() {
    let conn = pg_pool().get().await.expect("connect");
    let expected = dataset::totals(seeded_ids());
    for (domain, want) in Domain::ALL.iter().zip(expected) {
        let row = conn.query_one(&format!("SELECT count(*) FROM {domain}"), &[]).await.expect("count");
        assert_eq!(row.get::<_, i64>(0) as u64, want, "{domain} rows for {} ids", seeded_ids());
    }
}

/// The acceptance point: 114,000 ids stream through with at most one fetch batch of rows held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_streams_114k_ids_holding_one_fetch() {
    const FETCH: usize = 5_000;
    let ids: Vec<ContainerId> =
        (1..=seeded_ids()).map(|i| ContainerId::parse(dataset::container_id(i)).expect("id")).collect();
    let conn = pg_pool().get().await.expect("connect");
    for domain in Domain::ALL {
        let gauge = RowGauge::new();
        let source = pg_source(FETCH, Some(gauge.clone()));
        let (rows, peak) = source::stream_counting(&source, &gauge, domain, &ids).await;
        let sql: i64 = conn
            .query_one(
                &format!("SELECT count(*) FROM {domain} WHERE container_id = ANY($1)"),
                &[&ids.iter().map(|i| i.as_str()).collect::<Vec<_>>()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, sql as u64, "{domain}: rows streamed vs SQL count");
        assert!(peak <= FETCH, "{domain}: {peak} rows held at once, more than one fetch of {FETCH}");
        if domain == Domain::History {
            // ~20 rows per id: every id batch fills whole fetches, so the gauge must have seen one.
            assert_eq!(peak, FETCH, "history: the gauge did not see a full fetch");
        }
        eprintln!("{domain}: {rows} rows, at most {peak} held");
    }
}
