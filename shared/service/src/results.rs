//! Reading a finished job's result: the NDJSON stream and paginated pages.
//!
//! Both start from the manifest (its presence means the result is complete). The stream reads one
//! chunk at a time and turns it into one `records` line without parsing a record; a page reads only
//! the chunks that cover it.

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use trace_core::api::{DomainPage, EventsAnswer, RenderedRecords, ResultPage};
use trace_core::config::StreamCompression;
use trace_core::layout::{self, ChunkCorrupt, ChunkEntry, Manifest};
use trace_core::ndjson::{write_records_lines, LineAligner, StreamLine};
use trace_core::paging::PageQuery;
use trace_core::ports::StoreError;
use trace_core::stream_size;
use trace_core::{JobStatus, Principal, TraceError};

use crate::gzip_stream::{self, GzipPieces};
use crate::status::{job_store_unavailable, parse_job_id};
use crate::App;

pub use trace_core::paging::MAX_PAGE;

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

pub(crate) fn line(l: &StreamLine) -> Bytes {
    let mut out = Vec::with_capacity(128);
    l.write_to(&mut out);
    Bytes::from(out)
}

/// Where the lines of a stream are (the followed stream goes on from where its live part stopped).
pub(crate) enum Step {
    Meta,
    DomainStart(usize),
    /// Domain, chunk.
    Chunk(usize, usize),
    DomainEnd(usize),
    Aggregation,
    Complete,
    Done,
}

/// The stream route's answer: its body, and what the handler tells in headers.
pub struct StreamAnswer<S> {
    /// Size of the plain NDJSON stream (`x-trace-stream-bytes`), exact, known before the first byte
    /// (not for a followed stream: its job is still running).
    pub bytes: Option<u64>,
    /// Whether the body is gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// The body.
    pub body: S,
}

/// How a result of `plain` bytes (gzip estimated at `gzip_estimate`) is sent under `limit`: plain or gzip
/// (whenever the caller accepts it), or not at all (None).
pub fn plan(plain: u64, gzip_estimate: u64, gzip_accepted: bool, limit: Option<u64>) -> Option<bool> {
    let fits = |size: u64| limit.is_none_or(|limit| size <= limit);
    if fits(plain) {
        Some(gzip_accepted)
    } else if gzip_accepted && fits(gzip_estimate.saturating_add(END_RESERVE)) {
        Some(true)
    } else {
        None
    }
}

/// Whether a stream goes out as gzip: compression is on (`TRACE_STREAM_COMPRESSION`) and the caller's
/// `Accept-Encoding` accepts it.
pub(crate) fn gzip_wanted(app: &App, accept_encoding: Option<&str>) -> bool {
    app.config.stream_compression == StreamCompression::Gzip && gzip_stream::accepts_gzip(accept_encoding)
}

/// Bytes kept free under the limit while sending gzip, for the end: the `error` line of a stream that
/// would pass the limit (about 250 bytes, compressed or stored) and the member's last block and trailer.
const END_RESERVE: u64 = 1024;

/// The NDJSON stream of a finished job: `meta`, per domain `domain_start` / `records`… /
/// `domain_end`, `aggregation` (MSD), `complete`. A chunk that cannot be read ends the stream with an
/// `error` line.
///
/// Before the first byte its size is known from the manifest ([`stream_size::plain_len`]). The body is
/// gzip when compression is on (`TRACE_STREAM_COMPRESSION`) and `accept_encoding` accepts it. A result
/// that cannot fit `TRACE_STREAM_MAX_BYTES` — plain, or gzip as estimated
/// ([`stream_size::gzip_estimate`]) when accepted — is refused: `RESULT_TOO_LARGE_FOR_STREAM`. Should
/// the gzip bytes pass the limit all the same, the stream ends with an `error` line of that code where
/// Lambda would have cut it. One chunk is held at a time.
pub async fn stream(
    app: &App,
    principal: &Principal,
    id: &str,
    accept_encoding: Option<&str>,
) -> Result<StreamAnswer<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>, TraceError> {
    let manifest = finished_manifest(app, principal, id).await?;
    let batch_size = app.config.stream_batch_size as u64;
    let plain = stream_size::plain_len(&manifest, batch_size);
    let gzip_accepted = gzip_wanted(app, accept_encoding);
    let limit = app.config.stream_max_bytes;
    let estimate = stream_size::gzip_estimate(&manifest, batch_size);
    let Some(gzip) = plan(plain, estimate, gzip_accepted, limit) else {
        tracing::info!(
            job_id = id,
            bytes = plain,
            gzip_estimate = estimate,
            limit,
            gzip_accepted,
            "result too large for the stream"
        );
        return Err(TraceError::ResultTooLargeForStream {
            job_id: id.to_owned(),
            bytes: plain,
            limit: limit.unwrap_or(u64::MAX),
            gzip_accepted,
        });
    };
    // The plain size is exact: only gzip, estimated, is watched.
    let sender = Sender::new(app, &manifest.job_id.to_string(), gzip, if gzip { limit } else { None });
    let pieces = lines_from(app.clone(), manifest, Step::Meta, None);
    Ok(StreamAnswer { bytes: Some(plain), gzip, body: body(pieces, sender) })
}

/// The body of a stream: `pieces` (plain NDJSON) through `sender`.
pub(crate) fn body(
    pieces: impl Stream<Item = Bytes> + Send + 'static,
    sender: Sender,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces = Box::pin(pieces);
    stream::unfold((pieces, sender, false), |(mut pieces, mut sender, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match pieces.next().await {
                Some(piece) if piece.is_empty() => continue,
                Some(piece) => {
                    let (out, ended) = sender.send(piece);
                    return Some((Ok(out), (pieces, sender, ended)));
                }
                None => {
                    let out = sender.finish();
                    return (!out.is_empty()).then(|| (Ok(out), (pieces, sender, true)));
                }
            }
        }
    })
}

/// Encodes the stream's pieces and keeps its bytes under the limit (a finished job's plain stream has
/// an exact size, checked before the first byte: it is sent without one).
pub(crate) struct Sender {
    gzip: Option<GzipPieces>,
    limit: Option<u64>,
    sent: u64,
    /// The `error` line that ends a stream that would pass the limit.
    too_large: Bytes,
    job_id: String,
}

impl Sender {
    /// A sender of `job`'s stream, gzip or not, ended before it passes `limit` bytes.
    pub(crate) fn new(app: &App, job: &str, gzip: bool, limit: Option<u64>) -> Sender {
        let too_large = line(&StreamLine::Error {
            code: "RESULT_TOO_LARGE_FOR_STREAM".to_owned(),
            message: format!(
                "the stream would pass its limit of {} bytes: read the result through GET /api/trace/job/{job}/chunks",
                app.config.stream_max_bytes.unwrap_or(u64::MAX)
            ),
        });
        Sender { gzip: gzip.then(GzipPieces::default), limit, sent: 0, too_large, job_id: job.to_owned() }
    }

    /// The bytes of one piece, and whether the stream ends with them: instead of a piece that would leave
    /// less than [`END_RESERVE`] under the limit, the `error` line and the end of the gzip member.
    fn send(&mut self, plain: Bytes) -> (Bytes, bool) {
        let room = self.limit.map_or(u64::MAX, |limit| limit.saturating_sub(self.sent));
        let Some(gz) = &mut self.gzip else {
            if (plain.len() as u64).saturating_add(END_RESERVE) > room {
                tracing::warn!(job_id = %self.job_id, sent = self.sent, limit = self.limit, "stream stopped: its bytes would pass the limit");
                self.sent += self.too_large.len() as u64;
                return (self.too_large.clone(), true);
            }
            self.sent += plain.len() as u64;
            return (plain, false);
        };
        let mut out = gz.compress(&plain);
        let ended = (out.len() as u64).saturating_add(END_RESERVE) > room;
        if ended {
            tracing::warn!(job_id = %self.job_id, sent = self.sent, limit = self.limit, "stream stopped: its bytes would pass the limit");
            // The piece's bytes are dropped (a full flush ended the previous piece, so nothing refers
            // to them): the error line and the end follow what was sent.
            out = gz.compress(&self.too_large);
            gz.commit(&self.too_large);
            out.extend_from_slice(&gz.finish());
        } else {
            gz.commit(&plain);
        }
        self.sent += out.len() as u64;
        (Bytes::from(out), ended)
    }

    /// The end of the body (gzip's trailer; nothing for plain NDJSON).
    fn finish(&mut self) -> Bytes {
        let out = self.gzip.as_mut().map(GzipPieces::finish).unwrap_or_default();
        self.sent += out.len() as u64;
        Bytes::from(out)
    }
}

/// The plain NDJSON of the stream from `step` on (`aligner` holding the records of the domain in
/// progress not yet sent, if any), in pieces: one line, or the `records` lines one chunk completes
/// (read when the previous piece has been taken). Lines hold `TRACE_STREAM_BATCH_SIZE` records
/// wherever the chunks end ([`LineAligner`]): a job split into shards streams the very lines of the
/// same job run whole.
pub(crate) fn lines_from(
    app: App,
    manifest: Manifest,
    step: Step,
    aligner: Option<LineAligner>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let aligner = aligner.unwrap_or_else(|| LineAligner::new(app.config.stream_batch_size as u64));
    stream::unfold((step, app, manifest, aligner), |(step, app, m, mut aligner)| async move {
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
                return Some((Bytes::new(), (next, app, m, aligner)));
            }
            Step::DomainStart(d) => {
                let dm = &m.domains[d];
                aligner = LineAligner::new(app.config.stream_batch_size as u64);
                (line(&StreamLine::DomainStart { domain: dm.domain, total: dm.records }), Step::Chunk(d, 0))
            }
            Step::Chunk(d, c) if c >= m.domains[d].chunks.len() => {
                // The domain's last line, if its records do not fill one.
                let mut out = Vec::new();
                if let Some(block) = aligner.finish() {
                    let batch_size = app.config.stream_batch_size as u64;
                    write_records_lines(
                        &mut out,
                        m.domains[d].domain,
                        block.first_batch,
                        &block.ndjson,
                        batch_size,
                    );
                }
                return Some((Bytes::from(out), (Step::DomainEnd(d), app, m, aligner)));
            }
            Step::Chunk(d, c) => {
                let dm = &m.domains[d];
                match read_chunk(&app, &dm.chunks[c]).await {
                    Ok(body) => {
                        let mut out = Vec::new();
                        if let Some(block) = aligner.push(body, dm.chunks[c].records) {
                            let batch_size = app.config.stream_batch_size as u64;
                            write_records_lines(
                                &mut out,
                                dm.domain,
                                block.first_batch,
                                &block.ndjson,
                                batch_size,
                            );
                        }
                        (Bytes::from(out), Step::Chunk(d, c + 1))
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
        Some((out, (next, app, m, aligner)))
    })
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
    let query = PageQuery::parse(domain, offset, limit)?;
    let manifest = finished_manifest(app, principal, id).await?;
    let dm = match query.domain {
        Some(d) => manifest.domain(d).ok_or_else(|| TraceError::InvalidParameter {
            name: "domain",
            reason: format!("job {id} has no domain {d}"),
        })?,
        None => {
            manifest.domains.first().ok_or_else(|| TraceError::Internal("manifest has no domains".into()))?
        }
    };
    let records: Vec<u64> = dm.chunks.iter().map(|c| c.records).collect();
    let mut data = RenderedRecords::default();
    for slice in query.covering(&records, dm.records) {
        let body = read_chunk(app, &dm.chunks[slice.chunk]).await?;
        let (skip, take) = (slice.skip as usize, slice.take as usize);
        for record in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).skip(skip).take(take) {
            data.push(record);
        }
    }
    let (offset, limit) = (query.offset, query.limit);
    let capacity = data.byte_len() + 256;
    let (domain, total) = (dm.domain, dm.records);
    let page = DomainPage { count: data.count(), data, total, offset, limit: limit as u64 };
    let answer: ResultPage<RenderedRecords> = EventsAnswer::new(vec![(domain, page)], manifest.aggregation);
    answer
        .to_json(capacity)
        .map_err(|e| TraceError::Internal(format!("a result page of {id} is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::io::Read;
    use std::sync::Arc;
    use trace_core::{QueueKind, TraceRequest};

    /// An app over the embedded stand-ins (the reference dataset) with `vars`, and a finished job of
    /// `ids` containers over holds and history, stored in chunks of `chunk_records`.
    async fn finished_job(ids: u64, chunk_records: usize) -> (App, String) {
        let app = testing::app(&[("TRACE_CHUNK_RECORDS", &chunk_records.to_string())]).await;
        let ids: Vec<String> = (1..=ids).map(trace_dataset::container_id).collect();
        let body = serde_json::json!({ "container_ids": ids, "domains": ["holds", "history"] });
        let request = TraceRequest::parse(body.to_string().as_bytes(), usize::MAX).unwrap();
        let accepted =
            crate::submit::enqueue(&app, &Principal::local(), &request, QueueKind::Light).await.unwrap();
        let queue = app.backends.light.clone();
        let deliveries = queue
            .receive(1, std::time::Duration::from_secs(1), std::time::Duration::from_secs(30))
            .await
            .unwrap();
        let (_, shutdown) = tokio::sync::watch::channel(false);
        let disposition = crate::worker::handle_delivery(&app, &queue, &deliveries[0], shutdown, None).await;
        crate::worker::settle_message(queue.as_ref(), &deliveries[0], disposition).await;
        (app, accepted.job_id.to_string())
    }

    /// `app` with other stream settings.
    fn with(app: &App, vars: &[(&str, &str)]) -> App {
        let mut changed = app.clone();
        changed.config = Arc::new(testing::config(vars, &app.config.local_dir));
        changed
    }

    async fn body(app: &App, id: &str, accept: Option<&str>) -> Result<(u64, bool, Vec<u8>), TraceError> {
        let answer = stream(app, &Principal::local(), id, accept).await?;
        let pieces: Vec<Bytes> = answer.body.map(|p| p.unwrap()).collect().await;
        Ok((answer.bytes.unwrap(), answer.gzip, pieces.concat()))
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("one valid gzip member");
        out
    }

    fn stored(manifest: &Manifest) -> u64 {
        manifest.domains.iter().flat_map(|d| &d.chunks).map(|c| c.stored_bytes.unwrap_or(c.bytes)).sum()
    }

    #[tokio::test]
    async fn the_size_known_before_the_first_byte_is_the_size_streamed() {
        for (ids, chunk_records) in [(40, 100), (150, 1000), (150, 25_000)] {
            let (app, id) = finished_job(ids, chunk_records).await;
            for batch in ["1", "7", "50", "5000"] {
                let app = with(&app, &[("TRACE_STREAM_BATCH_SIZE", batch)]);
                let (bytes, gzip, plain) = body(&app, &id, Some("gzip")).await.unwrap();
                assert!(!gzip, "compression is off locally by default");
                assert_eq!(
                    bytes,
                    plain.len() as u64,
                    "{ids} ids, chunks of {chunk_records}, lines of {batch}"
                );
                let manifest = finished_manifest(&app, &Principal::local(), &id).await.unwrap();
                let last = String::from_utf8(plain).unwrap().lines().last().unwrap().to_owned();
                assert_eq!(
                    last,
                    format!("{{\"type\":\"complete\",\"total_records\":{}}}", manifest.total_records)
                );
            }
        }
    }

    /// gzip when accepted: the same lines, one member; its size against the stored chunks' (the figure
    /// behind `GZIP_OVER_STORED`) is printed.
    #[tokio::test]
    async fn gzip_when_accepted_decodes_to_the_plain_stream_within_the_estimate() {
        for (ids, chunk_records, batch) in [(300, 25_000, "5000"), (300, 1000, "500"), (300, 120, "50")] {
            let (app, id) = finished_job(ids, chunk_records).await;
            let plain_app = with(&app, &[("TRACE_STREAM_BATCH_SIZE", batch)]);
            let gzip_app =
                with(&app, &[("TRACE_STREAM_BATCH_SIZE", batch), ("TRACE_STREAM_COMPRESSION", "gzip")]);
            let (bytes, gzip, plain) = body(&plain_app, &id, Some("gzip")).await.unwrap();
            assert!(!gzip);
            for refused in [None, Some(""), Some("identity"), Some("gzip;q=0"), Some("br, deflate")] {
                let (_, gzip, same) = body(&gzip_app, &id, refused).await.unwrap();
                assert!(!gzip, "{refused:?}");
                assert_eq!(same, plain, "{refused:?}");
            }
            let (gz_bytes, gzip, compressed) =
                body(&gzip_app, &id, Some("deflate, gzip;q=0.8")).await.unwrap();
            assert!(gzip);
            assert_eq!(gz_bytes, bytes, "x-trace-stream-bytes is the plain size");
            assert_eq!(gunzip(&compressed), plain);
            let manifest = finished_manifest(&app, &Principal::local(), &id).await.unwrap();
            let estimate = stream_size::gzip_estimate(&manifest, batch.parse().unwrap());
            let stored = stored(&manifest);
            eprintln!(
                "chunks of {chunk_records}, lines of {batch}: plain {bytes}, gzip {} ({:.2}x), stored {stored}, gzip/stored {:.3}, estimate {estimate}",
                compressed.len(),
                bytes as f64 / compressed.len() as f64,
                compressed.len() as f64 / stored as f64
            );
            assert!(compressed.len() as u64 <= estimate, "the estimate is not below the real size");
            assert!(estimate < compressed.len() as u64 * 3 / 2, "and not far above it");
        }
    }

    #[tokio::test]
    async fn a_result_over_the_limit_is_refused_before_its_first_byte_unless_it_fits_compressed() {
        let (app, id) = finished_job(300, 1000).await;
        let (plain, _, _) = body(&app, &id, None).await.unwrap();
        let limit = (plain / 2).to_string();
        let gzip_app =
            with(&app, &[("TRACE_STREAM_MAX_BYTES", &limit), ("TRACE_STREAM_COMPRESSION", "gzip")]);
        // Without gzip: refused, with the sizes and the chunks route.
        for accept in [None, Some("identity")] {
            let Err(e) = body(&gzip_app, &id, accept).await else { panic!("over the limit: refused") };
            assert_eq!(
                e,
                TraceError::ResultTooLargeForStream {
                    job_id: id.clone(),
                    bytes: plain,
                    limit: plain / 2,
                    gzip_accepted: false
                }
            );
        }
        // It fits compressed: served gzip, under the limit.
        let (_, gzip, compressed) = body(&gzip_app, &id, Some("gzip")).await.unwrap();
        assert!(gzip && (compressed.len() as u64) <= plain / 2);
        assert_eq!(gunzip(&compressed).len() as u64, plain);
        // Compression off: refused even when gzip is accepted.
        let off = with(&app, &[("TRACE_STREAM_MAX_BYTES", &limit), ("TRACE_STREAM_COMPRESSION", "off")]);
        assert_eq!(body(&off, &id, Some("gzip")).await.unwrap_err().code(), "RESULT_TOO_LARGE_FOR_STREAM");
        // Too small even compressed.
        let tiny = with(&app, &[("TRACE_STREAM_MAX_BYTES", "2000"), ("TRACE_STREAM_COMPRESSION", "gzip")]);
        match body(&tiny, &id, Some("gzip")).await {
            Err(TraceError::ResultTooLargeForStream { gzip_accepted: true, limit: 2000, .. }) => {}
            other => panic!("{:?}", other.map(|(b, g, _)| (b, g))),
        }
        // Exactly the plain size: served plain.
        let exact = with(&app, &[("TRACE_STREAM_MAX_BYTES", &plain.to_string())]);
        assert_eq!(body(&exact, &id, None).await.unwrap().2.len() as u64, plain);
    }

    /// An estimate that was too low: the gzip stream ends with an `error` line of the code, under the
    /// limit, and is still one valid gzip member of whole lines.
    #[test]
    fn a_stream_that_would_pass_the_limit_ends_with_an_error_line() {
        let too_large =
            line(&StreamLine::Error { code: "RESULT_TOO_LARGE_FOR_STREAM".into(), message: "m".into() });
        let limit = 6_000;
        let mut sender = Sender {
            gzip: Some(GzipPieces::default()),
            limit: Some(limit),
            sent: 0,
            too_large,
            job_id: "j".into(),
        };
        let mut sent = Vec::new();
        let mut expected = Vec::new();
        let mut ended = false;
        for i in 0..1000 {
            // Hardly compressible lines, so the bytes grow fast.
            let piece = format!("{{\"n\":{i},\"x\":\"{}\"}}\n", uuid::Uuid::new_v4());
            let (out, end) = sender.send(Bytes::from(piece.clone()));
            sent.extend_from_slice(&out);
            if end {
                ended = true;
                break;
            }
            expected.extend_from_slice(piece.as_bytes());
        }
        assert!(ended, "the limit was reached");
        assert!(sent.len() as u64 <= limit, "{} bytes sent over a limit of {limit}", sent.len());
        let text = String::from_utf8(gunzip(&sent)).unwrap();
        let (before, last) = text.trim_end().rsplit_once('\n').unwrap();
        assert_eq!(format!("{before}\n").as_bytes(), &expected[..]);
        let last: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(
            (last["type"].as_str(), last["code"].as_str()),
            (Some("error"), Some("RESULT_TOO_LARGE_FOR_STREAM"))
        );
    }

    /// Offsets at and past the end, up to `u64::MAX` (and beyond it), answer an empty page or a clear
    /// error; never a panic or an overflow.
    #[tokio::test]
    async fn hostile_offsets_answer_an_empty_page_or_a_clear_error() {
        let (app, id) = finished_job(40, 7).await;
        let page_of = |offset: &str, limit: &str| {
            let (app, id, offset, limit) = (app.clone(), id.clone(), offset.to_owned(), limit.to_owned());
            async move { page(&app, &Principal::local(), &id, Some("history"), Some(&offset), Some(&limit)).await }
        };
        let total = {
            let answer: serde_json::Value =
                serde_json::from_slice(&page_of("0", "5000").await.unwrap()).unwrap();
            answer["results"]["history"]["total"].as_u64().unwrap()
        };
        assert!(total > 7, "the domain spans several chunks");
        for offset in [total, total + 1, u64::MAX - 1, u64::MAX] {
            for limit in ["1", "5000"] {
                let answer: serde_json::Value =
                    serde_json::from_slice(&page_of(&offset.to_string(), limit).await.unwrap()).unwrap();
                let page = &answer["results"]["history"];
                assert_eq!(page["count"], 0, "offset {offset}, limit {limit}");
                assert_eq!(page["offset"].as_u64(), Some(offset));
                assert_eq!(page["total"].as_u64(), Some(total));
            }
        }
        // The last record, read from just before the end with the largest limit.
        let answer: serde_json::Value =
            serde_json::from_slice(&page_of(&(total - 1).to_string(), "5000").await.unwrap()).unwrap();
        assert_eq!(answer["results"]["history"]["count"], 1);
        for bad in ["18446744073709551616", "-1", "1e3", "0x10", " 1"] {
            let e = page_of(bad, "10").await.unwrap_err();
            assert_eq!(e.code(), "INVALID_PARAMETER", "{bad:?}");
        }
    }

    #[test]
    fn the_plan() {
        // Unlimited: always served, gzip when accepted.
        assert_eq!(plan(10, 2, false, None), Some(false));
        assert_eq!(plan(10, 2, true, None), Some(true));
        assert_eq!(plan(10, 2, true, Some(10)), Some(true));
        assert_eq!(plan(10, 2, false, Some(10)), Some(false));
        assert_eq!(plan(10_000, 2_000, false, Some(5_000)), None);
        assert_eq!(plan(10_000, 2_000, true, Some(5_000)), Some(true));
        assert_eq!(plan(10_000, 4_500, true, Some(5_000)), None, "the end's reserve counts");
    }
}
