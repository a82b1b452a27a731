//! The `EventSource` contract against the embedded dataset and PostgreSQL (seeded with the reference
//! dataset by `infra/test.sh`), the MSD views' rows for 10,000 ids against the Rust twin and an SQL
//! oracle, plus the bounded-memory read of 114,000 ids.

use trace_adapters::source::embedded::DatasetSource;
use trace_adapters::source::postgres::PgSource;
use trace_core::ports::EventSource;
use trace_core::record::RowGauge;
use trace_core::{ContainerId, Domain};
use trace_dataset as dataset;
use trace_integration::database::{digest_db, digest_json, relation};
use trace_integration::{
    contract::source, pg_connection_is_encrypted, pg_pool, pg_source, pg_tls_pool, seeded_ids,
};

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

/// The same contract over TLS with `sslmode=verify-full`: the certificate chained to the stack's CA
/// and naming `localhost`.
#[tokio::test]
async fn postgres_verify_full_source_contract() {
    let pool = pg_tls_pool();
    assert!(pg_connection_is_encrypted(&pool).await, "verify-full connected without TLS");
    source::run(&PgSource::new(pool.clone(), 5_000, 1000), 5_000).await;
    source::run(&PgSource::new(pool, 7, 1000), 7).await;
}

#[tokio::test]
async fn embedded_msd_views_of_10k_ids_are_the_twin_s_rows() {
    source::msd_views_of_the_first_10k_ids(&DatasetSource::new(5_000), 5_000).await;
}

#[tokio::test]
async fn postgres_msd_views_of_10k_ids_are_the_twin_s_rows() {
    source::msd_views_of_the_first_10k_ids(&pg_source(5_000, None), 5_000).await;
}

/// The system's SQL of the MSD views against the support's own SQL of them (`database::relation`).
#[tokio::test]
async fn postgres_msd_views_of_10k_ids_match_an_sql_oracle() {
    let ids: Vec<String> = (1..=10_000).map(dataset::container_id).collect();
    let container_ids: Vec<ContainerId> =
        ids.iter().map(|i| ContainerId::parse(i.clone()).expect("id")).collect();
    let views = [Domain::UpstreamHistory, Domain::DownstreamRejects];
    let source = pg_source(5_000, None);
    let mut records = Vec::new();
    for domain in views {
        let mut cursor = source.open(domain, &container_ids).await.expect("open");
        while let Some(batch) = cursor.next_batch().await.expect("fetch") {
            for row in 0..batch.len() {
                let mut json = Vec::new();
                batch.write_row_json(row, &mut json);
                records.push((domain, serde_json::from_slice::<serde_json::Value>(&json).expect("json")));
            }
        }
    }
    let streamed = digest_json(records.iter().map(|(d, r)| (*d, r)));
    let oracle = digest_db(&pg_pool(), &views, &ids).await;
    assert_eq!(streamed, oracle);
    assert_eq!(oracle[&Domain::UpstreamHistory].count, 197_906);
    assert_eq!(oracle[&Domain::DownstreamRejects].count, 20_063);
}

#[tokio::test]
async fn postgres_dataset_matches_the_check_figures() {
    let conn = pg_pool().get().await.expect("connect");
    let expected = dataset::totals(Domain::ALL, seeded_ids());
    for (domain, want) in Domain::ALL.iter().zip(expected) {
        let sql = format!("SELECT count(*) FROM {}", relation(*domain));
        let row = conn.query_one(&sql, &[]).await.expect("count");
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
                &format!("SELECT count(*) FROM {} WHERE container_id = ANY($1)", relation(domain)),
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
