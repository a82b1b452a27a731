//! `GET /api/trace/job/{id}/chunks` on the local stack (LocalStack presigns): the list matches the
//! manifest; every URL serves the stored chunk to a plain HTTP GET with no credentials, which decodes
//! to the database's records; `curl --compressed` (and, when `node` is installed, a browser-style
//! `fetch()`) turns a URL into the NDJSON with no project code; ownership, unfinished jobs and missing
//! credentials answer as on the other result routes; `trace stream` prints the same bytes through the
//! chunk URLs and through the stream route; and (with `TRACE_TEST_IDS` >= 114,000) the whole
//! 114,000-id MSD job is read by the client library through the URLs, 4 at a time.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use trace_client::{ChunkList, Client, ClientConfig, StreamLine};
use trace_core::layout::{self, Manifest};
use trace_core::ports::ChunkStore;
use trace_core::{Domain, JobId};
use trace_dataset::container_id;
use trace_integration::database::{digest_db, digest_json, Digest};
use trace_integration::system::{binary, http_client, Options, System, API_KEY, OTHER_API_KEY};
use trace_integration::{pg_pool, seeded_ids};

fn ids(n: u64) -> Vec<String> {
    (1..=n).map(container_id).collect()
}

/// Submits `body` (it must become a job) and waits for it to finish; its id.
async fn finished_job(system: &System, body: &Value, timeout: Duration) -> String {
    let (code, accepted) = system.submit(body).await;
    assert_eq!(code, 202, "{accepted}");
    let job = accepted["job_id"].as_str().expect("job_id").to_owned();
    let status = system.wait_terminal(&job, timeout).await;
    assert_eq!(status["status"], "finished", "{status}");
    job
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn client(system: &System) -> Client {
    trace_adapters::tls::install_provider();
    let mut config = ClientConfig::new(&system.stream);
    config.auth = trace_client::Auth::api_key(API_KEY);
    Client::new(config).expect("client")
}

/// Adds a chunk's records (its NDJSON) to `digest`.
fn add_records(digest: &mut BTreeMap<Domain, Digest>, domain: Domain, records: &[Value]) {
    for (d, part) in digest_json(records.iter().map(|r| (domain, r))) {
        let acc = digest.entry(d).or_default();
        acc.count += part.count;
        acc.sum = acc.sum.wrapping_add(part.sum);
        acc.xor ^= part.xor;
    }
}

fn records_of(ndjson: &[u8]) -> Vec<Value> {
    ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a record is JSON"))
        .collect()
}

/// Small chunks (7,000 records) split into stream lines of 3,000: several chunks per domain, and
/// lines that do not follow the chunks' boundaries.
fn small_chunks() -> Options {
    Options {
        env: vec![
            ("TRACE_ASYNC_CID_THRESHOLD", "10".to_owned()),
            ("TRACE_CHUNK_RECORDS", "7000".to_owned()),
            ("TRACE_STREAM_BATCH_SIZE", "3000".to_owned()),
        ],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_urls_serve_the_manifest_s_chunks_equal_to_the_database() {
    let system = System::start(small_chunks()).await;
    let ids = ids(seeded_ids().min(2000));
    let domains = Domain::BASE.to_vec();
    let job =
        finished_job(&system, &json!({ "container_ids": ids, "domains": domains }), Duration::from_secs(300))
            .await;

    let started = chrono::Utc::now().timestamp();
    let (code, body) = get(&system.http, &format!("{}/api/trace/job/{job}/chunks", system.stream)).await;
    assert_eq!(code, 200, "{body}");
    let list: ChunkList = serde_json::from_value(body).expect("the documented answer");
    let manifest: Manifest = serde_json::from_slice(
        &system.store.get(&layout::manifest_key(&job.parse().expect("id"))).await.expect("manifest"),
    )
    .expect("manifest JSON");

    // The list is the manifest's: order, counts, sizes, checksums.
    assert_eq!(list.job_id, manifest.job_id);
    assert_eq!(
        (list.profile, list.total_records, list.checksum),
        (manifest.profile, manifest.total_records, manifest.checksum)
    );
    assert_eq!((list.stream_batch_size, list.expires_in_seconds), (3000, 900));
    assert!((list.expires_at - started - 900).abs() <= 5, "expires_at {}", list.expires_at);
    assert_eq!((list.from, list.next_from), (0, None));
    assert_eq!(list.domains.iter().map(|d| d.domain).collect::<Vec<_>>(), domains);
    let mut chunks = 0;
    for (d, m) in list.domains.iter().zip(&manifest.domains) {
        assert_eq!((d.domain, d.records, d.chunks.len()), (m.domain, m.records, m.chunks.len()));
        for (i, (link, entry)) in d.chunks.iter().zip(&m.chunks).enumerate() {
            assert_eq!(link.index, i as u64);
            assert_eq!(
                (link.records, link.bytes, link.crc32, link.encoding, Some(link.stored_bytes)),
                (entry.records, entry.bytes, entry.crc32, entry.encoding, entry.stored_bytes),
                "{} chunk {i}",
                d.domain
            );
            assert!(
                link.url.starts_with("http") && link.url.contains("X-Amz-Signature="),
                "presigned: {}",
                link.url
            );
        }
        chunks += d.chunks.len() as u64;
    }
    assert_eq!(list.chunks_total, chunks);
    assert!(list.domains[0].chunks.len() >= 2, "several chunks in a domain: {:?}", list.domains[0]);

    // Every URL, read with no credentials and no decompression: the stored gzip, with the headers
    // a browser needs; decoded and checked, the database's records.
    let anonymous = http_client(None);
    let mut digest = BTreeMap::new();
    let mut first_ndjson = None;
    for d in &list.domains {
        for link in &d.chunks {
            let r = anonymous.get(&link.url).send().await.expect("GET chunk");
            assert_eq!(r.status().as_u16(), 200);
            let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert_eq!(header("content-encoding").as_deref(), Some("gzip"));
            assert_eq!(header("content-type").as_deref(), Some("application/x-ndjson"));
            let stored = r.bytes().await.expect("body");
            let ndjson = link.entry().decode(stored).expect("size, gzip and CRC-32 as listed");
            add_records(&mut digest, d.domain, &records_of(&ndjson));
            first_ndjson.get_or_insert_with(|| (link.url.clone(), ndjson));
        }
    }
    let expected = digest_db(&pg_pool(), &domains, &ids).await;
    for d in &domains {
        assert_eq!(
            digest.get(d).copied().unwrap_or_default(),
            expected[d],
            "{d}: the chunks vs the database"
        );
    }

    // A standard tool decodes a URL to the NDJSON: curl (required), and node's fetch() as a browser's
    // (when node is installed).
    let (url, ndjson) = first_ndjson.expect("a chunk");
    let curl =
        Command::new("curl").args(["--compressed", "-sS", "--fail", &url]).output().expect("curl runs");
    assert!(curl.status.success(), "curl: {}", String::from_utf8_lossy(&curl.stderr));
    assert!(curl.stdout == ndjson, "curl --compressed gives the chunk's NDJSON");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/read-chunk-url.mjs");
    match Command::new("node").arg(script).arg(&url).output() {
        Ok(node) => {
            assert!(node.status.success(), "node: {}", String::from_utf8_lossy(&node.stderr));
            assert!(node.stdout == ndjson, "node's fetch() gives the chunk's NDJSON");
        }
        Err(e) => eprintln!("node is not installed ({e}): only curl checked"),
    }

    // The client's reader gives the stream route's lines, one for one.
    let client = client(&system);
    let job_id: JobId = job.parse().expect("id");
    let through_stream: Vec<StreamLine> =
        client.stream(&job_id).map(|l| l.expect("stream line")).collect().await;
    let through_chunks: Vec<StreamLine> =
        client.read_chunks(&job_id, 3).map(|l| l.expect("chunk line")).collect().await;
    assert!(through_chunks.len() > 2 * chunks as usize, "chunks of 7,000 in lines of 3,000");
    assert!(through_chunks == through_stream, "the chunk reader's lines differ from the stream's");

    // The unparsed pieces write the stream route's own bytes.
    let raw_stream = system
        .http
        .get(format!("{}/api/trace/job/{job}/stream", system.stream))
        .send()
        .await
        .expect("stream")
        .bytes()
        .await
        .expect("stream body");
    let list = client.chunks(&job_id).await.expect("chunk list");
    let mut pieces = client.read_chunk_pieces(list, 3, |_| {});
    let mut raw_chunks = Vec::new();
    while let Some(piece) = pieces.next().await {
        match piece.expect("piece") {
            trace_client::Piece::Line(line) => line.write_to(&mut raw_chunks),
            trace_client::Piece::Records(block) => {
                block.write_lines(&mut raw_chunks);
            }
        }
    }
    assert!(raw_chunks == raw_stream, "the chunk reader's bytes differ from the stream route's");

    // `trace stream` prints the stream route's bytes either way.
    let run = |via: &str, parallel: &str| {
        let out = Command::new(binary("trace"))
            .args(["--url", &system.stream, "-q", "stream", &job, "--via", via, "--parallel", parallel])
            .env("TRACE_API_KEY", API_KEY)
            .env_remove("TRACE_API_URL")
            .env_remove("TRACE_STREAM_URL")
            .output()
            .expect("trace runs");
        assert!(out.status.success(), "trace --via {via}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let (via_chunks, via_stream) = (run("chunks", "4"), run("stream", "4"));
    assert!(!via_chunks.is_empty());
    assert!(via_chunks == via_stream, "trace stream --via chunks and --via stream print different bytes");
    assert!(via_chunks == raw_stream, "trace stream prints other bytes than the stream route sends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunks_route_answers_like_the_other_result_routes() {
    let system = System::start(Options {
        env: vec![("TRACE_ASYNC_CID_THRESHOLD", "1".to_owned())],
        no_workers: true,
        ..Default::default()
    })
    .await;
    // No worker: the job stays queued.
    let (code, accepted) = system.submit(&json!({ "container_ids": ids(3), "domains": ["holds"] })).await;
    assert_eq!(code, 202, "{accepted}");
    let job = accepted["job_id"].as_str().expect("job_id").to_owned();
    let chunks = format!("{}/api/trace/job/{job}/chunks", system.stream);
    let (code, body) = get(&system.http, &chunks).await;
    assert_eq!((code, body["code"].as_str()), (409, Some("JOB_NOT_COMPLETE")), "{body}");
    assert_eq!(body["status"], "queued");
    // Another caller's job is an unknown one, on both routes.
    for url in [chunks.clone(), format!("{chunks}/holds/0")] {
        let (code, body) = get(&http_client(Some(OTHER_API_KEY)), &url).await;
        assert_eq!((code, body["code"].as_str()), (404, Some("JOB_NOT_FOUND")), "{url}: {body}");
        let (code, body) = get(&http_client(None), &url).await;
        assert_eq!((code, body["code"].as_str()), (401, Some("UNAUTHORIZED")), "{url}: {body}");
    }
    let unknown = JobId::new();
    let (code, body) = get(&system.http, &format!("{}/api/trace/job/{unknown}/chunks", system.stream)).await;
    assert_eq!((code, body["code"].as_str()), (404, Some("JOB_NOT_FOUND")), "{body}");
}

/// The acceptance case: every id of the 114,000-id dataset as one MSD job, read completely by the
/// client library through the presigned URLs with 4 chunks in flight, equal to the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_114k_job_is_read_through_presigned_urls_equal_to_the_database() {
    if seeded_ids() < 114_000 {
        eprintln!("skipped: TRACE_TEST_IDS={} (needs a database seeded with 114,000 ids)", seeded_ids());
        return;
    }
    let system = System::start(Options::default()).await;
    let ids = ids(114_000);
    let submitted = Instant::now();
    let job = finished_job(
        &system,
        &json!({ "container_ids": ids, "profile": "mid_section_defect" }),
        Duration::from_secs(1200),
    )
    .await;
    let ran = submitted.elapsed();
    let job_id: JobId = job.parse().expect("id");
    let client = client(&system);

    let started = Instant::now();
    let list = client.chunks(&job_id).await.expect("chunk list");
    let chunks = list.chunks_total;
    let domains: Vec<Domain> = list.domains.iter().map(|d| d.domain).collect();
    let mut lines = client.read_chunk_list(list, 4, |r| eprintln!("chunk retried: {r:?}"));
    let mut digest = BTreeMap::new();
    let (mut count, mut bytes, mut complete) = (0u64, 0u64, false);
    let mut next_batch: BTreeMap<Domain, u64> = BTreeMap::new();
    while let Some(line) = lines.next().await {
        let line = line.expect("a line");
        bytes += serde_json::to_vec(&line).expect("JSON").len() as u64 + 1;
        match &line {
            StreamLine::Records { domain, batch, data, .. } => {
                let next = next_batch.entry(*domain).or_default();
                assert_eq!(*batch, *next, "{domain}: batches in order");
                *next += 1;
                count += data.len() as u64;
                add_records(&mut digest, *domain, data);
            }
            StreamLine::Complete { total_records } => {
                assert_eq!(*total_records, count);
                complete = true;
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    assert!(complete, "no complete line");
    eprintln!(
        "114,000-id MSD job {job}: ran {ran:.1?}; read through {chunks} presigned chunk URLs, 4 in flight: \
         {count} records, {:.0} MB of stream lines in {took:.2?} ({:.0} MB/s); retries {}",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / took.as_secs_f64(),
        lines.resumes()
    );
    let expected = digest_db(&pg_pool(), &domains, &ids).await;
    for d in &domains {
        assert_eq!(digest.get(d).copied().unwrap_or_default(), expected[d], "{d}: read vs the database");
    }
}
