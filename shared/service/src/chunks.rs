//! A finished job's result as chunk URLs: `GET /api/trace/job/{id}/chunks` lists the stored chunks per
//! domain in result order, each with a URL that serves its bytes, so a reader fetches the result at
//! object-store speed, several chunks at once, instead of through one Lambda stream (200 MB cap,
//! 2 MB/s after the first 6 MB).
//!
//! The URLs are presigned GETs of the objects (`TRACE_CHUNK_URL_TTL_SECONDS`), which S3 serves with
//! `Content-Type: application/x-ndjson` and `Content-Encoding: gzip`: a browser's `fetch()` or
//! `curl --compressed` gives the NDJSON. A store that cannot presign (a folder on disk) gets URLs of
//! `GET /api/trace/job/{id}/chunks/{domain}/{index}` instead, which serves the same bytes with the
//! same headers (an LZ4 or plain chunk as plain NDJSON), behind the same authentication.
//!
//! The list is a buffered answer (through API Gateway in AWS, 6 MB at most once escaped), so it holds
//! chunks up to [`LIST_BUDGET`] bytes and names where the rest starts (`next_from`).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use trace_core::api::{json_string_overhead, ChunkDomain, ChunkLink, ChunkList};
use trace_core::encoding::ChunkEncoding;
use trace_core::layout::Manifest;
use trace_core::ports::{ChunkStore, StoreError};
use trace_core::{Domain, JobStatus, Principal, TraceError};

use crate::http::ApiError;
use crate::results::finished_manifest;
use crate::App;

/// Most bytes one list answer spends on its chunks, counted as Lambda carries a buffered answer (the
/// JSON as an escaped string). Well below the 6,291,556 bytes of a buffered answer, leaving room
/// for the rest of the answer (the aggregation) and the envelope. A presigned URL signed with a
/// Lambda role's session token is ~1.6 KB: about 2,000 chunks per answer; the 114,000-id job has ~190.
pub const LIST_BUDGET: usize = 4_000_000;

/// The URL of one chunk served by this API (stores without presigned URLs).
pub fn chunk_path(job: &str, domain: Domain, index: u64) -> String {
    format!("/api/trace/job/{job}/chunks/{domain}/{index}")
}

/// Bytes `value` takes in a buffered Lambda answer: its JSON plus the escaping of that JSON as a string.
fn carried_len(json: &[u8]) -> usize {
    json.len() + json_string_overhead(json)
}

/// The list answer for `manifest` from chunk `from` (over all domains, in result order): a URL per
/// chunk from `store` (presigned for `ttl`, else [`chunk_path`]), chunks up to [`LIST_BUDGET`].
pub async fn list_chunks(
    store: &dyn ChunkStore,
    manifest: &Manifest,
    from: u64,
    stream_batch_size: u64,
    ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<ChunkList, TraceError> {
    let job = manifest.job_id.to_string();
    let chunks_total: u64 = manifest.domains.iter().map(|d| d.chunks.len() as u64).sum();
    if from > chunks_total {
        return Err(TraceError::InvalidParameter {
            name: "from",
            reason: format!("the job has {chunks_total} chunks"),
        });
    }
    let mut list = ChunkList {
        job_id: manifest.job_id,
        status: JobStatus::Finished,
        profile: manifest.profile,
        total_records: manifest.total_records,
        checksum: manifest.checksum,
        stream_batch_size,
        expires_at: now.timestamp() + ttl.as_secs() as i64,
        expires_in_seconds: ttl.as_secs(),
        aggregation: manifest.aggregation.clone(),
        chunks_total,
        from,
        next_from: None,
        domains: manifest
            .domains
            .iter()
            .map(|d| ChunkDomain { domain: d.domain, records: d.records, chunks: Vec::new() })
            .collect(),
    };
    let mut spent = 0usize;
    let mut ordinal = 0u64;
    'domains: for (d, dm) in manifest.domains.iter().enumerate() {
        for (index, entry) in dm.chunks.iter().enumerate() {
            let here = ordinal;
            ordinal += 1;
            if here < from {
                continue;
            }
            let url = match store.presign_get(&entry.key, ttl).await {
                Ok(Some(url)) => url,
                Ok(None) => chunk_path(&job, dm.domain, index as u64),
                Err(e) => return Err(TraceError::unavailable("the result store", e)),
            };
            let link = ChunkLink {
                index: index as u64,
                url,
                records: entry.records,
                bytes: entry.bytes,
                stored_bytes: entry.stored_bytes.unwrap_or(entry.bytes),
                encoding: entry.encoding,
                crc32: entry.crc32,
            };
            // A link's JSON plus its comma; serialising this plain struct cannot fail.
            let cost = carried_len(&serde_json::to_vec(&link).unwrap_or_default()) + 1;
            if spent + cost > LIST_BUDGET && here > from {
                list.next_from = Some(here);
                break 'domains;
            }
            spent += cost;
            list.domains[d].chunks.push(link);
        }
    }
    Ok(list)
}

/// Query of `GET /api/trace/job/{id}/chunks`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    from: Option<String>,
}

/// `GET /api/trace/job/{id}/chunks?from=`.
pub async fn list_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let from = match q.from.as_deref().filter(|f| !f.is_empty()) {
        None => 0,
        Some(f) => f.parse::<u64>().map_err(|_| TraceError::InvalidParameter {
            name: "from",
            reason: format!("{f:?} is not a whole number"),
        })?,
    };
    let manifest = finished_manifest(&app, &principal, &id).await?;
    let batch = app.config.stream_batch_size as u64;
    let list = list_chunks(
        app.backends.store.as_ref(),
        &manifest,
        from,
        batch,
        app.config.chunk_url_ttl,
        Utc::now(),
    )
    .await?;
    let body = serde_json::to_vec(&list)
        .map_err(|e| TraceError::Internal(format!("the chunk list of {id} is not JSON: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], Body::from(body))
        .into_response())
}

/// `GET /api/trace/job/{id}/chunks/{domain}/{index}`: one chunk's bytes, for stores without URLs. A
/// gzip chunk is served as stored with `Content-Encoding: gzip` (the reader checks it against the
/// list's sizes and CRC-32); an LZ4 or plain one is decoded, checked and served as plain NDJSON.
pub async fn chunk_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path((id, domain, index)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let domain: Domain =
        domain.parse().map_err(|_| TraceError::UnknownDomain(domain.chars().take(64).collect()))?;
    let manifest = finished_manifest(&app, &principal, &id).await?;
    let dm = manifest.domain(domain).ok_or_else(|| TraceError::InvalidParameter {
        name: "domain",
        reason: format!("job {id} has no domain {domain}"),
    })?;
    let entry = index.parse::<usize>().ok().and_then(|i| dm.chunks.get(i)).ok_or_else(|| {
        TraceError::InvalidParameter {
            name: "index",
            reason: format!("{domain} of job {id} has {} chunks", dm.chunks.len()),
        }
    })?;
    let stored = match app.backends.store.get(&entry.key).await {
        Ok(b) => b,
        Err(StoreError::NotFound(key)) => {
            return Err(TraceError::Internal(format!("result chunk {key} is missing")).into())
        }
        Err(e) => return Err(TraceError::unavailable("the result store", e).into()),
    };
    let ndjson = "application/x-ndjson";
    Ok(match entry.encoding {
        ChunkEncoding::Gzip => {
            ([(header::CONTENT_TYPE, ndjson), (header::CONTENT_ENCODING, "gzip")], Body::from(stored))
                .into_response()
        }
        ChunkEncoding::Lz4 | ChunkEncoding::Plain => {
            let body: Bytes = entry.decode(stored).map_err(|e| TraceError::Internal(e.to_string()))?;
            ([(header::CONTENT_TYPE, ndjson)], Body::from(body)).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;
    use std::time::Duration;

    use async_trait::async_trait;
    use trace_core::layout::{ChunkEntry, DomainManifest};
    use trace_core::ports::ObjectInfo;
    use trace_core::{JobId, Profile};

    /// A store whose presigned URLs are as long as S3's for the given session token length (0: no
    /// token, as with long-term keys or LocalStack).
    struct Presigning {
        token_len: usize,
    }

    #[async_trait]
    impl ChunkStore for Presigning {
        async fn put(&self, _: &str, _: Bytes) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn put_new(&self, _: &str, _: Bytes) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn get(&self, _: &str) -> Result<Bytes, StoreError> {
            unimplemented!()
        }
        async fn get_range(&self, _: &str, _: Range<u64>) -> Result<Bytes, StoreError> {
            unimplemented!()
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            unimplemented!()
        }
        async fn delete_prefix(&self, _: &str) -> Result<u64, StoreError> {
            unimplemented!()
        }
        async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
            // The shape of an S3 presigned GET (virtual-hosted bucket with a 30-character name).
            let token = if self.token_len == 0 {
                String::new()
            } else {
                format!("&X-Amz-Security-Token={}", "IQoJb3JpZ2luX2VjE%2F%2B".repeat(self.token_len / 22 + 1))
            };
            Ok(Some(format!(
                "https://trace-results-0123456789ab.s3.us-east-1.amazonaws.com/{key}\
                 ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                 &X-Amz-Credential=ASIAQX4EXAMPLE7KQ2MB%2F20261130%2Fus-east-1%2Fs3%2Faws4_request\
                 &X-Amz-Date=20261130T204800Z&X-Amz-Expires={}{token}&X-Amz-SignedHeaders=host\
                 &x-id=GetObject&X-Amz-Signature={}",
                ttl.as_secs(),
                "0123456789abcdef".repeat(4)
            )))
        }
    }

    /// A manifest of `chunks` chunks over the five base domains, with the MSD-sized aggregation.
    fn manifest(chunks: usize) -> Manifest {
        let job = JobId::new();
        let domains = Domain::BASE
            .iter()
            .enumerate()
            .map(|(d, &domain)| {
                let n = chunks / Domain::BASE.len() + usize::from(d < chunks % Domain::BASE.len());
                let chunks: Vec<ChunkEntry> = (0..n)
                    .map(|i| ChunkEntry {
                        key: trace_core::layout::chunk_key(
                            &job,
                            domain,
                            trace_core::layout::ChunkSlot { shard: 0, chunk: i as u32, attempt: 1 },
                            ChunkEncoding::Gzip,
                        ),
                        records: 25_000,
                        bytes: 4_250_000,
                        crc32: 0xdead_beef,
                        encoding: ChunkEncoding::Gzip,
                        stored_bytes: Some(560_000),
                    })
                    .collect();
                DomainManifest { domain, records: 25_000 * n as u64, chunks }
            })
            .collect();
        Manifest::new(job, Profile::QueryTool, domains, None, Utc::now())
    }

    /// Bytes of the answer as Lambda carries it: the JSON as an escaped string, in quotes.
    fn carried(list: &ChunkList) -> usize {
        carried_len(&serde_json::to_vec(list).unwrap()) + 2
    }

    /// Every answer from `from` 0 on, following `next_from`.
    async fn all_answers(store: &Presigning, m: &Manifest) -> Vec<ChunkList> {
        let mut answers = Vec::new();
        let mut from = Some(0);
        while let Some(f) = from {
            let list = list_chunks(store, m, f, 5000, Duration::from_secs(900), Utc::now()).await.unwrap();
            from = list.next_from;
            answers.push(list);
        }
        answers
    }

    const LAMBDA_BUFFERED_LIMIT: usize = 6_291_556;

    #[tokio::test]
    async fn five_thousand_chunks_fit_lambda_s_buffered_limit() {
        let m = manifest(5000);
        // Without a session token (long-term keys, LocalStack): one answer.
        let answers = all_answers(&Presigning { token_len: 0 }, &m).await;
        assert_eq!(answers.len(), 1);
        let size = carried(&answers[0]);
        eprintln!("5,000 chunks, URLs without a session token: one answer of {size} bytes carried");
        assert!(size < LAMBDA_BUFFERED_LIMIT, "{size}");

        // With a Lambda role's session token (~1,100 characters, more once URL-encoded) one answer
        // would be over the limit: the list is split, every answer under it, every chunk listed once
        // in order.
        let answers = all_answers(&Presigning { token_len: 1_200 }, &m).await;
        let sizes: Vec<usize> = answers.iter().map(carried).collect();
        eprintln!("5,000 chunks, URLs with a session token: answers of {sizes:?} bytes carried");
        assert!(answers.len() > 1);
        for size in &sizes {
            assert!(*size < LAMBDA_BUFFERED_LIMIT, "{size}");
        }
        let mut listed = Vec::new();
        for a in &answers {
            assert_eq!(a.chunks_total, 5000);
            for d in &a.domains {
                listed.extend(d.chunks.iter().map(|c| (d.domain, c.index)));
            }
        }
        let expected: Vec<(Domain, u64)> =
            m.domains.iter().flat_map(|d| (0..d.chunks.len() as u64).map(move |i| (d.domain, i))).collect();
        assert_eq!(listed, expected);
        assert_eq!(answers.last().unwrap().next_from, None);
    }

    #[tokio::test]
    async fn the_114k_job_is_one_answer_and_a_store_without_urls_gets_the_service_s_paths() {
        let m = manifest(190);
        let answers = all_answers(&Presigning { token_len: 1_200 }, &m).await;
        assert_eq!(answers.len(), 1);
        eprintln!("190 chunks, URLs with a session token: {} bytes carried", carried(&answers[0]));
        let a = &answers[0];
        assert_eq!((a.chunks_total, a.from, a.next_from), (190, 0, None));
        assert_eq!(a.expires_in_seconds, 900);
        let first = &a.domains[0].chunks[0];
        assert!(first.url.starts_with("https://") && first.url.contains(&m.domains[0].chunks[0].key));
        assert_eq!((first.stored_bytes, first.encoding), (560_000, ChunkEncoding::Gzip));

        let dir = std::env::temp_dir().join(format!("chunks-{}", uuid::Uuid::new_v4().simple()));
        let fs = trace_adapters::store::fs::FsStore::new(&dir);
        let list = list_chunks(&fs, &m, 187, 5000, Duration::from_secs(60), Utc::now()).await.unwrap();
        let listed: Vec<&ChunkLink> = list.domains.iter().flat_map(|d| &d.chunks).collect();
        assert_eq!(listed.len(), 3);
        let last = m.domains.last().unwrap();
        assert_eq!(
            listed[2].url,
            chunk_path(&m.job_id.to_string(), last.domain, last.chunks.len() as u64 - 1)
        );
        assert!(list_chunks(&fs, &m, 191, 5000, Duration::from_secs(60), Utc::now()).await.is_err());
    }
}
