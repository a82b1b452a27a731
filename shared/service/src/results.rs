//! Reading a finished job's result: the NDJSON stream and paginated pages.
//!
//! Both start from the manifest (its presence means the result is complete). The stream reads one
//! chunk at a time and turns it into one `records` line without parsing a record; a page reads only
//! the chunks that cover it.

use bytes::Bytes;
use futures::stream::{self, Stream};
use trace_core::api::{DomainPage, EventsAnswer, RenderedRecords, ResultPage};
use trace_core::layout::{self, ChunkCorrupt, ChunkEntry, Manifest};
use trace_core::ndjson::{write_records_lines, StreamLine};
use trace_core::ports::StoreError;
use trace_core::{Domain, JobStatus, Principal, TraceError};

use crate::status::{job_store_unavailable, parse_job_id};
use crate::App;

/// Most records one page returns.
pub const MAX_PAGE: usize = 5000;

/// The manifest of a finished job `principal` may see, or the error the caller should see.
///
/// Another caller's job answers `JOB_NOT_FOUND`, the answer of an unknown id, before anything else
/// (its status included) is told. A result whose metadata has expired has no known owner: only an
/// admin may still read it.
pub async fn finished_manifest(app: &App, principal: &Principal, id: &str) -> Result<Manifest, TraceError> {
    let job_id = parse_job_id(id)?;
    let meta = app.backends.jobs.get(&job_id).await.map_err(job_store_unavailable)?;
    let visible = match &meta {
        Some(meta) => principal.may_see(&meta.owner),
        None => principal.is_admin(),
    };
    if !visible {
        return Err(TraceError::JobNotFound(id.to_owned()));
    }
    if let Some(meta) = &meta {
        if meta.status != JobStatus::Finished {
            return Err(TraceError::JobNotComplete { status: meta.status });
        }
    }
    let bytes = match app.backends.store.get(&layout::manifest_key(&job_id)).await {
        Ok(b) => b,
        // Metadata says finished but the objects are gone: expired. Neither: unknown (or long gone).
        Err(StoreError::NotFound(_)) if meta.is_some() => {
            return Err(TraceError::JobResultExpired(id.to_owned()))
        }
        Err(StoreError::NotFound(_)) => return Err(TraceError::JobNotFound(id.to_owned())),
        Err(e) => return Err(TraceError::unavailable("the result store", e)),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| TraceError::Internal(format!("manifest of {id} is unreadable: {e}")))?;
    if !manifest.is_consistent() || manifest.job_id != job_id {
        return Err(TraceError::Internal(format!("manifest of {id} is inconsistent")));
    }
    Ok(manifest)
}

/// Why a chunk of a finished job could not be read.
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    /// The chunk is gone though the manifest lists it.
    #[error("result chunk {0} is missing")]
    Missing(String),
    /// The object store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The chunk does not match its manifest entry.
    #[error(transparent)]
    Corrupt(#[from] ChunkCorrupt),
}

impl ChunkError {
    /// The code of the stream's `error` line.
    fn code(&self) -> &'static str {
        match self {
            ChunkError::Missing(_) => "CHUNK_MISSING",
            ChunkError::Store(_) => "STORE_ERROR",
            ChunkError::Corrupt(_) => "CHUNK_CORRUPT",
        }
    }
}

impl From<StoreError> for ChunkError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(key) => ChunkError::Missing(key),
            e => ChunkError::Store(e),
        }
    }
}

impl From<ChunkError> for TraceError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Store(store) => TraceError::unavailable("the result store", store),
            e => TraceError::Internal(e.to_string()),
        }
    }
}

/// Reads one chunk and checks it against its manifest entry; its NDJSON.
async fn read_chunk(app: &App, entry: &ChunkEntry) -> Result<Bytes, ChunkError> {
    let stored = app.backends.store.get(&entry.key).await?;
    Ok(entry.decode(stored)?)
}

fn line(l: &StreamLine) -> Bytes {
    let mut out = Vec::with_capacity(128);
    l.write_to(&mut out);
    Bytes::from(out)
}

enum Step {
    Meta,
    DomainStart(usize),
    /// Domain, chunk, the next `records` line's batch number.
    Chunk(usize, usize, u64),
    DomainEnd(usize),
    Aggregation,
    Complete,
    Done,
}

/// The NDJSON stream of a finished job: `meta`, per domain `domain_start` / `records`… /
/// `domain_end`, `aggregation` (MSD), `complete`. A chunk that cannot be read ends the stream with an
/// `error` line.
pub async fn stream(
    app: &App,
    principal: &Principal,
    id: &str,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, TraceError> {
    let manifest = finished_manifest(app, principal, id).await?;
    let app = app.clone();
    Ok(stream::unfold((Step::Meta, app, manifest), |(step, app, m)| async move {
        let (out, next) = match step {
            Step::Done => return None,
            Step::Meta => {
                let domains = m.domains.iter().map(|d| d.domain).collect();
                (
                    line(&StreamLine::Meta { job_id: m.job_id, profile: m.profile, domains }),
                    Step::DomainStart(0),
                )
            }
            Step::DomainStart(d) if d >= m.domains.len() => {
                let next = if m.aggregation.is_some() { Step::Aggregation } else { Step::Complete };
                return Some((Ok(Bytes::new()), (next, app, m)));
            }
            Step::DomainStart(d) => {
                let dm = &m.domains[d];
                (
                    line(&StreamLine::DomainStart { domain: dm.domain, total: dm.records }),
                    Step::Chunk(d, 0, 0),
                )
            }
            Step::Chunk(d, c, _) if c >= m.domains[d].chunks.len() => {
                return Some((Ok(Bytes::new()), (Step::DomainEnd(d), app, m)));
            }
            Step::Chunk(d, c, batch) => {
                let dm = &m.domains[d];
                match read_chunk(&app, &dm.chunks[c]).await {
                    Ok(body) => {
                        let mut out = Vec::new();
                        let batch_size = app.config.stream_batch_size as u64;
                        let (_, lines) = write_records_lines(&mut out, dm.domain, batch, &body, batch_size);
                        (Bytes::from(out), Step::Chunk(d, c + 1, batch + lines))
                    }
                    Err(e) => {
                        let (code, message) = (e.code().to_owned(), e.to_string());
                        tracing::error!(job_id = %m.job_id, code, error = &e as &dyn std::error::Error, "stream stopped");
                        (line(&StreamLine::Error { code, message }), Step::Done)
                    }
                }
            }
            Step::DomainEnd(d) => {
                let dm = &m.domains[d];
                (
                    line(&StreamLine::DomainEnd { domain: dm.domain, count: dm.records }),
                    Step::DomainStart(d + 1),
                )
            }
            Step::Aggregation => {
                let data = m.aggregation.clone().unwrap_or_default();
                (line(&StreamLine::Aggregation { data }), Step::Complete)
            }
            Step::Complete => (line(&StreamLine::Complete { total_records: m.total_records }), Step::Done),
        };
        Some((Ok(out), (next, app, m)))
    }))
}

fn parse_number(
    name: &'static str,
    value: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, TraceError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => {
            v.parse::<usize>().ok().filter(|n| *n <= max).ok_or_else(|| TraceError::InvalidParameter {
                name,
                reason: format!("{v:?} is not a whole number from 0 to {max}"),
            })
        }
    }
}

/// `GET /api/trace/job/{id}/result?domain=&offset=&limit=`: records `offset..offset+limit` of one
/// domain (the job's first when none is named; limit 1–5000, default 5000), reading only the chunks
/// that cover the page.
pub async fn page(
    app: &App,
    principal: &Principal,
    id: &str,
    domain: Option<&str>,
    offset: Option<&str>,
    limit: Option<&str>,
) -> Result<Vec<u8>, TraceError> {
    let offset = parse_number("offset", offset, 0, usize::MAX)? as u64;
    let limit = parse_number("limit", limit, MAX_PAGE, MAX_PAGE)?;
    if limit == 0 {
        return Err(TraceError::InvalidParameter { name: "limit", reason: "must be at least 1".into() });
    }
    let requested = match domain.filter(|d| !d.is_empty()) {
        Some(d) => {
            Some(d.parse::<Domain>().map_err(|_| TraceError::UnknownDomain(d.chars().take(64).collect()))?)
        }
        None => None,
    };
    let manifest = finished_manifest(app, principal, id).await?;
    let dm = match requested {
        Some(d) => manifest.domain(d).ok_or_else(|| TraceError::InvalidParameter {
            name: "domain",
            reason: format!("job {id} has no domain {d}"),
        })?,
        None => {
            manifest.domains.first().ok_or_else(|| TraceError::Internal("manifest has no domains".into()))?
        }
    };
    let end = (offset + limit as u64).min(dm.records);
    let mut data = RenderedRecords::default();
    let mut first = 0u64;
    for entry in &dm.chunks {
        let last = first + entry.records;
        if last > offset && first < end {
            let body = read_chunk(app, entry).await?;
            let skip = offset.saturating_sub(first) as usize;
            let take = (end.min(last) - first.max(offset)) as usize;
            for record in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).skip(skip).take(take) {
                data.push(record);
            }
        }
        if last >= end {
            break;
        }
        first = last;
    }
    let capacity = data.byte_len() + 256;
    let (domain, total) = (dm.domain, dm.records);
    let page = DomainPage { count: data.count(), data, total, offset, limit: limit as u64 };
    let answer: ResultPage<RenderedRecords> = EventsAnswer::new(vec![(domain, page)], manifest.aggregation);
    answer
        .to_json(capacity)
        .map_err(|e| TraceError::Internal(format!("a result page of {id} is not JSON: {e}")))
}
