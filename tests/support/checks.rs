//! Checks the black-box tests share: the stream's line order, a job's records against the database,
//! waiting for a job to run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trace_core::Domain;
use trace_dataset::container_id;

use crate::database::{count, digest_db, digest_json};
use crate::pg_pool;
use crate::system::System;

/// The first `n` container ids of the reference dataset.
pub fn ids(n: u64) -> Vec<String> {
    (1..=n).map(container_id).collect()
}

/// Environment pairs as [`Options::env`](crate::system::Options) takes them.
pub fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Checks the documented line order and returns the records per domain, in stream order.
pub fn check_stream(
    job_id: &str,
    lines: &[Value],
    domains: &[Domain],
    msd: bool,
) -> BTreeMap<Domain, Vec<Value>> {
    let mut it = lines.iter();
    let meta = it.next().expect("a meta line");
    assert_eq!(meta["type"], "meta");
    assert_eq!(meta["job_id"], job_id);
    let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
    assert_eq!(meta["domains"], json!(names));
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    for domain in domains {
        let start = it.next().expect("domain_start");
        assert_eq!(
            (start["type"].as_str(), start["domain"].as_str()),
            (Some("domain_start"), Some(domain.as_str()))
        );
        let expected_total = start["total"].as_u64().expect("total");
        let mut records = Vec::new();
        let mut batch = 0;
        let end = loop {
            let line = it.next().expect("records or domain_end");
            if line["type"] != "records" {
                break line;
            }
            assert_eq!(line["domain"], domain.as_str());
            assert_eq!(line["batch"], batch, "batches count from 0 without gaps");
            let data = line["data"].as_array().expect("data");
            assert_eq!(line["count"].as_u64(), Some(data.len() as u64));
            assert!(data.len() <= 5000, "a records line holds at most one chunk");
            records.extend(data.iter().cloned());
            batch += 1;
        };
        assert_eq!(
            (end["type"].as_str(), end["domain"].as_str()),
            (Some("domain_end"), Some(domain.as_str()))
        );
        assert_eq!(end["count"].as_u64(), Some(records.len() as u64));
        assert_eq!(expected_total, records.len() as u64, "{domain}: domain_start total");
        total += records.len() as u64;
        out.insert(*domain, records);
    }
    if msd {
        assert_eq!(it.next().expect("aggregation")["type"], "aggregation");
    }
    let complete = it.next().expect("complete");
    assert_eq!(complete["type"], "complete");
    assert_eq!(complete["total_records"].as_u64(), Some(total));
    assert!(it.next().is_none(), "lines after complete");
    out
}

/// Waits until a job is started and has written records (and has not finished yet).
pub async fn wait_running(system: &System, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, s) = system.get_status(&format!("/api/trace/job/{job}")).await;
        if s["status"] == "started" && s["progress_detail"]["records_written"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        assert_ne!(s["status"], "finished", "the job finished before the test could act on it");
        assert!(Instant::now() < deadline, "job did not start: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The records of each domain equal the database's rows for `ids` (count and checksum).
pub async fn assert_matches_database(records: &BTreeMap<Domain, Vec<Value>>, ids: &[String]) {
    let pool = pg_pool();
    let domains: Vec<Domain> = records.keys().copied().collect();
    let streamed = digest_json(records.iter().flat_map(|(d, rs)| rs.iter().map(move |r| (*d, r))));
    let expected = digest_db(&pool, &domains, ids).await;
    for d in &domains {
        assert_eq!(
            streamed.get(d).map(|x| x.count).unwrap_or(0),
            count(&pool, *d, ids).await,
            "{d}: records vs SQL count"
        );
        assert_eq!(
            streamed.get(d).copied().unwrap_or_default(),
            expected[d],
            "{d}: checksum of streamed records vs database"
        );
    }
}

/// The records of a finished job's stored chunks (each checked against its manifest entry) equal the
/// database's rows for `ids` (count and checksum per domain), read one chunk at a time: the check of
/// a job too large to hold as JSON values (4.7 million records of the 114,000-id job).
pub async fn assert_chunks_match_database(
    store: &trace_adapters::store::s3::S3Store,
    job: &str,
    ids: &[String],
    domains: &[Domain],
) {
    use trace_core::ports::ChunkStore;
    let job_id = job.parse().expect("job id");
    let manifest: trace_core::layout::Manifest = serde_json::from_slice(
        &store.get(&trace_core::layout::manifest_key(&job_id)).await.expect("manifest"),
    )
    .expect("manifest JSON");
    let mut digests: BTreeMap<Domain, crate::database::Digest> = BTreeMap::new();
    for d in &manifest.domains {
        for c in &d.chunks {
            let ndjson =
                c.decode(store.get(&c.key).await.expect("chunk")).expect("the chunk matches its entry");
            for line in ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let record: Value = serde_json::from_slice(line).expect("a record");
                digests.entry(d.domain).or_default().add(&crate::database::canonical_json(d.domain, &record));
            }
        }
    }
    assert_eq!(
        digests,
        crate::database::digest_db(&pg_pool(), domains, ids).await,
        "job {job} against the database"
    );
}
