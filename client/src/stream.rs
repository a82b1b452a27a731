//! The resumable NDJSON stream consumer.
//!
//! Lines are parsed one by one from the body as it arrives ([`LineReader`], bounded). The consumer
//! keeps track of where it is (the job's domains from `meta`, the domain in progress, the records of
//! it received in complete `records` lines, the next batch number). When the body ends or fails
//! before `complete`, it resumes:
//!
//! - before `meta` (nothing delivered yet) it opens the stream again;
//! - after it, it reads the rest from `GET …/result?domain=&offset=&limit=`: the domain in progress
//!   from `offset` = its records already delivered, then every remaining domain page by page, and
//!   delivers them as the same lines the stream would have sent (`domain_start`, `records` with the
//!   next batch numbers, `domain_end`, `aggregation`, `complete`), so the caller sees no gap, no
//!   duplicate and no difference.
//!
//! A line that is not JSON of a known type is a [`ClientError::MalformedLine`] (no resumption: the
//! server is sending something wrong); an `error` line is a [`ClientError::StreamError`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;
use trace_core::ndjson::StreamLine;
use trace_core::{Domain, JobId};

use crate::lines::{LineReader, ReadError};
use crate::pages::{closing_lines, DomainPages};
use crate::{Client, ClientError};

/// Where an interrupted stream was resumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// 1 for the first resumption of this stream, and so on.
    pub attempt: u32,
    /// The domain the next records come from (None when the stream is opened again from the start,
    /// or only `aggregation` / `complete` were missing).
    pub domain: Option<Domain>,
    /// Records of that domain already delivered (the page offset it continues from).
    pub offset: u64,
    /// Why.
    pub reason: String,
}

/// The typed lines of a job's stream ([`Client::stream`]).
pub struct LineStream {
    inner: BoxStream<'static, Result<StreamLine, ClientError>>,
    resumes: Arc<AtomicU32>,
}

impl LineStream {
    pub(crate) fn new(
        inner: BoxStream<'static, Result<StreamLine, ClientError>>,
        resumes: Arc<AtomicU32>,
    ) -> Self {
        LineStream { inner, resumes }
    }

    /// How many times this stream has been resumed so far.
    pub fn resumes(&self) -> u32 {
        self.resumes.load(Ordering::Relaxed)
    }
}

impl Stream for LineStream {
    type Item = Result<StreamLine, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for LineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineStream").field("resumes", &self.resumes()).finish()
    }
}

type Body = BoxStream<'static, Result<Bytes, reqwest::Error>>;

enum Mode {
    /// (Re)open the stream.
    Open,
    /// Reading the stream.
    Live(LineReader<Body>),
    /// Reading pages: the domain in progress (None: the next one of `meta`, or the closing lines
    /// once every domain is delivered).
    Paging(Option<DomainPages>),
    /// Finished (or failed).
    Done,
}

struct State {
    client: Client,
    job: JobId,
    mode: Mode,
    /// Lines to deliver before anything else.
    pending: VecDeque<StreamLine>,
    /// From `meta`: the domains in stream order (None before `meta`).
    domains: Option<Vec<Domain>>,
    /// Domains whose `domain_end` was delivered.
    domains_done: usize,
    /// The domain between its `domain_start` and `domain_end`, with its total.
    open_domain: Option<(Domain, u64)>,
    /// The domain of the last `domain_start` and its records delivered.
    last_domain: Option<Domain>,
    domain_records: u64,
    next_batch: u64,
    aggregation_done: bool,
    /// The aggregation as read from a page (all pages carry it).
    page_aggregation: Option<Option<Value>>,
    total_records: u64,
    attempts: u32,
    resumes: Arc<AtomicU32>,
    on_resume: Box<dyn FnMut(&Resume) + Send>,
    /// Following a running job (`?follow=true`): a break opens the followed stream again and skips the
    /// lines already delivered (its lines are the same every time), instead of reading pages.
    follow: bool,
    /// Lines delivered from the live stream.
    delivered: u64,
    /// Lines of the stream opened again still to skip.
    skip: u64,
    /// CRC-32 of the lines delivered from the live stream, and of the lines skipped since it was
    /// opened again: once the skipping ends they must be equal (the same lines), else the result
    /// changed under the follow and the stream ends with `RESULT_CHANGED`.
    delivered_crc: crc32fast::Hasher,
    skipped_crc: crc32fast::Hasher,
    /// A followed stream's `meta`, held until the next line: a job that fails before its first
    /// domain starts prints nothing.
    held: Option<StreamLine>,
}

pub(crate) fn open(
    client: Client,
    job: JobId,
    follow: bool,
    on_resume: Box<dyn FnMut(&Resume) + Send>,
) -> LineStream {
    let resumes = Arc::new(AtomicU32::new(0));
    let state = State {
        client,
        job,
        mode: Mode::Open,
        pending: VecDeque::new(),
        domains: None,
        domains_done: 0,
        open_domain: None,
        last_domain: None,
        domain_records: 0,
        next_batch: 0,
        aggregation_done: false,
        page_aggregation: None,
        total_records: 0,
        attempts: 0,
        resumes: resumes.clone(),
        on_resume,
        follow,
        delivered: 0,
        skip: 0,
        delivered_crc: crc32fast::Hasher::new(),
        skipped_crc: crc32fast::Hasher::new(),
        held: None,
    };
    let inner = futures::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
    .boxed();
    LineStream { inner, resumes }
}

/// Whether a line is an `error` line (read without parsing its other fields).
fn is_error_line(line: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Kind>(line).is_ok_and(|k| k.kind == "error")
}

fn snippet(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned()
}

/// What one step produced: a line to deliver, or nothing yet (the next step goes on).
type Step = Result<Option<StreamLine>, ClientError>;

impl State {
    /// The next line: pending lines first, then one step of the current mode after another.
    async fn next(&mut self) -> Option<Result<StreamLine, ClientError>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(Ok(line));
            }
            let step = match std::mem::replace(&mut self.mode, Mode::Done) {
                Mode::Done => return None,
                Mode::Open => self.open_step().await,
                Mode::Live(reader) => self.live_step(reader).await,
                Mode::Paging(pages) => self.page_step(pages).await.map(|()| None),
            };
            if let Some(item) = step.transpose() {
                return Some(item);
            }
        }
    }

    /// Opens the stream (again).
    async fn open_step(&mut self) -> Step {
        match self.client.open_stream(&self.job, self.follow).await {
            Ok(response) => {
                let body: Body = response.bytes_stream().boxed();
                self.mode = Mode::Live(LineReader::new(body, self.client.config.max_line_bytes));
                Ok(None)
            }
            Err(e @ ClientError::Transport { .. }) => self.interrupted(e.to_string()).await.map(|()| None),
            Err(e) => Err(e),
        }
    }

    /// Reads the next live line; an interruption plans the resumption.
    async fn live_step(&mut self, mut reader: LineReader<Body>) -> Step {
        let reason = match reader.next_line().await {
            // An `error` line where delivered lines were (a follow time limit at once, a failure):
            // handled as any live line.
            Ok(Some(bytes)) if self.skip > 0 && !is_error_line(&bytes) => {
                self.skipped_crc.update(&bytes);
                self.skip -= 1;
                if self.skip == 0 {
                    let skipped = std::mem::take(&mut self.skipped_crc).finalize();
                    if skipped != self.delivered_crc.clone().finalize() {
                        self.mode = Mode::Done;
                        return Err(ClientError::StreamError {
                            code: "RESULT_CHANGED".to_owned(),
                            message: format!(
                                "job {}: the followed stream, opened again, differs from the {} lines already delivered; read it again when it has finished",
                                self.job, self.delivered
                            ),
                        });
                    }
                }
                self.mode = Mode::Live(reader);
                return Ok(None);
            }
            Ok(Some(bytes)) => return self.live_line(reader, &bytes),
            Ok(None) => "the stream ended before its complete line".to_owned(),
            Err(ReadError::Truncated { bytes }) => {
                format!("the stream ended inside line {} ({bytes} bytes)", reader.line_no() + 1)
            }
            Err(ReadError::Body(e)) => format!("reading the stream failed: {e}"),
            Err(ReadError::TooLong { line_no, limit, head }) => {
                return Err(ClientError::MalformedLine {
                    line_no,
                    reason: format!("longer than the limit of {limit} bytes"),
                    snippet: snippet(&head),
                })
            }
        };
        self.interrupted(reason).await.map(|()| None)
    }

    /// Parses and checks one live line; the stream goes on after it unless it is the last.
    fn live_line(&mut self, reader: LineReader<Body>, bytes: &[u8]) -> Step {
        let malformed = |reason: String| ClientError::MalformedLine {
            line_no: reader.line_no(),
            reason,
            snippet: snippet(bytes),
        };
        let line = serde_json::from_slice::<StreamLine>(bytes).map_err(|e| malformed(e.to_string()))?;
        if let StreamLine::Error { code, .. } = &line {
            if self.follow && code == "FOLLOW_TIME_LIMIT" {
                // The server's time for one follow is up: follow again, past what was delivered.
                self.skip = self.delivered;
                self.skipped_crc = crc32fast::Hasher::new();
                self.mode = Mode::Open;
                return Ok(None);
            }
        }
        self.observe(&line).map_err(malformed)?;
        self.delivered += 1;
        self.delivered_crc.update(bytes);
        if self.follow {
            // A line past the break: the next break counts from its first resumption again.
            self.attempts = 0;
        }
        match line {
            StreamLine::Error { code, message } => return Err(ClientError::StreamError { code, message }),
            StreamLine::Complete { .. } => {}
            _ => self.mode = Mode::Live(reader),
        }
        if self.follow {
            if let StreamLine::Meta { .. } = line {
                self.held = Some(line);
                return Ok(None);
            }
            if let Some(meta) = self.held.take() {
                self.pending.push_back(line);
                return Ok(Some(meta));
            }
        }
        Ok(Some(line))
    }

    /// Updates the position after a line (live or from pages); an error for a line that
    /// contradicts the sequence.
    fn observe(&mut self, line: &StreamLine) -> Result<(), String> {
        match line {
            StreamLine::Meta { domains, .. } => {
                if self.domains.is_some() {
                    return Err("a second meta line".into());
                }
                self.domains = Some(domains.clone());
            }
            StreamLine::DomainStart { domain, total } => {
                self.open_domain = Some((*domain, *total));
                self.last_domain = Some(*domain);
                self.domain_records = 0;
                self.next_batch = 0;
            }
            StreamLine::Records { domain, batch, count, data } => {
                if self.open_domain.map(|(d, _)| d) != Some(*domain) {
                    return Err(format!("records of {domain} outside its domain_start/domain_end"));
                }
                if *count != data.len() as u64 {
                    return Err(format!("count {count} but {} records", data.len()));
                }
                self.domain_records += *count;
                self.total_records += *count;
                self.next_batch = batch + 1;
            }
            StreamLine::DomainEnd { .. } => {
                self.open_domain = None;
                self.domains_done += 1;
            }
            StreamLine::Aggregation { .. } => self.aggregation_done = true,
            StreamLine::Warning { .. } | StreamLine::Error { .. } | StreamLine::Complete { .. } => {}
        }
        Ok(())
    }

    /// The live stream broke: plan the resumption (or give up).
    async fn interrupted(&mut self, reason: String) -> Result<(), ClientError> {
        if self.attempts >= self.client.config.max_resumes {
            self.mode = Mode::Done;
            return Err(ClientError::StreamInterrupted {
                after_domain: self.last_domain,
                after_records: self.domain_records,
                reason,
            });
        }
        self.attempts += 1;
        self.resumes.fetch_add(1, Ordering::Relaxed);
        let resume = match &self.domains {
            _ if self.follow => {
                // The followed stream again, past the lines already delivered.
                tokio::time::sleep(Duration::from_millis(200 * u64::from(self.attempts))).await;
                self.skip = self.delivered;
                self.skipped_crc = crc32fast::Hasher::new();
                self.mode = Mode::Open;
                Resume { attempt: self.attempts, domain: None, offset: self.delivered, reason }
            }
            None => {
                // Nothing delivered yet: open the stream again, after a short pause.
                tokio::time::sleep(Duration::from_millis(200 * u64::from(self.attempts))).await;
                self.mode = Mode::Open;
                Resume { attempt: self.attempts, domain: None, offset: 0, reason }
            }
            Some(domains) => {
                let pages = self.open_domain_pages(domains)?;
                let resume = Resume {
                    attempt: self.attempts,
                    domain: domains.get(self.domains_done).copied(),
                    offset: pages.as_ref().map_or(0, DomainPages::offset),
                    reason,
                };
                self.mode = Mode::Paging(pages);
                resume
            }
        };
        (self.on_resume)(&resume);
        Ok(())
    }

    /// The rest of the domain in progress, checked to be the next one of `domains` (None between
    /// two domains).
    fn open_domain_pages(&self, domains: &[Domain]) -> Result<Option<DomainPages>, ClientError> {
        let Some((open, total)) = self.open_domain else { return Ok(None) };
        if domains.get(self.domains_done) != Some(&open) {
            return Err(ClientError::StreamInterrupted {
                after_domain: Some(open),
                after_records: self.domain_records,
                reason: format!("the stream's domains are out of the order its meta line announced ({open})"),
            });
        }
        Ok(Some(DomainPages::resume(open, self.domain_records, self.next_batch, total)))
    }

    /// One step of paging: a page of the domain in progress, or the closing lines.
    async fn page_step(&mut self, pages: Option<DomainPages>) -> Result<(), ClientError> {
        let next = self.domains.as_ref().and_then(|d| d.get(self.domains_done)).copied();
        let mut pages = match (pages, next) {
            (Some(pages), _) => pages,
            (None, Some(domain)) => DomainPages::new(domain, 0),
            (None, None) => return self.close_from_pages().await,
        };
        if pages.is_complete() {
            // Everything of the domain was delivered but not its domain_end.
            self.mode = Mode::Paging(None);
            return self.deliver(vec![pages.end()]);
        }
        let limit = self.client.config.page_limit;
        let mut page = match self.client.page(&self.job, Some(pages.domain()), pages.offset(), limit).await {
            Ok(page) => page,
            Err(e @ ClientError::Transport { .. }) => return self.retry_page(Some(pages), e).await,
            Err(e) => return Err(e),
        };
        self.page_aggregation = Some(page.aggregation.take());
        let lines = pages.lines(page)?;
        self.mode = Mode::Paging((!pages.is_complete()).then_some(pages));
        self.deliver(lines)
    }

    /// All domains delivered: the aggregation (every page carries it) and complete.
    async fn close_from_pages(&mut self) -> Result<(), ClientError> {
        let mut aggregation = None;
        if !self.aggregation_done {
            aggregation = match self.page_aggregation.take() {
                Some(a) => a,
                None => {
                    let first = self.domains.as_ref().and_then(|d| d.first()).copied();
                    match self.client.page(&self.job, first, 0, 1).await {
                        Ok(page) => page.aggregation,
                        Err(e @ ClientError::Transport { .. }) => return self.retry_page(None, e).await,
                        Err(e) => return Err(e),
                    }
                }
            };
            self.aggregation_done = true;
        }
        self.deliver(closing_lines(aggregation, self.total_records))
    }

    /// Queues lines made from pages, keeping the position as for live lines.
    fn deliver(&mut self, lines: Vec<StreamLine>) -> Result<(), ClientError> {
        for line in lines {
            self.observe(&line).map_err(|reason| ClientError::InvalidResponse {
                url: format!("result pages of job {}", self.job),
                reason,
            })?;
            self.pending.push_back(line);
        }
        Ok(())
    }

    /// A page failed in transit: try it again while attempts remain.
    async fn retry_page(
        &mut self,
        pages: Option<DomainPages>,
        error: ClientError,
    ) -> Result<(), ClientError> {
        if self.attempts >= self.client.config.max_resumes {
            return Err(ClientError::StreamInterrupted {
                after_domain: self.last_domain,
                after_records: self.domain_records,
                reason: format!("resuming from result pages failed: {error}"),
            });
        }
        self.attempts += 1;
        tokio::time::sleep(Duration::from_millis(500 * u64::from(self.attempts))).await;
        self.mode = Mode::Paging(pages);
        Ok(())
    }
}
