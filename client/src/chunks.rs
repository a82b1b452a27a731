//! Reading a finished job's result through its chunk URLs (`GET /api/trace/job/{id}/chunks`).
//!
//! The list gives, per domain in result order, each stored chunk's URL (a presigned object-store GET,
//! or a path of the API for stores without URLs), its sizes and CRC-32. The reader fetches up to
//! `parallel` chunks at once (each in its own task, so decoding and parsing use every core), checks
//! each with [`ChunkEntry::decode`](trace_core::layout::ChunkEntry::decode) (stored size, gzip, size
//! and CRC-32 of the NDJSON) and delivers the chunks in order, between the `meta`, `domain_start`,
//! `domain_end`, `aggregation` and `complete` lines the stream route sends. Two ways to take them:
//!
//! - [`Client::read_chunk_pieces`]: the chunks re-cut into blocks of whole lines
//!   ([`LineAligner`], as the stream route does: a line holds `stream_batch_size` records wherever the
//!   chunks end), each a [`RecordsBlock`], its NDJSON unparsed, which writes the stream's own
//!   `records` lines ([`RecordsBlock::write_lines`], the rule of [`write_records_lines`]) byte for
//!   byte, or hands out the records as they are stored. Nothing is parsed: the reader goes at the speed of gzip and the
//!   network (the benchmark's end-to-end read, `trace stream` to NDJSON);
//! - [`Client::read_chunks`] / [`Client::read_chunk_list`]: the same as typed [`StreamLine`]s, line
//!   for line (each block parsed in its reading task, so parsing uses every core).
//!
//! A chunk whose fetch fails (connection, 5xx, a short or corrupt body) is fetched again, after a
//! growing pause, up to [`ClientConfig::chunk_attempts`](crate::ClientConfig::chunk_attempts) times;
//! a refused URL (403: expired) makes the reader read the list again from that chunk on and go on
//! with the fresh URLs. Presigned URLs are fetched without the client's credentials and without
//! decompression (reqwest is built without its `gzip` feature), so the checks see the stored bytes.
//! At most `parallel` chunks are held at a time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use trace_core::api::{ChunkLink, ChunkList};
use trace_core::ndjson::{chunk_lines, write_records_lines, AlignedBlock, LineAligner, StreamLine};
use trace_core::{Domain, JobId};

use crate::stream::{LineStream, Resume};
use crate::{http_error, Client, ClientError, Part};

/// One stored chunk, read and checked: its records as stored (NDJSON, one record per line), not
/// parsed.
#[derive(Debug, Clone)]
pub struct RecordsBlock {
    /// Its domain.
    pub domain: Domain,
    /// Its position in the domain.
    pub index: u64,
    /// The number of its first `records` line in the domain's stream.
    pub first_batch: u64,
    /// Records in it.
    pub records: u64,
    /// The records, one JSON object per line.
    pub ndjson: Bytes,
    batch_size: u64,
}

impl RecordsBlock {
    /// Appends the block's `records` lines exactly as the stream route sends them. Returns the lines
    /// written.
    pub fn write_lines(&self, out: &mut Vec<u8>) -> u64 {
        write_records_lines(out, self.domain, self.first_batch, &self.ndjson, self.batch_size).1
    }

    /// The block's `records` lines, typed.
    pub fn lines(&self) -> Result<Vec<StreamLine>, ClientError> {
        let mut out = Vec::with_capacity(self.ndjson.len() + 256);
        let count = self.write_lines(&mut out);
        let mut lines = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            lines.push(serde_json::from_slice(line).map_err(|e| ClientError::ChunkFailed {
                domain: self.domain,
                index: self.index,
                attempts: 1,
                reason: format!("a record is not JSON: {e}"),
            })?);
        }
        Ok(lines)
    }
}

/// What [`Client::read_chunk_pieces`] delivers, in the stream's order.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A line other than `records`.
    Line(StreamLine),
    /// One chunk's records: the `records` lines of the stream it stands for.
    Records(RecordsBlock),
}

/// The pieces of a result read through its chunk URLs ([`Client::read_chunk_pieces`]).
pub struct PieceStream {
    inner: futures::stream::BoxStream<'static, Result<Piece, ClientError>>,
    resumes: Arc<AtomicU32>,
}

impl PieceStream {
    /// How many chunk fetches were made again so far.
    pub fn resumes(&self) -> u32 {
        self.resumes.load(Ordering::Relaxed)
    }
}

impl futures::Stream for PieceStream {
    type Item = Result<Piece, ClientError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for PieceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PieceStream").field("resumes", &self.resumes()).finish()
    }
}

/// Chunks fetched at once by default.
pub const DEFAULT_PARALLEL: usize = 4;

/// Why one fetch of a chunk failed.
enum Failure {
    /// Worth another attempt (connection, 5xx, a bad body).
    Retry(String),
    /// The URL was refused (expired): read the list again, then try again.
    Refused(String),
    /// Not worth another attempt.
    Fatal(ClientError),
}

/// Where each listed chunk is, by its position over all domains, and which reading of the list the
/// URLs come from.
struct Links {
    generation: u64,
    links: Vec<ChunkLink>,
}

/// Told of every chunk fetched again.
type OnResume = Box<dyn FnMut(&Resume) + Send>;

/// What the tasks of one read share.
struct Shared {
    client: Client,
    job: JobId,
    batch_size: u64,
    links: tokio::sync::Mutex<Links>,
    resumes: Arc<AtomicU32>,
    on_resume: Mutex<OnResume>,
}

/// One chunk to read: its domain, position in the domain, position over all domains, first batch
/// number and the domain's records before it.
#[derive(Debug, Clone, Copy)]
struct Task {
    domain: Domain,
    index: u64,
    ordinal: usize,
    first_batch: u64,
    offset: u64,
}

/// What the reader delivers in order: a ready line, or a chunk once read.
enum Planned {
    Line(StreamLine),
    Chunk(Task),
}

impl Client {
    /// `GET /api/trace/job/{id}/chunks?from=`: one answer of the chunk list (chunks from position
    /// `from` over all domains, as many as fit the answer).
    pub async fn chunks_from(&self, job: &JobId, from: u64) -> Result<ChunkList, ClientError> {
        let path = if from == 0 {
            format!("/api/trace/job/{job}/chunks")
        } else {
            format!("/api/trace/job/{job}/chunks?from={from}")
        };
        self.json(Part::Stream, reqwest::Method::GET, &path).await
    }

    /// The whole chunk list of a finished job: every answer of `GET /api/trace/job/{id}/chunks`
    /// joined (`next_from` None).
    pub async fn chunks(&self, job: &JobId) -> Result<ChunkList, ClientError> {
        let mut list = self.chunks_from(job, 0).await?;
        let listed = |l: &ChunkList| l.domains.iter().map(|d| d.chunks.len() as u64).sum::<u64>();
        while let Some(from) = list.next_from {
            let url = format!("chunk list of job {job} from {from}");
            if from != list.from + listed(&list) {
                return Err(ClientError::InvalidResponse { url, reason: "next_from skips chunks".into() });
            }
            let more = self.chunks_from(job, from).await?;
            if more.domains.len() != list.domains.len()
                || more.domains.iter().zip(&list.domains).any(|(a, b)| a.domain != b.domain)
            {
                return Err(ClientError::InvalidResponse { url, reason: "the domains changed".into() });
            }
            for (mine, theirs) in list.domains.iter_mut().zip(more.domains) {
                mine.chunks.extend(theirs.chunks);
            }
            list.next_from = more.next_from;
        }
        if listed(&list) + list.from != list.chunks_total {
            return Err(ClientError::InvalidResponse {
                url: format!("chunk list of job {job}"),
                reason: format!("{} chunks listed of {}", listed(&list), list.chunks_total),
            });
        }
        Ok(list)
    }

    /// The job's result as the stream's lines, read through its chunk URLs with `parallel` chunks
    /// at once (see the [module](self)).
    pub fn read_chunks(&self, job: &JobId, parallel: usize) -> LineStream {
        let client = self.clone();
        let job = *job;
        let resumes = Arc::new(AtomicU32::new(0));
        let counter = resumes.clone();
        let inner = stream::once(async move {
            match client.chunks(&job).await {
                Ok(list) => typed(pieces(client, list, parallel, counter, Box::new(|_: &Resume| {}))),
                Err(e) => stream::iter([Err(e)]).boxed(),
            }
        })
        .flatten()
        .boxed();
        LineStream::new(inner, resumes)
    }

    /// The lines of the result `list` describes (from [`chunks`](Self::chunks)), read with
    /// `parallel` chunks at once; `on_resume` is told of every chunk fetched again.
    pub fn read_chunk_list(
        &self,
        list: ChunkList,
        parallel: usize,
        on_resume: impl FnMut(&Resume) + Send + 'static,
    ) -> LineStream {
        let resumes = Arc::new(AtomicU32::new(0));
        let inner = typed(pieces(self.clone(), list, parallel, resumes.clone(), Box::new(on_resume)));
        LineStream::new(inner, resumes)
    }

    /// The result `list` describes (from [`chunks`](Self::chunks)) as [`Piece`]s, the chunks
    /// unparsed, read with `parallel` chunks at once; `on_resume` is told of every chunk fetched
    /// again.
    pub fn read_chunk_pieces(
        &self,
        list: ChunkList,
        parallel: usize,
        on_resume: impl FnMut(&Resume) + Send + 'static,
    ) -> PieceStream {
        let resumes = Arc::new(AtomicU32::new(0));
        let inner = pieces(self.clone(), list, parallel, resumes.clone(), Box::new(on_resume));
        PieceStream { inner, resumes }
    }

    /// The stored bytes at a chunk URL: a presigned one without credentials, a path of this API
    /// with them.
    async fn fetch_chunk(&self, url: &str) -> Result<Bytes, Failure> {
        let response = if url.starts_with('/') {
            let url = self.url(Part::Stream, url);
            match self.send(&url, Some(self.config.request_timeout), |h| h.get(&url)).await {
                Ok(r) => r,
                Err(e @ (ClientError::Transport { .. } | ClientError::Http { status: 500.., .. })) => {
                    return Err(Failure::Retry(e.to_string()))
                }
                Err(e) => return Err(Failure::Fatal(e)),
            }
        } else {
            let sent = self.http.get(url).timeout(self.config.request_timeout).send().await;
            let response = sent.map_err(|e| Failure::Retry(format!("GET of the chunk URL failed: {e}")))?;
            let status = response.status().as_u16();
            match status {
                200..=299 => response,
                403 => {
                    let text = response.text().await.unwrap_or_default();
                    return Err(Failure::Refused(format!(
                        "the chunk URL was refused (HTTP 403: {})",
                        text.chars().take(200).collect::<String>()
                    )));
                }
                500.. | 408 | 429 => {
                    return Err(Failure::Retry(format!("the chunk URL answered HTTP {status}")))
                }
                _ => return Err(Failure::Fatal(http_error(strip_query(url), response).await)),
            }
        };
        response.bytes().await.map_err(|e| Failure::Retry(format!("reading the chunk failed: {e}")))
    }
}

/// A URL without its query (a presigned URL's signature is a credential: not for messages).
fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Pieces as typed lines: each block parsed in a task of its own, several at once.
fn typed(
    pieces: futures::stream::BoxStream<'static, Result<Piece, ClientError>>,
) -> futures::stream::BoxStream<'static, Result<StreamLine, ClientError>> {
    pieces
        .map(|piece| async move {
            match piece? {
                Piece::Line(line) => Ok(vec![line]),
                Piece::Records(block) => {
                    let (domain, index) = (block.domain, block.index);
                    match tokio::task::spawn_blocking(move || block.lines()).await {
                        Ok(lines) => lines,
                        Err(e) => Err(ClientError::ChunkFailed {
                            domain,
                            index,
                            attempts: 0,
                            reason: format!("the parsing task failed: {e}"),
                        }),
                    }
                }
            }
        })
        .buffered(2)
        .flat_map(|item| match item {
            Ok(lines) => stream::iter(lines.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        })
        .boxed()
}

/// The pieces of `list`, the chunks read by tasks, `parallel` at once, delivered in order.
fn pieces(
    client: Client,
    list: ChunkList,
    parallel: usize,
    resumes: Arc<AtomicU32>,
    on_resume: OnResume,
) -> futures::stream::BoxStream<'static, Result<Piece, ClientError>> {
    let batch_size = list.stream_batch_size.max(1);
    let mut parts = vec![Planned::Line(StreamLine::Meta {
        job_id: list.job_id,
        profile: list.profile,
        domains: list.domains.iter().map(|d| d.domain).collect(),
    })];
    let mut links = Vec::new();
    for d in &list.domains {
        parts.push(Planned::Line(StreamLine::DomainStart { domain: d.domain, total: d.records }));
        let (mut first_batch, mut offset) = (0, 0);
        for link in &d.chunks {
            let task =
                Task { domain: d.domain, index: link.index, ordinal: links.len(), first_batch, offset };
            parts.push(Planned::Chunk(task));
            first_batch += chunk_lines(link.records, batch_size);
            offset += link.records;
            links.push(link.clone());
        }
        parts.push(Planned::Line(StreamLine::DomainEnd { domain: d.domain, count: d.records }));
    }
    if let Some(data) = list.aggregation.clone() {
        parts.push(Planned::Line(StreamLine::Aggregation { data }));
    }
    parts.push(Planned::Line(StreamLine::Complete { total_records: list.total_records }));

    let shared = Arc::new(Shared {
        client,
        job: list.job_id,
        batch_size,
        links: tokio::sync::Mutex::new(Links { generation: 0, links }),
        resumes,
        on_resume: Mutex::new(on_resume),
    });
    stream::iter(parts)
        .map(move |part| {
            let shared = shared.clone();
            async move {
                match part {
                    Planned::Line(line) => Ok(Piece::Line(line)),
                    // Its own task: fetch, decode and check on any core.
                    Planned::Chunk(task) => match tokio::spawn(read_chunk(shared, task)).await {
                        Ok(block) => block.map(Piece::Records),
                        Err(e) => Err(ClientError::ChunkFailed {
                            domain: task.domain,
                            index: task.index,
                            attempts: 0,
                            reason: format!("the reading task failed: {e}"),
                        }),
                    },
                }
            }
        })
        .buffered(parallel.max(1))
        // Stop at the first error.
        .scan(false, |failed, item| {
            let out = if *failed { None } else { Some(item) };
            *failed = matches!(out, Some(Err(_)));
            futures::future::ready(out)
        })
        // Blocks of whole lines, wherever the chunks end (the stream route's rule: `LineAligner`).
        .scan(LineAligner::new(batch_size), move |aligner, item| {
            let out: Vec<Result<Piece, ClientError>> = match item {
                Ok(Piece::Records(block)) => aligner
                    .push(block.ndjson.clone(), block.records)
                    .map(|b| Ok(Piece::Records(aligned(&block, b, batch_size))))
                    .into_iter()
                    .collect(),
                Ok(Piece::Line(line @ StreamLine::DomainEnd { domain, .. })) => {
                    let last = aligner.finish().map(|b| {
                        let block = RecordsBlock {
                            domain,
                            index: 0,
                            first_batch: 0,
                            records: 0,
                            ndjson: Bytes::new(),
                            batch_size,
                        };
                        Ok(Piece::Records(aligned(&block, b, batch_size)))
                    });
                    *aligner = LineAligner::new(batch_size);
                    last.into_iter().chain([Ok(Piece::Line(line))]).collect()
                }
                other => vec![other],
            };
            futures::future::ready(Some(stream::iter(out)))
        })
        .flatten()
        .boxed()
}

/// The block of whole lines `b` cut from the chunk `block` (and those before it).
fn aligned(block: &RecordsBlock, b: AlignedBlock, batch_size: u64) -> RecordsBlock {
    RecordsBlock {
        domain: block.domain,
        index: block.index,
        first_batch: b.first_batch,
        records: b.records,
        ndjson: b.ndjson,
        batch_size,
    }
}

/// One chunk read and checked, with retries.
async fn read_chunk(shared: Arc<Shared>, task: Task) -> Result<RecordsBlock, ClientError> {
    let max = shared.client.config.chunk_attempts.max(1);
    let failed = |attempts, reason| ClientError::ChunkFailed {
        domain: task.domain,
        index: task.index,
        attempts,
        reason,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (generation, link) = {
            let links = shared.links.lock().await;
            (links.generation, links.links[task.ordinal].clone())
        };
        let reason = match shared.client.fetch_chunk(&link.url).await {
            Ok(stored) => match link.entry().decode(stored) {
                Ok(ndjson) => return block(&shared, task, &link, ndjson),
                Err(corrupt) => format!("{}: {}", strip_query(&link.url), corrupt.reason),
            },
            Err(Failure::Fatal(e)) => return Err(failed(attempt, e.to_string())),
            Err(Failure::Retry(reason)) => reason,
            Err(Failure::Refused(reason)) => match refresh(&shared, generation, task.ordinal).await {
                Ok(()) => reason,
                Err(e) => format!("{reason}; reading the chunk list again failed: {e}"),
            },
        };
        if attempt >= max {
            return Err(failed(attempt, reason));
        }
        let resume =
            Resume { attempt, domain: Some(task.domain), offset: task.offset, reason: reason.clone() };
        shared.resumes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut notify) = shared.on_resume.lock() {
            notify(&resume);
        }
        tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
    }
}

/// Reads the list again from chunk `ordinal` on, unless another task has since (`seen` is the
/// generation of the URL that was refused), and keeps its URLs.
async fn refresh(shared: &Shared, seen: u64, ordinal: usize) -> Result<(), ClientError> {
    let mut links = shared.links.lock().await;
    if links.generation != seen {
        return Ok(());
    }
    let fresh = shared.client.chunks_from(&shared.job, ordinal as u64).await?;
    for (at, link) in (ordinal..).zip(fresh.domains.into_iter().flat_map(|d| d.chunks)) {
        let Some(old) = links.links.get_mut(at) else { break };
        if (old.index, old.records, old.crc32) != (link.index, link.records, link.crc32) {
            return Err(ClientError::InvalidResponse {
                url: format!("chunk list of job {} from {ordinal}", shared.job),
                reason: "the chunks changed".into(),
            });
        }
        *old = link;
    }
    links.generation += 1;
    Ok(())
}

/// A checked chunk's NDJSON as a block, its records counted against the list.
fn block(shared: &Shared, task: Task, link: &ChunkLink, ndjson: Bytes) -> Result<RecordsBlock, ClientError> {
    let body = ndjson.strip_suffix(b"\n").unwrap_or(&ndjson);
    let records = if body.is_empty() { 0 } else { body.iter().filter(|b| **b == b'\n').count() as u64 + 1 };
    if records != link.records {
        return Err(ClientError::ChunkFailed {
            domain: task.domain,
            index: task.index,
            attempts: 1,
            reason: format!("{records} records, {} listed", link.records),
        });
    }
    Ok(RecordsBlock {
        domain: task.domain,
        index: task.index,
        first_batch: task.first_batch,
        records,
        ndjson,
        batch_size: shared.batch_size,
    })
}
